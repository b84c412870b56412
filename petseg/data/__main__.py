"""Check a dataset tree: prints split sizes and class pixel shares, names every unusable file, exits 1 if any.

    python -m petseg.data --root data [--download] [--seed 0]          # Oxford-IIIT Pet (holds oxford-iiit-pet/)
    python -m petseg.data --dataset folder --root data/shapes          # a folder dataset (images/, masks/, classes.txt)

Any registered study dataset is checked the same way, by its source's `check`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DatasetError
from .source import get_source, study_kinds


def main(argv: list[str] | None = None) -> int:
    """CLI: check every image and mask of a tree; print split sizes, class shares and problems."""
    parser = argparse.ArgumentParser(prog="python -m petseg.data", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pets", help="the tree's layout: a registered study dataset "
                        "(pets, folder, or one a plugin registers)")
    parser.add_argument("--root", required=True, help="the dataset's folder (for pets: the one holding oxford-iiit-pet/)")
    parser.add_argument("--download", action="store_true", help="download Oxford-IIIT Pet if it is missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--split-ratio", type=float, nargs=3, default=(0.5, 0.25, 0.25), metavar=("TRAIN", "VAL", "TEST"),
                        help="folder dataset without splits/: fractions of train, val and test (default 0.5 0.25 0.25)")
    args = parser.parse_args(argv)
    if args.dataset not in study_kinds():  # checked now, so datasets registered after this module loaded count
        parser.error(f"--dataset {args.dataset!r}: use one of {', '.join(study_kinds())}")
    try:
        check = get_source(args.dataset).check(Path(args.root), args.seed, args.split_ratio, args.download)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    split, names, counts, problems = check.split, check.names, check.counts, check.problems
    if split:
        how = "its splits/ lists" if split.get("source") == "splits" else f"seed {args.seed}"
        print(f"split ({how}): " + ", ".join(f"{part} {len(split[part])}" for part in ("train", "val", "test")))
    shares = counts / max(counts.sum(), 1) * 100
    print(f"{len(names)} classes, pixel shares: " + ", ".join(f"{n} {s:.1f}%" for n, s in zip(names, shares)))
    if problems:
        print(f"{len(problems)} unusable file(s):")
        for _, message in problems:
            print(f"  {message}")
        return 1
    print(f"all {check.usable} samples are usable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
