"""Pretrain the DenseASPP and CutDenseASPP heads on Pascal VOC (+SBD) or ADE20K with the study's runner.

Both heads of a dataset train on their frozen ImageNet backbones in one Ray Tune search (per-variant
Optuna lr search and ASHA on val mIoU, checkpoints, TensorBoard). Each head's best trial is then written
in the public DenseASPP layout (features.* backbone, head.* head) as <variant>-<sha256 prefix>.pth,
where the study finds it (petseg.tune.config.resolve_head_weights).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import yaml
from ray import tune

from ..data import DataSpec, get_source, make_data_spec
from ..errors import DatasetError, StudyError
from ..models import VARIANTS, model_from_config, weights_cache_dir
from ..models.checkpoints import load_trial_state, public_head_state, save_head_file
from ..report.tables import markdown_table
from ..tune.config import StudyConfig
from ..tune.results import best_last_checkpoints
from ..tune.runner import run_search
from ..tune.storage import Location, check_writable
from .session import study_run

METRIC = "val_mean_iou"  # the usual score of VOC / ADE20K; weighted mIoU would favour background and wall
TABLE = "pretrained_heads"


def head_variants(dataset: str) -> list[str]:
    """The registry variants whose head `dataset` ("voc" / "ade20k") pretrains: DenseASPP and CutDenseASPP."""
    return [key for key, spec in VARIANTS.items() if spec.head_dataset == dataset]


def _roots(config: StudyConfig, dataset: str, sbd_root: str | None) -> tuple[Path, Path | None]:
    """The dataset root (and SBD root): generated under the cache dir with synthetic_images, else given."""
    if config.search.synthetic_images:
        folder = Path(config.run.cache_dir).expanduser().resolve() / "synthetic"
        tag = f"{config.search.synthetic_images}-{config.search.image_size}-{config.search.seed}"
        return folder / f"{dataset}-{tag}", folder / f"sbd-{tag}" if get_source(dataset).joins_sbd else None
    if config.search.data_root is None:
        raise StudyError("no dataset: pass --data-root DIR, or --synthetic N for a generated one")
    roots = [("--data-root", config.search.data_root), ("--sbd-root", sbd_root)]
    resolved = [Path(root).expanduser().resolve() if root else None for _, root in roots]
    for (flag, _), root in zip(roots, resolved):
        if root is not None and not root.is_dir() and not config.search.download:
            raise StudyError(f"{flag} {root} does not exist; pass the folder holding the dataset "
                             "or add --download to fetch it there")
    return resolved[0], resolved[1]


def prepare_pretrain_data(config: StudyConfig, dataset: str, sbd_root: str | None = None) -> DataSpec:
    """The data spec every trial reads: the trees, the train / val sample lists, ImageNet statistics."""
    search = config.search
    root, sbd = _roots(config, dataset, sbd_root)
    synthetic = ({"num_images": search.synthetic_images, "size": search.image_size, "seed": search.seed}
                 if search.synthetic_images else None)
    try:
        return make_data_spec(dataset, root, size=search.image_size, augment=search.augment, seed=search.seed,
                              download=search.download, synthetic=synthetic, sbd_root=sbd)
    except DatasetError as err:
        raise StudyError(str(err)) from err


def export_heads(config: StudyConfig, data: DataSpec, experiment_path: Location, output: Path) -> pd.DataFrame:
    """Write each variant's best head to `output`; one table row per head written.

    The head written is the trial's last checkpoint, so the table's val scores are exactly those of the file.
    """
    best = best_last_checkpoints(tune.ExperimentAnalysis(experiment_path.path,
                                                         storage_filesystem=experiment_path.filesystem), METRIC)
    dataset = data.kind + ("+sbd" if data.sbd_root else "")
    rows = []
    for variant in config.search.variants:
        if variant not in best:
            print(f"warning: {variant} has no finished trial with a checkpoint; no head file written for it")
            continue
        trial, result = best[variant]
        state = load_trial_state(result.checkpoint)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-init warnings were shown when the search ran
            model = model_from_config(state["config"], head=state["head"], num_classes=data.num_classes)
        path = save_head_file(public_head_state(model), output, variant)
        rows.append({"variant": variant, "dataset": dataset, "train_images": len(data.samples["train"]),
                     "val_images": len(data.samples["val"]), "val_mean_iou": result.metrics[METRIC],
                     "val_pixel_accuracy": result.metrics["val_pixel_accuracy"], "best_lr": trial.config["lr"],
                     "epochs": int(result.metrics["epoch"]), "file": str(path)})
    return pd.DataFrame(rows, columns=["variant", "dataset", "train_images", "val_images", "val_mean_iou",
                                       "val_pixel_accuracy", "best_lr", "epochs", "file"])


def pretrain_heads(config: StudyConfig, dataset: str, sbd_root: str | None = None, output: str | None = None,
                   resume: bool = False) -> tuple[pd.DataFrame, Path]:
    """Pretrain `dataset`'s heads and write them to `output` (default the weights cache); (table, results folder)."""
    output_dir = Path(output).expanduser().resolve() if output else weights_cache_dir()
    check_writable(output_dir, "--output folder")
    with study_run(config, lambda c: prepare_pretrain_data(c, dataset, sbd_root), resume) as run:
        config, path, data = run.config, run.path, run.data
        if data.kind != dataset:
            raise StudyError(f"study {config.run.name!r} pretrained on {data.kind}, not {dataset}; "
                             "pass its --dataset or another --name")
        run_search(config, data, resume, metric=METRIC)
        table = export_heads(config, data, path, output_dir)
        results = Path(config.run.results_dir).expanduser().resolve() / config.run.name
        results.mkdir(parents=True, exist_ok=True)
        (results / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        table.to_csv(results / f"{TABLE}.csv", index=False)
        (results / f"{TABLE}.md").write_text(markdown_table(table) if len(table) else "no head finished a trial\n")
        return table, results
