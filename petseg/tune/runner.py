"""The Ray Tune runner shared by the Pets study and head pretraining: check where a search writes, connect
to Ray, build one Tuner with per-variant search and ASHA, run or resume it, save its config and data spec.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import ray
import yaml
from ray import tune

from ..data import DataSpec
from ..errors import StudyError
from .config import StudyConfig, load_config, lr_bounds
from .groups import FixedTrials, VariantScheduler, VariantSearcher
from .trainable import train_variant

METRIC, MODE = "val_weighted_iou", "max"
CONFIG_FILE, DATA_FILE = "petseg_config.yaml", "petseg_data.json"


def experiment_path(config: StudyConfig) -> Path:
    """Ray's experiment folder of this study: <storage_path>/<name>."""
    return Path(config.run.storage_path).expanduser().resolve() / config.run.name


def check_writable(folder: Path, what: str) -> None:
    """Prove a file can be written in `folder`, or raise StudyError naming it; leaves nothing behind."""
    created = next((p for p in [folder, *folder.parents] if p.parent.exists()), folder)
    created = None if created.exists() else created
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".petseg-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise StudyError(f"cannot write to {what} {folder}: {err.strerror}; choose a writable folder") from err
    finally:
        if created is not None and created.is_dir():
            shutil.rmtree(created)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the address, when a Ray cluster's GCS port does not answer."""
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise StudyError(f"cannot reach the Ray cluster at {address} ({err}); check the address and that "
                         "the head node is running (`ray status` on it)") from err


def connect(config: StudyConfig) -> None:
    """Join the cluster at config.run.address, or start a local Ray bound to a loopback address."""
    if not config.run.address:
        ray.init(_node_ip_address=config.run.ray_node_ip, include_dashboard=False, log_to_driver=True)
        return
    try:
        ray.init(address=config.run.address, log_to_driver=True)
    except ConnectionError as err:
        token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        raise StudyError(
            f"the Ray cluster at {config.run.address} refused this driver ({err}). A cluster started with "
            "RAY_AUTH_MODE=token admits only drivers holding its token: set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH=<token file> (or RAY_AUTH_TOKEN) here"
            + (" — a token is set, so check that it is the cluster's" if token else "")) from err


def trial_dirname(trial) -> str:
    """Short trial folder names: the variant and the trial id (the config is in params.json)."""
    return f"{trial.config['variant']}_{trial.trial_id}"


