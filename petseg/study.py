"""run_study: one Ray Tune run over all variants, fair per variant, then the comparison tables."""
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

from . import analysis
from .config import (ConfigError, StudyConfig, lr_bounds, missing_heads, missing_heads_message,
                     resolve_head_weights)
from .data import DatasetError, compute_mean_std, find_samples, make_split, scan_samples, split_samples
from .dataspec import ensure_dataset
from .models import WeightsUnavailableError
from .trainable import train_variant
from .training import build_seeded_model
from .tune_groups import FixedTrials, VariantScheduler, VariantSearcher

METRIC, MODE = "val_weighted_iou", "max"
CONFIG_FILE, DATA_FILE = "petseg_config.yaml", "petseg_data.json"


class StudyError(RuntimeError):
    """The study cannot start or continue; the message says what to change."""


def experiment_path(config: StudyConfig) -> Path:
    """Ray's experiment folder of this study: <storage_path>/<name>."""
    return Path(config.storage_path).expanduser().resolve() / config.name


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


def dataset_root(config: StudyConfig) -> Path:
    """The dataset root: generated under the cache dir (smoke preset), or config.data_root."""
    if config.synthetic_images:
        return Path(config.cache_dir).expanduser().resolve() / "synthetic" / (
            f"pets-{config.synthetic_images}-{config.image_size}-{config.seed}")
    if config.data_root is None:
        raise StudyError("no dataset: pass --data-root DIR (the folder holding oxford-iiit-pet/; add "
                         "--download to fetch it) or use --preset smoke for a generated dataset")
    root = Path(config.data_root).expanduser().resolve()
    if not root.is_dir() and not config.download:
        raise StudyError(f"data root {root} does not exist; pass the folder holding oxford-iiit-pet/ "
                         "or add --download to fetch the dataset there")
    return root


