"""Pretrain the DenseASPP and CutDenseASPP heads on Pascal VOC (+SBD) or ADE20K and write their checkpoints.

    python experiments/pretrain_heads.py --dataset voc --synthetic 12 --image-size 64 --no-pretrained
    python experiments/pretrain_heads.py --dataset voc --data-root ~/data/voc --sbd-root ~/data/sbd --download
    python experiments/pretrain_heads.py --dataset ade20k --data-root ~/data/ade20k --gpus-per-trial 0.5

Writes <variant>-<sha256 prefix>.pth per head into --output (default $TORCH_HOME/hub/checkpoints, where
compare.py looks for head weights) and the table results/<name>/pretrained_heads.{md,csv}.
"""
from __future__ import annotations

import argparse
import os
import sys

from petseg.config import ConfigError, resolve_config
from petseg.segdata import NUM_CLASSES


def parse_args(argv=None) -> argparse.Namespace:
    """The command-line flags; --data-root is required unless --synthetic generates the data."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(NUM_CLASSES), help="what the heads learn")
    parser.add_argument("--data-root", help="folder holding VOCdevkit/ (voc) or ADEChallengeData2016/ (ade20k)")
    parser.add_argument("--sbd-root", help="voc only: SBD folder (img/, cls/, train.txt, val.txt) added to "
                        "VOC train minus VOC val, the usual 10,582 images")
    parser.add_argument("--download", action="store_true", default=None, help="download the dataset(s) if absent")
    parser.add_argument("--synthetic", type=int, metavar="N", help="generate N images per tree (VOC and SBD, or "
                        "ADE20K) under the cache dir instead of --data-root: runs offline in minutes")
    parser.add_argument("--output", help="folder for the head checkpoints (default $TORCH_HOME/hub/checkpoints)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage-path", help="where Ray keeps trials, checkpoints and TensorBoard logs")
    parser.add_argument("--name", help="search name: results/<name>/ and the Ray experiment folder "
                        "(default heads_<dataset>)")
    parser.add_argument("--num-samples", type=int, help="learning rates tried per head")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial at most")
    parser.add_argument("--image-size", type=int, help="side length images are resized to (default 256)")
    parser.add_argument("--batch-size", type=int, help="images per batch")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions allowed, e.g. 0.25)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    parser.add_argument("--cache-dir", help="where backbone features and generated data are kept "
                        "(default $PETSEG_CACHE or ~/.cache/petseg)")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                        help="ImageNet backbones (default); --no-pretrained: random ones, for quick checks")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    args = parser.parse_args(argv)
    if args.data_root is None and not args.synthetic:
        parser.error("--data-root is required (or --synthetic N for a generated dataset)")
    if args.sbd_root is not None and args.dataset != "voc":
        parser.error("--sbd-root applies to --dataset voc only")
    return args


def config_from_args(args: argparse.Namespace, variants: list[str]):
    """A StudyConfig for `variants`, the heads of args.dataset (paper defaults, flags override)."""
    overrides = {
        "name": args.name or f"heads_{args.dataset}", "variants": variants,
        "data_root": args.data_root, "download": args.download, "synthetic_images": args.synthetic,
        "address": args.address or os.environ.get("RAY_ADDRESS"), "storage_path": args.storage_path,
        "num_samples": args.num_samples, "max_epochs": args.max_epochs, "image_size": args.image_size,
        "batch_size": args.batch_size, "gpus_per_trial": args.gpus_per_trial, "cpus_per_trial": args.cpus_per_trial,
        "cache_dir": args.cache_dir, "pretrained": args.pretrained,
    }
    return resolve_config("paper", None, overrides)


def main(argv=None) -> int:
    """Entry point; returns the process exit code (2: bad input, 1: a head got no checkpoint)."""
    args = parse_args(argv)
    from petseg.pretrain import head_variants, pretrain_heads  # Ray is imported only once the flags parse
    from petseg.study import StudyError

    variants = head_variants(args.dataset)
    try:
        table, results = pretrain_heads(config_from_args(args, variants), args.dataset, args.sbd_root,
                                        args.output, resume=args.resume)
    except (ConfigError, StudyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((results / "pretrained_heads.md").read_text())
    print(f"table written to {results / 'pretrained_heads.csv'}")
    return 0 if len(table) == len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
