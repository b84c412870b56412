"""Evaluate a best checkpoint on a split of a dataset, at the checkpoint's size and at original resolution.

    python experiments/evaluate.py --checkpoint results/NAME/checkpoints/denseaspp_voc.pt --data-root DIR --split test

The split's image names come from the checkpoint's data spec, the files from --data-root. Scores
are printed twice: at the checkpoint's image size (masks resized nearest, as in training and in
comparison.csv) and at each image's original resolution (logits upsampled bilinearly, scored
against the full mask), each with 95% bootstrap confidence intervals over the images.
Exit code 2 for an unusable checkpoint or data root.
"""
from __future__ import annotations

import argparse
import sys

from petseg.data import PARTS
from petseg.errors import CheckpointError, PetsegError
from petseg.metrics import REGISTRY
from petseg.report.labels import backbone_label, checkpoint_provenance, head_label, model_name
from petseg.report.stats import summarize
from petseg.train.engine import default_device, per_image_confusions
from petseg.train.inference import checkpoint_classes, checkpoint_dataset, load_best

def format_summary(title: str, summary: dict) -> str:
    """A titled block: each metric with its CI, then the per-class IoU."""
    lines = [f"{title}:"]
    for metric, label in ((name, metric.label) for name, metric in REGISTRY.items()):
        lines.append(f"  {label:<15} {summary[metric]:.4f}  "
                     f"(95% CI {summary[f'{metric}_low']:.4f} - {summary[f'{metric}_high']:.4f})")
    names = [key.removeprefix("iou_") for key in summary if key.startswith("iou_")]
    lines.append("  IoU per class   " + ", ".join(f"{name} {summary[f'iou_{name}']:.4f}" for name in names))
    return "\n".join(lines)


def checkpoint_batch_size(path: str, checkpoint: dict) -> int:
    """The study's batch size saved in the checkpoint's config, for when --batch-size is not given."""
    batch_size = checkpoint["config"].get("batch_size")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise CheckpointError(f"{path}: its config has no usable batch_size ({batch_size!r}); pass --batch-size N")
    return batch_size


def main(argv=None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a best checkpoint, results/NAME/checkpoints/<variant>.pt")
    parser.add_argument("--data-root", required=True,
                        help="the dataset: directory containing oxford-iiit-pet/, or a folder study's dataset folder")
    parser.add_argument("--split", default="test", choices=PARTS, help="which part of the checkpoint's split")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the study's)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: give at least 1")
    device = default_device()
    try:
        model, checkpoint = load_best(args.checkpoint, device)
        dataset = checkpoint_dataset(checkpoint, args.data_root, args.split)
        batch_size = args.batch_size or checkpoint_batch_size(args.checkpoint, checkpoint)
        at_size = per_image_confusions(model, dataset, device, batch_size)
        at_original = per_image_confusions(model, dataset, device, batch_size, original_size=True)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size, classes = dataset.size, checkpoint_classes(checkpoint)
    provenance = checkpoint_provenance(checkpoint)
    print(f"{args.checkpoint}: {model_name(provenance)} ({checkpoint['variant']}), "
          f"lr {checkpoint['lr']:.3g}, epoch {checkpoint['epoch']}")
    print(f"backbone {backbone_label(provenance)}, head {head_label(provenance)}")
    print(f"{args.split} split: {len(dataset)} images under {args.data_root}, device {device}\n")
    print(format_summary(f"at {size}x{size}, the checkpoint's size (masks resized nearest, as in training)",
                         summarize(at_size, class_names=classes)))
    print()
    print(format_summary("at original resolution (logits upsampled bilinearly to each image's size)",
                         summarize(at_original, class_names=classes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
