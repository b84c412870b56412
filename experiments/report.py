"""(Re)build results/<name>/ from a finished study's Ray experiment folder.

    python experiments/report.py --name smoke [--storage-path ray_results] [--results-dir results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from petseg.errors import PetsegError
from petseg.report import analysis
from petseg.study.pets import seeds_study
from petseg.tune.config import load_config
from petseg.tune.runner import CONFIG_FILE, experiment_path, saved_data


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the study's name")
    parser.add_argument("--storage-path", default="ray_results", help="the study's Ray storage path")
    parser.add_argument("--results-dir", help="where results/<name>/ goes (default: the study's own)")
    args = parser.parse_args(argv)
    path = Path(args.storage_path).expanduser().resolve() / args.name
    if not (path / CONFIG_FILE).is_file():
        print(f"error: no petseg study at {path} (no {CONFIG_FILE}); check --name and --storage-path",
              file=sys.stderr)
        return 2
    try:
        config = load_config(path / CONFIG_FILE)
        # The folder was found here, wherever the study ran from.
        config = config.replace(storage_path=args.storage_path, results_dir=args.results_dir or config.run.results_dir)
        seeds_path = experiment_path(seeds_study(config))
        out = analysis.write_report(config, saved_data(path), path, seeds_path if seeds_path.is_dir() else None)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((out / "comparison.md").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
