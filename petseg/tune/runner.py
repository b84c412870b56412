"""The Ray Tune runner shared by the Pets study and head pretraining: check where a search writes, connect
to Ray, build one Tuner with per-variant search and ASHA, run or resume it, save its config and data spec.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.util.queue import Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..data import DataSpec
from ..errors import SearchInterrupted, StudyError
from . import progress
from .config import StudyConfig, load_config, lr_bounds, resolve_config
from .cluster import check_address, trial_slots
from .cache_plan import CacheGate, CachePlan, cache_items, study_cache_plan
from .groups import FixedTrials, SchedulerState, VariantScheduler, VariantSearcher
from .storage import Location, check_writable
from .trainable import train_variant

METRIC, MODE = "val_weighted_iou", "max"
CONFIG_FILE, DATA_FILE = "petseg_config.yaml", "petseg_data.json"
_ctrl_c = threading.Event()  # set by Ctrl-C during a search, read by StopOnCtrlC and run_search


class StopOnCtrlC(tune.Callback):
    """Ends the search at the next step after Ctrl-C, even where Ray's own code swallowed the KeyboardInterrupt."""

    def on_step_begin(self, iteration, trials, **info):
        """Raise KeyboardInterrupt once Ctrl-C was pressed."""
        if _ctrl_c.is_set():
            raise KeyboardInterrupt


def _on_ctrl_c(signum, frame):
    _ctrl_c.set()
    raise KeyboardInterrupt


def experiment_path(config: StudyConfig) -> Location:
    """Ray's experiment folder of this study, <storage_path>/<name>, a local folder or an object-store URI."""
    return Location.at(config.run.storage_path) / config.run.name


def trial_dirname(trial) -> str:
    """Short trial folder names: the variant and the trial id (the config is in params.json)."""
    return f"{trial.config['variant']}_{trial.trial_id}"


def resourced_trainable(config: StudyConfig, data: DataSpec, messages):
    """The trainable with the data spec and the console queue bound and the per-trial resources attached."""
    return tune.with_resources(tune.with_parameters(train_variant, data=data, messages=messages),
                               {"cpu": config.run.cpus_per_trial, "gpu": config.run.gpus_per_trial})


def make_tuner(config: StudyConfig, data: DataSpec, messages, metric: str = METRIC, fixed: list[dict] | None = None,
               plan: CachePlan | None = None) -> tune.Tuner:
    """A Tuner over every selected variant with per-variant search and ASHA, both maximising `metric`.

    With `fixed`, it runs exactly those trial configs instead (no search, no ASHA). With a cache `plan`,
    trials start backbone by backbone so the feature caches stay within its budget, and a backbone's
    caches are deleted once its variants are done; the plan's live variants run without a cache.
    """
    search = config.search
    planned = ({v: sum(c["variant"] == v for c in fixed) for v in search.variants} if fixed is not None
               else dict.fromkeys(search.variants, search.num_samples))
    gate = CacheGate(plan, planned) if plan is not None else None
    if fixed is not None:
        searcher, scheduler = FixedTrials(fixed, metric, MODE, gate=gate), None
    else:
        searcher = VariantSearcher({v: lr_bounds(config, v) for v in search.variants}, search.num_samples, metric,
                                   MODE, seed=search.seed, sampler=search.sampler, gate=gate)
        scheduler = VariantScheduler(search.variants, metric, MODE, max_t=search.max_epochs,
                                     grace_period=search.grace_period, reduction_factor=search.reduction_factor
                                     ) if search.asha else None
    storage = Location.at(config.run.storage_path)
    callbacks = [progress.TrialLines(config), StopOnCtrlC(), *([SchedulerState(scheduler)] if scheduler else [])]
    return tune.Tuner(
        resourced_trainable(config, data, messages),
        param_space={**config.trial_params(), "live_variants": plan.live_variants if plan else []},
        tune_config=tune.TuneConfig(metric=metric, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=sum(planned.values()), max_concurrent_trials=trial_slots(config),
                                    trial_dirname_creator=trial_dirname,
                                    # A new trial takes over a finished trial's worker process instead of
                                    # starting its own (Python, torch and petseg imported again): seconds
                                    # per trial, a large share of a short trial's wall time.
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            # Tune writes through the filesystem petseg's own files go through (storage.Location).
            name=config.run.name, storage_path=storage.path, storage_filesystem=storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=config.run.max_failures),
            # Two kept: Tune deletes the older checkpoint before it snapshots the experiment, so a
            # driver killed in between leaves a snapshot naming the previous one (see run_search).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # Trials write TensorBoard images into their trial folder: carry them to the storage path.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=callbacks,
            # Trial stdout and stderr go to files in each trial's folder; the console gets petseg's lines.
            log_to_file=True, verbose=2 if config.run.verbose else 0,
        ),
    )


