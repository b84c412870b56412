"""Pretrain the DenseASPP and CutDenseASPP heads on Pascal VOC (+SBD) or ADE20K with the study's runner.

Both heads of a dataset train on their frozen ImageNet backbones in one Ray Tune search (per-variant
Optuna lr search and ASHA on val mIoU, checkpoints, TensorBoard). Each head's best trial is then written
in the public DenseASPP layout (features.* backbone, head.* head) as <variant>-<sha256 prefix>.pth,
where the study finds it (petseg.config.resolve_head_weights).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import torch
import yaml
from ray import tune

from .tables import markdown_table
from .config import StudyConfig
from .data import DatasetError
from .dataspec import ensure_dataset, samples_to_json, seg_parts, spec_num_classes
from .models import VARIANTS, save_hashed_checkpoint, weights_cache_dir
from .segdata import NUM_CLASSES
from .study import DATA_FILE, StudyError, check_writable, open_study, run_search
from .trainable import load_state
from .training import build_seeded_model

METRIC = "val_mean_iou"  # the usual score of VOC / ADE20K; weighted mIoU would favour background and wall
# The backbones learnt ImageNet's statistics, and the public DenseASPP / torchvision recipes normalise
# VOC and ADE20K with them; a 10k-20k image pass to measure each set's own would change little.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TABLE = "pretrained_heads"


def head_variants(dataset: str) -> list[str]:
    """The registry variants whose head `dataset` ("voc" / "ade20k") pretrains: DenseASPP and CutDenseASPP."""
    return [key for key, spec in VARIANTS.items() if spec.head_dataset == dataset]


def _roots(config: StudyConfig, dataset: str, sbd_root: str | None) -> tuple[Path, Path | None]:
    """The dataset root (and SBD root): generated under the cache dir with synthetic_images, else given."""
    if config.synthetic_images:
        folder = Path(config.cache_dir).expanduser().resolve() / "synthetic"
        tag = f"{config.synthetic_images}-{config.image_size}-{config.seed}"
        return folder / f"{dataset}-{tag}", folder / f"sbd-{tag}" if dataset == "voc" else None
    if config.data_root is None:
        raise StudyError("no dataset: pass --data-root DIR, or --synthetic N for a generated one")
    roots = [("--data-root", config.data_root), ("--sbd-root", sbd_root)]
    resolved = [Path(root).expanduser().resolve() if root else None for _, root in roots]
    for (flag, _), root in zip(roots, resolved):
        if root is not None and not root.is_dir() and not config.download:
            raise StudyError(f"{flag} {root} does not exist; pass the folder holding the dataset "
                             "or add --download to fetch it there")
    return resolved[0], resolved[1]


def prepare_pretrain_data(config: StudyConfig, dataset: str, sbd_root: str | None = None,
                          saved: Path | None = None) -> dict:
    """The data spec every trial reads: kind, roots, train / val sample lists, ImageNet statistics."""
    if saved is not None and saved.is_file():
        return json.loads(saved.read_text())
    root, sbd = _roots(config, dataset, sbd_root)
    spec = {"kind": dataset, "num_classes": NUM_CLASSES[dataset], "root": str(root),
            "sbd_root": str(sbd) if sbd else None, "download": config.download, "synthetic": None,
            "size": config.image_size, "augment": config.augment, "seed": config.seed,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if config.synthetic_images:
        spec["synthetic"] = {"num_images": config.synthetic_images, "size": config.image_size, "seed": config.seed}
    try:
        ensure_dataset(spec)
        parts = seg_parts(dataset, root, sbd)
    except DatasetError as err:
        raise StudyError(str(err)) from err
    return {**spec, "samples": {part: samples_to_json(samples) for part, samples in parts.items()}}


def public_layout(config: StudyConfig, variant: str, head: dict[str, torch.Tensor], num_classes: int) -> dict:
    """A head in the public DenseASPP layout, with the frozen backbone it was trained on as features.*."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings were shown when the search ran
        model = build_seeded_model(variant, config.pretrained, config.seed, num_classes=num_classes)
    model.head.load_state_dict(head)  # proves the head fits the variant before it is published
    return {**{f"features.{k}": v for k, v in model.backbone.features.state_dict().items()},
            **{f"head.{k}": v for k, v in model.head.state_dict().items()}}


def best_checkpoints(experiment: tune.ExperimentAnalysis) -> dict:
    """variant -> (trial, checkpoint result) whose last checkpoint scores the highest val mIoU."""
    best = {}
    for trial in experiment.trials:
        result = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if result is None or METRIC not in result.metrics:
            continue
        variant = trial.config["variant"]
        if variant not in best or result.metrics[METRIC] > best[variant][1].metrics[METRIC]:
            best[variant] = (trial, result)
    return best


def export_heads(config: StudyConfig, data: dict, experiment_path: Path, output: Path) -> pd.DataFrame:
    """Write each variant's best head to `output`; one table row per head written.

    The head written is the trial's last checkpoint, so the table's val scores are exactly those of the file.
    """
    best = best_checkpoints(tune.ExperimentAnalysis(str(experiment_path)))
    dataset = data["kind"] + ("+sbd" if data.get("sbd_root") else "")
    rows = []
    for variant in config.variants:
        if variant not in best:
            print(f"warning: {variant} has no finished trial with a checkpoint; no head file written for it")
            continue
        trial, result = best[variant]
        head = load_state(result.checkpoint)["head"]
        path = save_hashed_checkpoint(public_layout(config, variant, head, spec_num_classes(data)), output, variant)
        rows.append({"variant": variant, "dataset": dataset, "train_images": len(data["samples"]["train"]),
                     "val_images": len(data["samples"]["val"]), "val_mean_iou": result.metrics[METRIC],
                     "val_pixel_accuracy": result.metrics["val_pixel_accuracy"], "best_lr": trial.config["lr"],
                     "epochs": int(result.metrics["epoch"]), "file": str(path)})
    return pd.DataFrame(rows, columns=["variant", "dataset", "train_images", "val_images", "val_mean_iou",
                                       "val_pixel_accuracy", "best_lr", "epochs", "file"])


def pretrain_heads(config: StudyConfig, dataset: str, sbd_root: str | None = None, output: str | None = None,
                   resume: bool = False) -> tuple[pd.DataFrame, Path]:
    """Pretrain `dataset`'s heads and write them to `output` (default the weights cache); (table, results folder)."""
    output_dir = Path(output).expanduser().resolve() if output else weights_cache_dir()
    check_writable(output_dir, "--output folder")
    config, path = open_study(config, resume)
    data = prepare_pretrain_data(config, dataset, sbd_root, path / DATA_FILE if resume else None)
    if data.get("kind") != dataset:
        raise StudyError(f"study {config.name!r} pretrained on {data.get('kind', 'pets')}, not {dataset}; "
                         "pass its --dataset or another --name")
    run_search(config, data, resume, metric=METRIC)
    table = export_heads(config, data, path, output_dir)
    results = Path(config.results_dir).expanduser().resolve() / config.name
    results.mkdir(parents=True, exist_ok=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    table.to_csv(results / f"{TABLE}.csv", index=False)
    (results / f"{TABLE}.md").write_text(markdown_table(table) if len(table) else "no head finished a trial\n")
    return table, results
