"""(Re)build results/<name>/ from a finished study's Ray experiment folder.

    python experiments/report.py --name smoke [--storage-path ray_results] [--results-dir results]
    python experiments/report.py --name smoke --storage-path s3://bucket/petseg
"""
from __future__ import annotations

import argparse
import sys

from petseg.errors import PetsegError, StudyError
from petseg.report import analysis
from petseg.study.pets import seeds_study
from petseg.tune.config import check_name, load_config
from petseg.tune.runner import CONFIG_FILE, experiment_path, saved_data
from petseg.tune.storage import Location, access_help


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the study's name")
    parser.add_argument("--storage-path", default="ray_results",
                        help="the study's Ray storage path: a folder or a URI (s3://bucket/petseg)")
    parser.add_argument("--results-dir", help="where results/<name>/ goes (default: the study's own)")
    parser.add_argument("--overwrite", action="store_true",
                        help="clear results/<name>/ when it holds another study's results (refused otherwise)")
    args = parser.parse_args(argv)
    try:
        path = Location.at(args.storage_path) / check_name(args.name, "--name")
        if not (path / CONFIG_FILE).exists():
            raise StudyError(f"no petseg study at {path} (no {CONFIG_FILE}); check --name and --storage-path")
        config = load_config(path / CONFIG_FILE)
        # The folder was found here, wherever the study ran from, under this name: a copied study reports as the
        # copy, never into the original's results.
        config = config.replace(storage_path=args.storage_path, name=args.name,
                                results_dir=args.results_dir or config.run.results_dir, overwrite=args.overwrite)
        seeds_path = experiment_path(seeds_study(config))
        out = analysis.write_report(config, saved_data(path), path, seeds_path if seeds_path.is_dir() else None)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. an object store that refuses the credentials or cannot be reached
        print(f"error: study {args.name!r} at {args.storage_path}: {err}"
              + ("" if path.is_local else f"; {access_help(path)}"), file=sys.stderr)
        return 2
    print((out / "comparison.md").read_text())
    print(f"wrote {out}{analysis.partial_warning(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