def open_study(config: StudyConfig, resume: bool) -> tuple[StudyConfig, Location]:
    """Check the study can be written, started or resumed; returns its config (saved one on resume) and folder."""
    path = experiment_path(config)
    check_writable(Location.at(config.run.storage_path), "storage path")
    check_writable(Path(config.run.results_dir).expanduser().resolve(), "results folder")
    check_writable(Path(config.run.cache_dir).expanduser().resolve(), "cache dir (--cache-dir)")
    if config.run.address:
        check_address(config.run.address)  # the handshake, before the dataset is scanned or a file written
    exists = tune.Tuner.can_restore(path.path, storage_filesystem=path.filesystem)
    if resume and not exists:
        raise StudyError(f"nothing to resume at {path}; run without --resume to start study {config.run.name!r}")
    if exists and not resume:
        raise StudyError(f"study {config.run.name!r} already exists at {path}; pass --resume to continue it "
                         "or --name NEW for a new study")
    return (saved_config(path, config) if resume else config), path


def run_search(config: StudyConfig, data: DataSpec, resume: bool = False, metric: str = METRIC,
               fixed: list[dict] | None = None) -> Location:
    """Run (or resume) the Tune search of `config` on `data`, maximising `metric`, on the connected Ray; returns
    Ray's experiment folder. Raises SearchInterrupted when it stopped before every trial finished (Ctrl-C)."""
    path = experiment_path(config)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (path / DATA_FILE).write_text(json.dumps(data.to_json()))
    progress.print_start(config, path, metric)
    # A snapshot of the experiment after every step means it never names a checkpoint older than the
    # previous one, which CheckpointConfig(num_to_keep=2) still keeps: a resume after the driver is
    # killed finds every trial's checkpoint. Tune warns about such frequent snapshots; here they are wanted.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ctrl-C raises KeyboardInterrupt here instead of Tune's graceful stop, which marks the trials it stops
    # as finished; the snapshot taken after every step then lets --resume continue them from their checkpoints.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if not config.run.verbose:
        # Tune's newer console prints its own summary box and a TensorBoard hint for another folder
        # whatever the verbosity; its classic reporter at verbosity 0 leaves the console to petseg.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = time.time()
    # Trials' lines for this console, from any node; kept on the driver's node, which lives as long as the driver.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    messages = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    progress.attach(messages)
    if resume:
        tuner = tune.Tuner.restore(path.path, trainable=resourced_trainable(config, data, messages),
                                   resume_unfinished=True, resume_errored=False, storage_filesystem=path.filesystem)
    else:
        plan = study_cache_plan(config, data.size, *cache_items(data))
        if plan is not None:
            progress.print_plan(plan)
        tuner = make_tuner(config, data, messages, metric, fixed, plan)
    _ctrl_c.clear()
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGINT, _on_ctrl_c) if main_thread else None
    try:
        grid = tuner.fit()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    progress.drain(messages)
    planned = len(fixed) if fixed is not None else config.search.num_samples * len(config.search.variants)
    finished = grid.num_terminated + grid.num_errors
    if finished < planned or _ctrl_c.is_set():
        raise SearchInterrupted(f"search {config.run.name!r} stopped with {finished} of its {planned} trials finished; "
                                f"its state is saved in {path}")
    print(f"[petseg] search finished in {time.time() - started:.0f} s", flush=True)
    return path


def saved_config(path: Location, requested: StudyConfig) -> StudyConfig:
    """The config a search started with, found where `requested` points: on resume its saved search settings
    win (each one asked for differently is named in a warning), while where and how it runs (the run part)
    and the seed repeats come from `requested`."""
    saved = load_config(path / CONFIG_FILE)
    ignored = ignored_settings(saved, requested)
    if ignored:
        print(f"warning: --resume continues the search as it was saved in {path / CONFIG_FILE}; ignored: "
              f"{'; '.join(ignored)}", file=sys.stderr)
    # Seed repeats may be added to a finished search: they are a second Tune run of their own.
    return StudyConfig(dataclasses.replace(saved.search, seeds=requested.search.seeds), requested.run)


def ignored_settings(saved: StudyConfig, requested: StudyConfig) -> list[str]:
    """'field asked (saved value)' for each search setting the user gave (differs from its preset's default)
    that differs from the saved one."""
    asked = dataclasses.asdict(requested.search)
    default = dataclasses.asdict(resolve_config(requested.search.preset).search)
    kept = dataclasses.asdict(saved.search)
    return [f"{name} {value!r} (the study's: {kept[name]!r})" for name, value in asked.items()
            if name != "seeds" and value != default[name] and value != kept[name]]


def saved_data(path: Location) -> DataSpec:
    """The data spec a search started with (kept as it was, so a resume trains on the same samples)."""
    return DataSpec.from_json(json.loads((path / DATA_FILE).read_text()))
