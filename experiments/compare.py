"""Run the six-variant frozen-backbone study on Ray Tune and print the comparison table.

    python experiments/compare.py --preset smoke          # minutes on a CPU, generated data
    python experiments/compare.py --data-root ~/data      # the paper study
    python experiments/compare.py --dry-run               # variants, parameters, search plan
"""
from __future__ import annotations

import argparse
import shlex
import sys

from petseg.errors import PetsegError, SearchInterrupted
from petseg.models import VARIANTS, default_variants, parameter_counts
from petseg.models.recipes import RECIPES
from petseg.data.spec import class_count
from petseg.tune.cache_plan import estimated_items, study_cache_plan
from petseg.tune import stopping
from petseg.tune.cli import add_runner_flags, runner_overrides
from petseg.tune.storage_estimate import describe_estimate
from petseg.tune.config import (PRESETS, check_head_files, head_search_folder, missing_heads,
                                missing_heads_message, resolve_config, resolve_head_weights, search_plan)


def parse_args(argv=None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="defaults to start from")
    parser.add_argument("--config", help="YAML file overriding the preset")
    parser.add_argument("--variants", help=f"comma-separated keys (default the paper's six: {','.join(default_variants())}; "
                        f"opt-in: {','.join(k for k in VARIANTS if k not in default_variants())}), or a function of "
                        "yours returning a VariantSpec as module:function")
    parser.add_argument("--plugins", help="comma-separated modules to import in every process of the study first; "
                        "each may register datasets, variants or metrics of its own (README, Plugins)")
    parser.add_argument("--dataset", help="pets (default): Oxford-IIIT Pet; folder: your own dataset as DIR/images/, "
                        "DIR/masks/ and DIR/classes.txt (README, Your own dataset); or a dataset a module of yours "
                        "registers (--plugins)")
    parser.add_argument("--data-root", help="folder holding oxford-iiit-pet/, or the folder dataset (with --dataset "
                        "folder); given, it replaces a preset's generated dataset")
    parser.add_argument("--download", action="store_true", default=None, help="download the dataset if absent")
    add_runner_flags(parser)
    parser.add_argument("--weight-decay-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="search the head's weight decay too, log-uniform in [LOW, HIGH] for every optimiser "
                        "recipe (default: not searched, each recipe keeps its own: Adam 1e-5, SGD 1e-4)")
    parser.add_argument("--seeds", type=int, help="retrain each variant's best lr with N more seeds (mean ± std)")
    parser.add_argument("--head-weights", help="folder of VOC / ADE20K head checkpoints <variant>-<hash>.pth "
                        "(default: the newest in $TORCH_HOME/hub/checkpoints, where pretrain_heads.py writes them)")
    parser.add_argument("--allow-random-heads", action="store_true", default=None,
                        help="run VOC / ADE20K variants whose head file is missing with random-init heads, "
                        "labelled \"random init\" (without it such a study refuses to start)")
    parser.add_argument("--dry-run", action="store_true", help="print variants and search plan, train nothing")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    """Resolve preset + YAML + flags into a StudyConfig."""
    variants, plugins = (None if value is None else [v.strip() for v in value.split(",") if v.strip()]
                         for value in (args.variants, args.plugins))
    # A data root you give is the data, even under a preset that generates its own.
    generated = 0 if args.data_root is not None else None
    overrides = {**runner_overrides(args), "variants": variants, "plugins": plugins, "data_root": args.data_root, "dataset": args.dataset,
                 "synthetic_images": generated,
                 "download": args.download, "seeds": args.seeds, "head_weights": args.head_weights,
                 "allow_random_heads": args.allow_random_heads,
                 "weight_decay_range": None if args.weight_decay_range is None
                 else dict.fromkeys(RECIPES, list(args.weight_decay_range))}
    return resolve_config(args.preset, args.config, overrides)


def head_weights_line(config, key: str, heads: dict[str, str], checked: dict[str, bool]) -> str:
    """Where variant `key`'s head starts from: a checkpoint file (and whether its backbone was checked),
    torchvision's COCO head, or random init."""
    if key in heads:
        return heads[key] + ("" if checked[key] else " (a head-only file: its backbone unchecked)")
    if not config.search.pretrained:
        return "none: pretrained is off, so the head starts from random init"
    spec = VARIANTS[key]
    if spec.head_dataset is None:
        return f"{spec.head_pretraining} ({spec.head_weights.rsplit('/', 1)[-1]})" if spec.head_weights else "random init"
    if config.search.allow_random_heads:
        return f"none found in {head_search_folder(config)}: head starts from random init (--allow-random-heads)"
    return f"none found in {head_search_folder(config)}: the study will refuse to start (see below)"


def print_plan(config) -> None:
    """Per variant: key, paper name, backbone, head pretraining, parameters (Table 1), head weights, search plan;
    every head file is opened and checked as the study would."""
    heads = resolve_head_weights(config)
    checked = check_head_files(config, heads)
    width = max(20, *map(len, config.search.variants))
    classes = class_count(config.search.dataset, config.search.data_root, bool(config.search.synthetic_images))
    for key in config.search.variants:
        spec = VARIANTS[key]
        trainable, total = parameter_counts(key, classes)
        print(f"{key:<{width}} {spec.paper_name:<14} {spec.backbone:<31} head: {spec.head_pretraining:<10} "
              f"trainable {trainable:>10,}  total {total:>10,}")
        print(f"{'':<{width}} head weights: {head_weights_line(config, key, heads, checked)}")
        print(f"{'':<{width}} {search_plan(config, key)}")
    train_items, val_items = estimated_items(config)
    plan = study_cache_plan(config, config.search.image_size, train_items, val_items)
    if plan is not None:
        print(f"\nfeature caches ({train_items:,} train and {val_items:,} val items at {config.search.image_size} px), "
              "backbone by backbone:")
        print("\n".join(f"  {line}" for line in plan.describe()))
    print(f"\n{describe_estimate(config)}")
    missing = missing_heads(config, heads)
    if missing and not config.search.allow_random_heads:
        print(f"\nthe study would stop: {missing_heads_message(config, missing)}")


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    stopping.install()
    try:
        config = config_from_args(args)
        if args.dry_run:
            print_plan(config)
            return 0
        from petseg.study.pets import run_study  # Ray is imported only when a study runs

        run_study(config, resume=args.resume)
    except (SearchInterrupted, KeyboardInterrupt) as err:
        print(stopping.stop_message(err, "No comparison was written.", resume_command(argv)), file=sys.stderr)
        return 128 + stopping.signal_of(err)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def resume_command(argv=None) -> str:
    """This command line with --resume, to continue an interrupted study where it stopped."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "experiments/compare.py", *args, *([] if "--resume" in args else ["--resume"])])


if __name__ == "__main__":
    sys.exit(main())