class TrialLines(tune.Callback):
    """One concise line per finished or errored trial."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Print variant, lr, epochs run and the best val weighted mIoU of a finished trial."""
        result = trial.last_result or {}
        print(f"[petseg] done {trial.config['variant']} lr={trial.config['lr']:.3g} "
              f"epochs={result.get('epoch', 0)} best val wIoU={result.get('best_val_weighted_iou', float('nan')):.4f}",
              flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Print which trial errored; the reason is in its error file and all_trials.csv."""
        print(f"[petseg] error {trial.config['variant']} lr={trial.config['lr']:.3g}: see {trial.local_path}",
              flush=True)


def resourced_trainable(config: StudyConfig, data: DataSpec):
    """The trainable with the data spec bound and the per-trial resources attached."""
    return tune.with_resources(tune.with_parameters(train_variant, data=data),
                               {"cpu": config.run.cpus_per_trial, "gpu": config.run.gpus_per_trial})


def trial_slots(config: StudyConfig) -> int:
    """How many trials run at once: config.run.max_concurrent_trials, or what the cluster's resources fit now.

    Tune admits one pending trial at a time for a custom searcher unless told a concurrency, which
    would run the study one trial after another.
    """
    if config.run.max_concurrent_trials:
        return config.run.max_concurrent_trials
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 0) // config.run.cpus_per_trial
    if config.run.gpus_per_trial:
        slots = min(slots, resources.get("GPU", 0) // config.run.gpus_per_trial)
    return max(1, int(slots))


def make_tuner(config: StudyConfig, data: DataSpec, metric: str = METRIC, fixed: list[dict] | None = None
               ) -> tune.Tuner:
    """A Tuner over every selected variant with per-variant search and ASHA, both maximising `metric`.

    With `fixed`, it runs exactly those trial configs instead (no search, no ASHA).
    """
    if fixed is not None:
        searcher, scheduler, trials = FixedTrials(fixed, metric, MODE), None, len(fixed)
    else:
        searcher = VariantSearcher({v: lr_bounds(config, v) for v in config.search.variants}, config.search.num_samples,
                                   metric, MODE, seed=config.search.seed, sampler=config.search.sampler)
        scheduler = VariantScheduler(config.search.variants, metric, MODE, max_t=config.search.max_epochs,
                                     grace_period=config.search.grace_period, reduction_factor=config.search.reduction_factor
                                     ) if config.search.asha else None
        trials = config.search.num_samples * len(config.search.variants)
    return tune.Tuner(
        resourced_trainable(config, data),
        param_space=config.trial_params(),
        tune_config=tune.TuneConfig(metric=metric, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=trials, max_concurrent_trials=trial_slots(config),
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=config.run.name, storage_path=str(Path(config.run.storage_path).expanduser().resolve()),
            failure_config=tune.FailureConfig(max_failures=config.run.max_failures),
            # Two kept: Tune deletes the older checkpoint before it snapshots the experiment, so a
            # driver killed in between leaves a snapshot naming the previous one (see run_search).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # Trials write TensorBoard images into their trial folder: carry them to the storage path.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=[TrialLines()],
        ),
    )


def open_study(config: StudyConfig, resume: bool) -> tuple[StudyConfig, Path]:
    """Check the study can be written, started or resumed; returns its config (saved one on resume) and folder."""
    path = experiment_path(config)
    check_writable(path.parent, "storage path")
    check_writable(Path(config.run.results_dir).expanduser().resolve(), "results folder")
    exists = tune.Tuner.can_restore(str(path))
    if resume and not exists:
        raise StudyError(f"nothing to resume at {path}; run without --resume to start study {config.run.name!r}")
    if exists and not resume:
        raise StudyError(f"study {config.run.name!r} already exists at {path}; pass --resume to continue it "
                         "or --name NEW for a new study")
    return (saved_config(path, config) if resume else config), path


def run_search(config: StudyConfig, data: DataSpec, resume: bool = False, metric: str = METRIC,
               fixed: list[dict] | None = None) -> Path:
    """Run (or resume) the Tune search of `config` on `data`, maximising `metric`; returns Ray's experiment folder."""
    path = experiment_path(config)
    if config.run.address:
        check_reachable(config.run.address)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (path / DATA_FILE).write_text(json.dumps(data.to_json()))
    print("resolved config:\n" + yaml.safe_dump(config.to_dict(), sort_keys=False), flush=True)
    print(f"Ray experiment folder: {path}\nwatch it with: tensorboard --logdir {path}", flush=True)

    # A snapshot of the experiment after every step means it never names a checkpoint older than the
    # previous one, which CheckpointConfig(num_to_keep=2) still keeps: a resume after the driver is
    # killed finds every trial's checkpoint. Tune warns about such frequent snapshots; here they are wanted.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    connect(config)
    started = time.time()
    try:
        if resume:
            tuner = tune.Tuner.restore(str(path), trainable=resourced_trainable(config, data),
                                       resume_unfinished=True)
        else:
            tuner = make_tuner(config, data, metric, fixed)
        tuner.fit()
    finally:
        ray.shutdown()
    print(f"[petseg] search finished in {time.time() - started:.0f} s", flush=True)
    return path




def saved_config(path: Path, requested: StudyConfig) -> StudyConfig:
    """The config a search started with; on resume only where and how it runs (the run part) and the seed
    repeats may change."""
    saved = load_config(path / CONFIG_FILE)
    if requested.search.variants != saved.search.variants and requested.search.variants != StudyConfig().search.variants:
        print(f"warning: --resume keeps the study's variants {saved.search.variants}", file=sys.stderr)
    # Seed repeats may be added to a finished search: they are a second Tune run of their own.
    return StudyConfig(dataclasses.replace(saved.search, seeds=requested.search.seeds), requested.run)


def saved_data(path: Path) -> DataSpec:
    """The data spec a search started with (kept as it was, so a resume trains on the same samples)."""
    return DataSpec.from_json(json.loads((path / DATA_FILE).read_text()))
