"""Reading a finished (or interrupted) Tune search: one record per trial, how it ended, its checkpointed
state, and each variant's best trial; shared by the study's seed repeats, the report and head pretraining.

Only Tune's public surface is read: ExperimentAnalysis (trials, trial_dataframes) and each Trial's status,
config, last_result, checkpoint, num_failures and get_error().
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow.fs
from ray import tune

from ..metrics import metric_names
from ..models.checkpoints import load_trial_state
from ..train.trial_spec import Searched
from .groups import ended_in_error


def ended_by(trial, max_epochs: int) -> str:
    """Why a trial stopped: error, early stopping, max epochs, ASHA, or its unfinished status."""
    result = trial.last_result or {}
    if trial.status == "ERROR" or ended_in_error(result):
        return "error"
    if trial.status != "TERMINATED":
        return trial.status.lower()
    if result.get("early_stopped"):
        return "early stopping"
    return "max epochs" if result.get("epoch", 0) >= max_epochs else "ASHA"


def _error_reason(trial) -> str:
    result = trial.last_result or {}
    if result.get("nonfinite_loss"):
        return f"NonFiniteLossError: {result['nonfinite_loss']}"
    if result.get("trial_error"):
        return result["trial_error"]
    if trial.status != "ERROR":
        return ""
    lines = [line.strip() for line in str(trial.get_error() or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _lines(filesystem: pyarrow.fs.FileSystem, path: str) -> str:
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode("utf-8", errors="replace")
    except OSError:  # gone or unreadable: nothing survives there
        return ""


def surviving_history(filesystem: pyarrow.fs.FileSystem, trial_folder: str) -> tuple[pd.DataFrame, str]:
    """What survives of a trial's reported rows in its folder, and from which file: the whole JSON lines of
    result.json or progress.csv, whichever holds more epochs (empty and "" when neither holds any)."""
    rows = []
    for line in _lines(filesystem, f"{trial_folder}/result.json").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a kill, or damaged: the others still count
            continue
    from_json = pd.json_normalize(rows, sep="/") if rows else pd.DataFrame()
    try:
        from_csv = pd.read_csv(io.StringIO(_lines(filesystem, f"{trial_folder}/progress.csv")))
    except (ValueError, pd.errors.ParserError):  # empty or damaged
        from_csv = pd.DataFrame()
    candidates = [(frame, name) for frame, name in ((from_json, "result.json"), (from_csv, "progress.csv"))
                  if "epoch" in frame and "val_weighted_iou" in frame]
    if not candidates:
        return pd.DataFrame(), ""
    return max(candidates, key=lambda pair: (pair[0]["epoch"].nunique(), pair[1] == "result.json"))


def trial_history(experiment: tune.ExperimentAnalysis, trial, filesystem: pyarrow.fs.FileSystem
                  ) -> tuple[pd.DataFrame | None, str]:
    """A trial's reported rows and a note on them: "" as Tune read them; "recovered from FILE" when Tune's reading
    lacks epochs the trial reported (a result.json emptied or cut by a kill, or damaged) and its folder has
    them; "lost" when no file holds them."""
    history = experiment.trial_dataframes.get(trial.trial_id)
    reported = int((trial.last_result or {}).get("epoch", 0))
    read = int(history["epoch"].max()) if history is not None and "epoch" in history and len(history) else 0
    if read >= reported:
        return history, ""
    recovered, source = surviving_history(filesystem, trial.path)
    if source and int(recovered["epoch"].max()) > read:
        return recovered, f"recovered from {source}"
    return history, "lost"


def trial_histories(experiment: tune.ExperimentAnalysis, filesystem: pyarrow.fs.FileSystem | None = None
                    ) -> dict[str, tuple[pd.DataFrame | None, str]]:
    """trial id -> (reported rows, note) of every trial (trial_history); `filesystem`: the one the experiment is
    stored on (default the local one)."""
    filesystem = filesystem or pyarrow.fs.LocalFileSystem()
    return {trial.trial_id: trial_history(experiment, trial, filesystem) for trial in experiment.trials}


def trial_records(experiment: tune.ExperimentAnalysis, max_epochs: int,
                  filesystem: pyarrow.fs.FileSystem | None = None,
                  histories: dict[str, tuple[pd.DataFrame | None, str]] | None = None) -> pd.DataFrame:
    """One row per trial: variant, lr (and each other searched value, where the study searched it), how they were
    chosen, seed, epochs run, how it ended, best val metrics,
    time, node, error, and whether its reported rows had to be recovered (`history`; see trial_history).
    `histories`: trial_histories(experiment, filesystem), when the caller has them."""
    histories = histories if histories is not None else trial_histories(experiment, filesystem)
    rows = []
    for trial in experiment.trials:
        history, note = histories[trial.trial_id]
        best = {}
        if history is not None and "val_weighted_iou" in history and history["val_weighted_iou"].notna().any():
            best = history.loc[history["val_weighted_iou"].idxmax()].to_dict()
        result = trial.last_result or {}
        rows.append({
            "trial_id": trial.trial_id,
            "variant": trial.config["variant"],
            **Searched.from_json(trial.config).given(),  # lr, and any other value the study searched
            "suggested_by": trial.config.get("suggested_by", ""),  # random, gp, tpe or fixed (see tune.groups)
            "seed": trial.config["seed"],
            "epochs": int(result.get("epoch", 0)),
            "ended_by": ended_by(trial, max_epochs),
            "best_epoch": int(best.get("epoch", 0)),
            **{f"best_val_{m}": best.get(f"val_{m}", math.nan) for m in metric_names()},
            "best_val_loss": best.get("val_loss", math.nan),
            "seconds": float(result.get("time_total_s", 0.0)),  # the trial's own training time
            "failures": int(result.get("failures", 0)),  # the trial's own errors (retried or final)
            "worker_losses": trial.num_failures,  # workers lost under it (a node died), each restarted elsewhere
            "node": result.get("node", ""),
            "features": result.get("features", ""),
            # The caches it read (folder names, the cache keys; each node has its own copy) and the seconds it spent
            # building any of them, so the report can share a cache's cost between the variants reading it.
            "feature_caches": ";".join(Path(folder).name for folder in result.get("feature_caches", [])),
            "cache_build_s": float(result.get("cache_build_s", 0.0)),
            "gpus": result.get("gpus", ""),  # CUDA_VISIBLE_DEVICES Ray gave the trial  # "cached" or "live": where the head's inputs came from
            "error": _error_reason(trial),
            "history": note,
        })
    return pd.DataFrame(rows)


def latest_state(trial) -> dict | None:
    """The training state in a trial's latest checkpoint, or None if it never checkpointed."""
    return load_trial_state(trial.checkpoint)


