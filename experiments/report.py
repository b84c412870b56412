"""(Re)build results/<name>/ from a finished study's Ray experiment folder.

    python experiments/report.py --name smoke [--storage-path ray_results] [--results-dir results]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from petseg import analysis
from petseg.config import StudyConfig
from petseg.study import CONFIG_FILE, DATA_FILE, experiment_path, seeds_study


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
    config = StudyConfig(**yaml.safe_load((path / CONFIG_FILE).read_text()))
    config.storage_path = args.storage_path  # the folder was found here, wherever the study ran from
    if args.results_dir:
        config.results_dir = args.results_dir
    data = json.loads((path / DATA_FILE).read_text())
    seeds_path = experiment_path(seeds_study(config))
    out = analysis.write_report(config, data, path, seeds_path if seeds_path.is_dir() else None)
    print((out / "comparison.md").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
