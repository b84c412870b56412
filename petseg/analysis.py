"""Turn a finished study into tables: every trial, and each variant's best trial scored on test."""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import yaml
from ray import tune

from .config import StudyConfig
from .data import CLASS_NAMES
from .engine import default_device, evaluate
from .models import VARIANTS, parameter_counts
from .dataspec import datasets_from_spec
from .trainable import load_state
from .training import build_seeded_model, make_loader

METRICS = ("pixel_accuracy", "mean_iou", "weighted_iou")


def ended_by(trial, max_epochs: int) -> str:
    """Why a trial stopped: error, early stopping, max epochs, ASHA, or its unfinished status."""
    result = trial.last_result or {}
    if trial.status == "ERROR":
        return "error"
    if trial.status != "TERMINATED":
        return trial.status.lower()
    if result.get("early_stopped"):
        return "early stopping"
    return "max epochs" if result.get("epoch", 0) >= max_epochs else "ASHA"


def _error_reason(trial) -> str:
    if trial.status != "ERROR":
        return ""
    error = trial.get_error()
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def trial_records(experiment: tune.ExperimentAnalysis, max_epochs: int) -> pd.DataFrame:
    """One row per trial: variant, lr, epochs run, how it ended, best val metrics, node, error."""
    rows = []
    for trial in experiment.trials:
        history = experiment.trial_dataframes.get(trial.trial_id)
        best = {}
        if history is not None and "val_weighted_iou" in history and len(history):
            best = history.loc[history["val_weighted_iou"].idxmax()].to_dict()
        result = trial.last_result or {}
        rows.append({
            "trial_id": trial.trial_id,
            "variant": trial.config["variant"],
            "lr": trial.config["lr"],
            "epochs": int(result.get("epoch", 0)),
            "ended_by": ended_by(trial, max_epochs),
            "best_epoch": int(best.get("epoch", 0)),
            **{f"best_val_{m}": best.get(f"val_{m}", math.nan) for m in METRICS},
            "best_val_loss": best.get("val_loss", math.nan),
            "seconds": float(result.get("time_total_s", 0.0)),  # the trial's own training time
            "failures": trial.run_metadata.num_failures,  # attempts that failed (retried or final)
            "node": result.get("node", ""),
            "error": _error_reason(trial),
        })
    return pd.DataFrame(rows)


def best_trials(experiment: tune.ExperimentAnalysis, records: pd.DataFrame) -> dict:
    """variant -> (trial, record) of its trial with the highest val weighted mIoU and a checkpoint."""
    by_id = {t.trial_id: t for t in experiment.trials}
    best = {}
    scored = records.dropna(subset=["best_val_weighted_iou"]).sort_values("best_val_weighted_iou", ascending=False)
    for _, record in scored.iterrows():
        trial = by_id[record["trial_id"]]
        checkpoint = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if record["variant"] not in best and checkpoint is not None:
            best[record["variant"]] = (checkpoint.checkpoint, record)
    return best


def score_on_test(config: StudyConfig, variant: str, state: dict, datasets: dict) -> dict:
    """Test-split metrics of the best head, and the wall time to predict the whole split."""
    device = default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings were already shown when the study ran
        model = build_seeded_model(variant, config.pretrained, config.seed, config.head_weights.get(variant))
    model.head.load_state_dict(state["progress"]["best_head"])
    model.to(device)
    loader = make_loader(datasets["test"], config.batch_size, train=False, num_workers=config.num_workers)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = evaluate(model, loader, device, len(CLASS_NAMES))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {**{f"test_{m}": result[m] for m in METRICS},
            **{f"test_iou_{name}": iou for name, iou in zip(CLASS_NAMES, result["iou_per_class"])},
            "prediction_time_s": seconds, "test_images": len(datasets["test"]),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "batch_size": config.batch_size}


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `frame` (floats to 4 decimals)."""
    def cell(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e-3 else f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_report(config: StudyConfig, data: dict, experiment_path: str | Path) -> Path:
    """Write results/<name>/: comparison.csv/.md, all_trials.csv, config, split, best checkpoints."""
    experiment = tune.ExperimentAnalysis(str(experiment_path))
    records = trial_records(experiment, config.max_epochs)
    out = Path(config.results_dir).expanduser().resolve() / config.name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    records.to_csv(out / "all_trials.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (out / "split.json").write_text(json.dumps(data["split"], indent=1))

    datasets = datasets_from_spec(data)
    rows = []
    for variant, (checkpoint, record) in best_trials(experiment, records).items():
        state = load_state(checkpoint)
        torch.save({"variant": variant, "lr": record["lr"], "epoch": int(record["best_epoch"]),
                    "head": state["progress"]["best_head"], "config": config.to_dict(), "data": data},
                   out / "checkpoints" / f"{variant}.pt")
        trainable, total = parameter_counts(variant)
        rows.append({
            "key": variant, "paper_name": VARIANTS[variant].paper_name,
            "trainable_params": trainable, "total_params": total,
            "best_lr": record["lr"], "epochs": record["epochs"], "best_epoch": record["best_epoch"],
            **{f"val_{m}": record[f"best_val_{m}"] for m in METRICS},
            **score_on_test(config, variant, state, datasets),
        })
    missing = [v for v in config.variants if v not in {row["key"] for row in rows}]
    for variant in missing:
        print(f"warning: {variant} has no finished trial with a checkpoint; it is not in the comparison")
    comparison = pd.DataFrame(rows)
    if rows:  # the paper's order, whatever order trials finished in
        comparison = comparison.set_index("key").loc[[v for v in config.variants if v not in missing]].reset_index()
    comparison.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(markdown_table(comparison) if rows else "no variant finished a trial\n")
    return out