def prepare_data(config: StudyConfig, saved: Path | None = None) -> dict:
    """The data spec every trial reads: root, split (reused from `saved` on resume), size, statistics."""
    if saved is not None and saved.is_file():
        return json.loads(saved.read_text())
    spec = {"root": str(dataset_root(config)), "download": config.download, "synthetic": None,
            "size": config.image_size, "augment": config.augment, "seed": config.seed,
            "decoded_cache_dir": config.cache_dir if config.decoded_cache else None}
    if config.synthetic_images:
        spec["synthetic"] = {"num_images": config.synthetic_images, "size": config.image_size, "seed": config.seed}
    try:
        samples = find_samples(ensure_dataset(spec), download=config.download)
        split = make_split(samples, config.seed)
        parts = split_samples(samples, split)
        _, problems = scan_samples([s for part in parts.values() for s in part], config.cache_dir)
        if problems:
            listing = "\n  ".join(message for _, message in problems)
            raise DatasetError(f"{len(problems)} unusable file(s) in {spec['root']}; fix or remove them "
                               f"(python -m petseg.data --root {spec['root']} lists them):\n  {listing}")
        mean, std = compute_mean_std(parts["train"], config.image_size, config.cache_dir)
    except DatasetError as err:
        raise StudyError(str(err)) from err
    return {**spec, "split": split, "mean": list(mean), "std": list(std)}


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
    """Join the cluster at config.address, or start a local Ray bound to a loopback address."""
    if not config.address:
        ray.init(_node_ip_address=config.ray_node_ip, include_dashboard=False, log_to_driver=True)
        return
    try:
        ray.init(address=config.address, log_to_driver=True)
    except ConnectionError as err:
        token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        raise StudyError(
            f"the Ray cluster at {config.address} refused this driver ({err}). A cluster started with "
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


def resourced_trainable(config: StudyConfig, data: dict):
    """The trainable with the data spec bound and the per-trial resources attached."""
    return tune.with_resources(tune.with_parameters(train_variant, data=data),
                               {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})


def trial_slots(config: StudyConfig) -> int:
    """How many trials run at once: config.max_concurrent_trials, or what the cluster's resources fit now.

    Tune admits one pending trial at a time for a custom searcher unless told a concurrency, which
    would run the study one trial after another.
    """
    if config.max_concurrent_trials:
        return config.max_concurrent_trials
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 0) // config.cpus_per_trial
    if config.gpus_per_trial:
        slots = min(slots, resources.get("GPU", 0) // config.gpus_per_trial)
    return max(1, int(slots))


def make_tuner(config: StudyConfig, data: dict, metric: str = METRIC, fixed: list[dict] | None = None
               ) -> tune.Tuner:
    """A Tuner over every selected variant with per-variant search and ASHA, both maximising `metric`.

    With `fixed`, it runs exactly those trial configs instead (no search, no ASHA).
    """
    if fixed is not None:
        searcher, scheduler, trials = FixedTrials(fixed, metric, MODE), None, len(fixed)
    else:
        searcher = VariantSearcher({v: lr_bounds(config, v) for v in config.variants}, config.num_samples,
                                   metric, MODE, seed=config.seed, sampler=config.sampler)
        scheduler = VariantScheduler(config.variants, metric, MODE, max_t=config.max_epochs,
                                     grace_period=config.grace_period, reduction_factor=config.reduction_factor
                                     ) if config.asha else None
        trials = config.num_samples * len(config.variants)
    return tune.Tuner(
        resourced_trainable(config, data),
        param_space=config.to_dict(),
        tune_config=tune.TuneConfig(metric=metric, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=trials, max_concurrent_trials=trial_slots(config),
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=config.name, storage_path=str(Path(config.storage_path).expanduser().resolve()),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
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
    check_writable(Path(config.results_dir).expanduser().resolve(), "results folder")
    exists = tune.Tuner.can_restore(str(path))
    if resume and not exists:
        raise StudyError(f"nothing to resume at {path}; run without --resume to start study {config.name!r}")
    if exists and not resume:
        raise StudyError(f"study {config.name!r} already exists at {path}; pass --resume to continue it "
                         "or --name NEW for a new study")
    return (_saved_config(path, config) if resume else config), path


def run_search(config: StudyConfig, data: dict, resume: bool = False, metric: str = METRIC,
               fixed: list[dict] | None = None) -> Path:
    """Run (or resume) the Tune search of `config` on `data`, maximising `metric`; returns Ray's experiment folder."""
    path = experiment_path(config)
    if config.address:
        check_reachable(config.address)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (path / DATA_FILE).write_text(json.dumps(data))
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


def run_study(config: StudyConfig, resume: bool = False) -> Path:
    """Run (or resume) the study and write results/<name>/; returns that folder."""
    config, path = open_study(config, resume)
    if not resume:  # found once here, so every trial and the analysis use the same files (a resume keeps them)
        config = dataclasses.replace(config, head_weights=resolve_head_weights(config))
        missing = missing_heads(config, config.head_weights)
        if missing and not config.allow_random_heads:
            raise StudyError(missing_heads_message(config, missing))
    check_head_files(config)
    data = prepare_data(config, path / DATA_FILE if resume else None)
    run_search(config, data, resume)
    seeds_path = None
    if config.seeds:
        seeds_config = seeds_study(config)
        seeds_path = experiment_path(seeds_config)
        run_search(seeds_config, data, tune.Tuner.can_restore(str(seeds_path)), fixed=seed_trials(config, path))
    results = analysis.write_report(config, data, path, seeds_path)
    print((results / "comparison.md").read_text())
    return results


def check_head_files(config: StudyConfig) -> None:
    """Load every head file into its variant once, here in the driver, before any trial: a file that is
    unreadable, holds no such head or was trained on another backbone stops the study, naming it."""
    for variant, path in config.head_weights.items():
        try:
            build_seeded_model(variant, config.pretrained, config.seed, head_weights=path)
        except WeightsUnavailableError as err:
            raise StudyError(f"head file for {variant}: {err}") from err


def seeds_study(config: StudyConfig) -> StudyConfig:
    """The config of a study's seed repeats: its own Ray experiment, <name>-seeds, with no ASHA."""
    return dataclasses.replace(config, name=f"{config.name}-seeds", asha=False)


def seed_trials(config: StudyConfig, path: Path) -> list[dict]:
    """Each variant's best learning rate (by val weighted mIoU) retrained with seeds seed+1 .. seed+N."""
    records = analysis.trial_records(tune.ExperimentAnalysis(str(path)), config.max_epochs)
    scored = records.dropna(subset=["best_val_weighted_iou"])
    best = scored.loc[scored.groupby("variant")["best_val_weighted_iou"].idxmax()]
    return [{"variant": row.variant, "lr": float(row.lr), "seed": config.seed + k}
            for row in best.itertuples() for k in range(1, config.seeds + 1)]


def _saved_config(path: Path, requested: StudyConfig) -> StudyConfig:
    """The config a study started with; on resume only where and how it runs may change."""
    saved = StudyConfig(**yaml.safe_load((path / CONFIG_FILE).read_text()))
    for name in ("address", "cpus_per_trial", "gpus_per_trial", "results_dir", "seeds"):
        setattr(saved, name, getattr(requested, name))
    if requested.variants != saved.variants and requested.variants != StudyConfig().variants:
        print(f"warning: --resume keeps the study's variants {saved.variants}", file=sys.stderr)
    return saved


__all__ = ["ConfigError", "StudyError", "experiment_path", "open_study", "run_search", "run_study"]
