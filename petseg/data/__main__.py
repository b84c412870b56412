"""Check an Oxford-IIIT Pet tree: prints split sizes and class pixel shares, exits 1 if a file is unusable.

    python -m petseg.data --root data [--download] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys

from ..errors import DatasetError
from .pets import CLASS_NAMES, PARTS, class_pixel_counts, find_samples, make_split, scan_samples


def main(argv: list[str] | None = None) -> int:
    """CLI: check every image and trimap of a tree; print split sizes, class shares and problems."""
    parser = argparse.ArgumentParser(description="Check an Oxford-IIIT Pet tree for segmentation.")
    parser.add_argument("--root", required=True, help="directory containing oxford-iiit-pet/")
    parser.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val/test split")
    args = parser.parse_args(argv)
    try:
        samples = find_samples(args.root, download=args.download)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    split = make_split(samples, args.seed)
    print(f"split (seed {args.seed}): " + ", ".join(f"{part} {len(split[part])}" for part in PARTS))
    good, problems = scan_samples(samples["trainval"] + samples["test"])
    counts = class_pixel_counts(good)
    shares = counts / max(counts.sum(), 1) * 100
    print("class pixel shares: " + ", ".join(f"{n} {s:.1f}%" for n, s in zip(CLASS_NAMES, shares)))
    if problems:
        print(f"{len(problems)} unusable file(s):")
        for _, message in problems:
            print(f"  {message}")
        return 1
    print(f"all {len(good)} samples are usable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