def best_trials(experiment: tune.ExperimentAnalysis, records: pd.DataFrame) -> dict[str, tuple[dict, pd.Series]]:
    """variant -> (checkpointed state, record) of its trial with the highest val weighted mIoU."""
    by_id = {t.trial_id: t for t in experiment.trials}
    best = {}
    scored = records.dropna(subset=["best_val_weighted_iou"]).sort_values("best_val_weighted_iou", ascending=False)
    for _, record in scored.iterrows():
        if record["variant"] not in best and (state := latest_state(by_id[record["trial_id"]])) is not None:
            best[record["variant"]] = (state, record)
    return best


@dataclass
class CheckpointResult:
    """A trial's checkpoint and the metrics it reported with it."""

    checkpoint: tune.Checkpoint
    metrics: dict


def latest_checkpoint_result(experiment: tune.ExperimentAnalysis, trial) -> CheckpointResult | None:
    """A trial's latest checkpoint with the result row that reported it (matched by the checkpoint's folder name,
    which Tune writes into that row as `checkpoint_dir_name`), or None if it never checkpointed."""
    history = experiment.trial_dataframes.get(trial.trial_id)
    if trial.checkpoint is None or history is None or "checkpoint_dir_name" not in history:
        return None
    rows = history[history["checkpoint_dir_name"] == PurePosixPath(trial.checkpoint.path).name]
    return None if rows.empty else CheckpointResult(trial.checkpoint, rows.iloc[-1].to_dict())


def best_last_checkpoints(experiment: tune.ExperimentAnalysis, metric: str) -> dict:
    """variant -> (trial, checkpoint result) whose last checkpoint scores the highest `metric`."""
    best = {}
    for trial in experiment.trials:
        result = latest_checkpoint_result(experiment, trial)
        if result is None or not math.isfinite(result.metrics.get(metric, math.nan)):
            continue
        variant = trial.config["variant"]
        if variant not in best or result.metrics[metric] > best[variant][1].metrics[metric]:
            best[variant] = (trial, result)
    return best
