"""Pretrain the DenseASPP and CutDenseASPP heads on Pascal VOC (+SBD) or ADE20K and write their checkpoints.

    python experiments/pretrain_heads.py --dataset voc --synthetic 12 --image-size 64 --no-pretrained
    python experiments/pretrain_heads.py --dataset voc --data-root ~/data/voc --sbd-root ~/data/sbd --download
    python experiments/pretrain_heads.py --dataset ade20k --data-root ~/data/ade20k --gpus-per-trial 0.5

Writes <variant>-<sha256 prefix>.pth per head into --output (default $TORCH_HOME/hub/checkpoints, where
compare.py looks for head weights) and the table results/<name>/pretrained_heads.{md,csv}.
"""
from __future__ import annotations

import argparse
import sys

from petseg.data import get_source, pretraining_kinds
from petseg.errors import PetsegError, SearchInterrupted
from petseg.synthetic import MIN_IMAGES
from petseg.tune import stopping
from petseg.tune.cli import add_runner_flags, runner_overrides
from petseg.tune.config import resolve_config


def parse_args(argv=None) -> argparse.Namespace:
    """The command-line flags; --data-root is required unless --synthetic generates the data."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="what the heads learn: voc, ade20k, or another registered "
                        "pretraining dataset")
    parser.add_argument("--data-root", help="folder holding VOCdevkit/ (voc) or ADEChallengeData2016/ (ade20k)")
    parser.add_argument("--sbd-root", help="voc only: SBD folder (img/, cls/, train.txt, val.txt) added to "
                        "VOC train minus VOC val, the usual 10,582 images")
    parser.add_argument("--download", action="store_true", default=None, help="download the dataset(s) if absent")
    parser.add_argument("--synthetic", type=int, metavar="N", help="generate N images per tree (VOC and SBD, or "
                        "ADE20K) under the cache dir instead of --data-root: runs offline in minutes")
    parser.add_argument("--output", help="folder for the head checkpoints (default $TORCH_HOME/hub/checkpoints)")
    add_runner_flags(parser)
    parser.add_argument("--batch-size", type=int, help="images per batch")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                        help="ImageNet backbones (default); --no-pretrained: random ones, for quick checks")
    args = parser.parse_args(argv)
    if args.dataset not in pretraining_kinds():  # asked after parsing: datasets registered by then count
        parser.error(f"argument --dataset: invalid choice: {args.dataset!r} (choose from "
                     f"{', '.join(sorted(pretraining_kinds()))})")
    if args.synthetic is not None and args.synthetic < MIN_IMAGES:
        parser.error(f"--synthetic {args.synthetic}: generate at least {MIN_IMAGES} images, so every list gets one")
    if args.data_root is None and not args.synthetic:
        parser.error("--data-root is required (or --synthetic N for a generated dataset)")
    if args.sbd_root is not None and not get_source(args.dataset).joins_sbd:
        joining = [kind for kind in pretraining_kinds() if get_source(kind).joins_sbd]
        parser.error(f"--sbd-root applies to --dataset {' or '.join(joining)} only")
    return args


def config_from_args(args: argparse.Namespace, variants: list[str]):
    """A StudyConfig for `variants`, the heads of args.dataset (paper defaults, flags override)."""
    overrides = {**runner_overrides(args), "name": args.name or f"heads_{args.dataset}", "variants": variants,
                 "data_root": args.data_root, "download": args.download, "synthetic_images": args.synthetic,
                 "batch_size": args.batch_size, "pretrained": args.pretrained}
    return resolve_config("paper", None, overrides)


def main(argv=None) -> int:
    """Entry point; returns the process exit code (2: bad input, 1: a head got no checkpoint)."""
    args = parse_args(argv)
    from petseg.study.pretrain import head_variants, pretrain_heads  # Ray is imported only once the flags parse

    variants = head_variants(args.dataset)
    stopping.install()
    try:
        table, results = pretrain_heads(config_from_args(args, variants), args.dataset, args.sbd_root,
                                        args.output, resume=args.resume)
    except (SearchInterrupted, KeyboardInterrupt) as err:
        print(stopping.stop_message(err, "No head file was written.", "the same command with --resume"),
              file=sys.stderr)
        return 128 + stopping.signal_of(err)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((results / "pretrained_heads.md").read_text())
    print(f"table written to {results / 'pretrained_heads.csv'}")
    return 0 if len(table) == len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
