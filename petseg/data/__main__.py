"""Check a dataset tree: prints split sizes and class pixel shares, names every unusable file, exits 1 if any.

    python -m petseg.data --root data [--download] [--seed 0]          # Oxford-IIIT Pet (holds oxford-iiit-pet/)
    python -m petseg.data --dataset folder --root data/shapes          # a folder dataset (images/, masks/, classes.txt)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import DatasetError
from . import folder, pets
from .spec import STUDY_KINDS


def check_pets(args: argparse.Namespace) -> tuple[dict, tuple[str, ...], np.ndarray, list, int]:
    """(split, class names, class pixel counts, problems, usable samples) of an Oxford-IIIT Pet tree."""
    samples = pets.find_samples(args.root, download=args.download)
    split = pets.make_split(samples, args.seed)
    good, problems = pets.scan_samples(samples["trainval"] + samples["test"])
    return split, pets.CLASS_NAMES, pets.class_pixel_counts(good), problems, len(good)


def check_folder(args: argparse.Namespace) -> tuple[dict, tuple[str, ...], np.ndarray, list, int]:
    """(split, class names, class pixel counts, problems, usable samples) of a folder dataset: every image without
    a mask, mask without an image, unreadable file, mask value outside the classes and size mismatch."""
    classes = folder.read_classes(args.root)
    samples, problems = folder.find_samples(args.root)
    scanned = folder.scan_samples(samples, classes)
    bad = {path for path, _ in scanned}
    good = [s for s in samples if str(s.labels) not in bad and str(s.image) not in bad]
    problems += scanned
    try:  # a split the usable pairs cannot fill is one more problem, listed with the files that caused it
        split = folder.make_split(args.root, good, args.seed, args.split_ratio)
    except DatasetError as err:
        split = {}
        problems.append((str(err.path), str(err)))
    return split, classes.names, folder.class_pixel_counts(good, classes), problems, len(good)


def main(argv: list[str] | None = None) -> int:
    """CLI: check every image and mask of a tree; print split sizes, class shares and problems."""
    parser = argparse.ArgumentParser(prog="python -m petseg.data", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pets", choices=STUDY_KINDS, help="the tree's layout")
    parser.add_argument("--root", required=True, help="directory containing oxford-iiit-pet/, or the folder dataset")
    parser.add_argument("--download", action="store_true", help="download Oxford-IIIT Pet if it is missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--split-ratio", type=float, nargs=3, default=(0.5, 0.25, 0.25), metavar=("TRAIN", "VAL", "TEST"),
                        help="folder dataset without splits/: fractions of train, val and test (default 0.5 0.25 0.25)")
    args = parser.parse_args(argv)
    try:
        split, names, counts, problems, usable = (check_folder if args.dataset == "folder" else check_pets)(args)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
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
    print(f"all {usable} samples are usable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
