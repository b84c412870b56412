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
from ..data.files import verify_contents
from ..errors import SearchInterrupted, StudyError
from . import progress, stopping
from .config import StudyConfig, load_config, resolve_config, search_ranges
from .cluster import check_address, trial_request
from .concurrency import Concurrency, LiveLimit, alive_node_resources
from .cache_plan import CacheGate, CachePlan, cache_items, measured_nodes, study_cache_plan
from .trial_checkpoints import CompactEnded, remove_stand_ins, stand_in_for_lost
from .groups import FixedTrials, SchedulerState, VariantScheduler, VariantSearcher, searchers_run_with
from .saved_state import check_saved_state
from .storage import Location, check_writable
from .study_lock import StudyLock
from .trainable import RunSettings, train_variant

METRIC, MODE = "val_weighted_iou", "max"
# What a finished trial is ranked by, so its search learns that number: the study keeps each trial's best epoch
# (results.best_trials), so for METRIC the best so far; other metrics as their last epoch left them (head
# pretraining exports a trial's last checkpoint). ASHA compares the current epoch's METRIC at its rungs.
RANKED_BY = {METRIC: "best_val_weighted_iou"}
CONFIG_FILE, DATA_FILE = "petseg_config.yaml", "petseg_data.json"


def experiment_path(config: StudyConfig) -> Location:
    """Ray's experiment folder of this study, <storage_path>/<name>, a local folder or an object-store URI."""
    return Location.at(config.run.storage_path) / config.run.name


def trial_dirname(trial) -> str:
    """Short trial folder names: the variant and the trial id (the config is in params.json)."""
    return f"{trial.config['variant']}_{trial.trial_id}"


def trial_settings(config: StudyConfig, plan: CachePlan | None) -> RunSettings:
    """The run settings this run's trials read (see trainable.RunSettings)."""
    run = config.run
    return RunSettings(cpus_per_trial=run.cpus_per_trial, num_workers=run.num_workers, cache_dir=run.cache_dir,
                       cache_budget=run.cache_budget, max_failures=run.max_failures,
                       live_variants=tuple(plan.live_variants) if plan else ())


def resourced_trainable(config: StudyConfig, data: DataSpec, messages, plan: CachePlan | None):
    """The trainable with the data spec, the console queue and this run's settings bound and the per-trial
    resources attached. Bound anew on resume (not kept in the trials' saved configs), so a resumed study's
    trials, restored or new, run with the resources and cache settings it was resumed with."""
    return tune.with_resources(
        tune.with_parameters(train_variant, data=data, messages=messages, run=trial_settings(config, plan)),
        {"cpu": config.run.cpus_per_trial, "gpu": config.run.gpus_per_trial})


def planned_trials(config: StudyConfig, fixed: list[dict] | None) -> dict[str, int]:
    """variant -> trials the search runs: the fixed configs' count, else the search's budget per variant."""
    variants = config.search.variants
    return ({v: sum(c["variant"] == v for c in fixed) for v in variants} if fixed is not None
            else dict.fromkeys(variants, config.search.num_samples))


def make_tuner(config: StudyConfig, data: DataSpec, messages, metric: str = METRIC, fixed: list[dict] | None = None,
               plan: CachePlan | None = None) -> tune.Tuner:
    """A Tuner over every selected variant with per-variant search and ASHA, both maximising `metric`.

    With `fixed`, it runs exactly those trial configs instead (no search, no ASHA). With a cache `plan`,
    trials start backbone by backbone so the feature caches stay within its budget, and a backbone's
    caches are deleted once its variants are done; the plan's live variants run without a cache.
    """
    search = config.search
    planned = planned_trials(config, fixed)
    gate = CacheGate(plan, planned) if plan is not None else None
    if fixed is not None:
        searcher, scheduler = FixedTrials(fixed, metric, MODE, gate=gate), None
    else:
        searcher = VariantSearcher({v: search_ranges(config, v) for v in search.variants}, search.num_samples, metric,
                                   MODE, seed=search.seed, sampler=search.sampler, gate=gate,
                                   ranked_by=RANKED_BY.get(metric, metric))
        scheduler = VariantScheduler(search.variants, metric, MODE, max_t=search.max_epochs,
                                     grace_period=search.grace_period, reduction_factor=search.reduction_factor
                                     ) if search.asha else None
    storage = Location.at(config.run.storage_path)
    callbacks = [progress.TrialLines(config), CompactEnded(), *([SchedulerState(scheduler)] if scheduler else [])]
    return tune.Tuner(
        resourced_trainable(config, data, messages, plan),
        param_space=config.trial_params(),
        tune_config=tune.TuneConfig(metric=metric, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    # Trials at once are the searcher's to bound (run_search): Tune's own
                                    # limit would be pickled with the study and kept on resume.
                                    num_samples=sum(planned.values()),
                                    trial_dirname_creator=trial_dirname,
                                    # A new trial takes over a finished trial's worker process instead of
                                    # starting its own (Python, torch and petseg imported again): seconds
                                    # per trial, a large share of a short trial's wall time.
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            # Tune writes through the filesystem petseg's own files go through (storage.Location).
            name=config.run.name, storage_path=storage.path, storage_filesystem=storage.filesystem,
            # Tune's retries are for lost workers only: a trial's own errors are retried inside it (max_failures).
            failure_config=tune.FailureConfig(max_failures=config.run.max_worker_losses),
            # One kept: Tune then snapshots the experiment right after each trial checkpoint (it forces a
            # snapshot once a trial has saved num_to_keep since the last), besides its own timed ones, so a
            # driver killed later resumes every trial from its last epoch. See README (Resume) for the
            # moment between Tune deleting the previous checkpoint and that snapshot reaching storage.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # Trials write TensorBoard images into their trial folder: carry them to the storage path.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=callbacks,
            # Trial stdout and stderr go to files in each trial's folder; the console gets petseg's lines.
            log_to_file=True, verbose=2 if config.run.verbose else 0,
        ),
    )


def concurrency(config: StudyConfig) -> Concurrency:
    """This run's bound on trials started at once (see tune.concurrency)."""
    run = config.run
    return Concurrency(trial_request(config), run.max_pending_trials, run.max_concurrent_trials, bool(run.address))


def open_study(config: StudyConfig, resume: bool) -> tuple[StudyConfig, Location]:
    """Check the study can be written, started or resumed; returns its config (saved one on resume) and folder."""
    verify_contents(config.run.verify_data)  # the driver's own scans and fingerprints, before any is taken
    path = experiment_path(config)
    check_writable(Location.at(config.run.storage_path), "storage path")
    check_writable(Path(config.run.results_dir).expanduser().resolve(), "results folder")
    check_writable(Path(config.run.cache_dir).expanduser().resolve(), "cache dir (--cache-dir)")
    if config.run.address:
        check_address(config.run.address)  # the handshake, before the dataset is scanned or a file written
    # A study another driver runs is named as such, before whether it may be started or resumed.
    StudyLock(path, f"study {config.run.name!r}").check_free()
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
    Ray's experiment folder. Raises SearchInterrupted when it stopped before every trial finished (Ctrl-C, SIGTERM
    or SIGHUP, see petseg.tune.stopping).

    Ctrl-C is Tune's own stop: it saves the experiment one last time and ends the trials (a second Ctrl-C skips
    that save and raises KeyboardInterrupt). On resume, this run's settings (resources, cache folder and budget)
    apply to every trial still to run.
    """
    data = dataclasses.replace(data, verify_data=config.run.verify_data)  # this run's, also on resume
    path = experiment_path(config)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (path / DATA_FILE).write_text(json.dumps(data.to_json()))
    progress.print_start(config, path, metric)
    # Tune warns when trial checkpoints force snapshots seconds apart; with num_to_keep=1 that is by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not config.run.verbose:
        # Tune's newer console prints its own summary box and a TensorBoard hint for another folder
        # whatever the verbosity; its classic reporter at verbosity 0 leaves the console to petseg.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = time.time()
    # Trials' lines for this console, from any node; kept on the driver's node, which lives as long as the driver.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    messages = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    progress.attach(messages, config)
    plan = study_cache_plan(config, data.size, *cache_items(data), nodes=measured_nodes(config))
    if plan is not None:
        progress.print_plan(plan)
    bound = concurrency(config)
    print(f"[petseg] {bound.describe(alive_node_resources())}", flush=True)
    # Tune asks the searcher for trials while fewer than this many wait for resources; the searcher's limit is
    # the real bound, so Tune's must not be lower (its default for a custom searcher is one).
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(sum(planned_trials(config, fixed).values()), 1))
    if resume:
        check_saved_state(path, config.run.name)
        stand_in_for_lost(path)
        tuner = tune.Tuner.restore(path.path, trainable=resourced_trainable(config, data, messages, plan),
                                   resume_unfinished=True, resume_errored=False, storage_filesystem=path.filesystem)
    else:
        tuner = make_tuner(config, data, messages, metric, fixed, plan)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with searchers_run_with(plan, LiveLimit(bound)), stopping.search_running():
            tuner.fit()
    finally:
        # Tune leaves its Ctrl-C handler installed after fit, where it would swallow a Ctrl-C during the report.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        remove_stand_ins(path)
    progress.drain(messages)
    planned = sum(planned_trials(config, fixed).values())
    finished = ended_trials(path)
    if finished < planned:
        raise SearchInterrupted(f"search {config.run.name!r} stopped with {finished} of its {planned} trials finished; "
                                f"its state is saved in {path}", stopping.last_signal())
    print(f"[petseg] search finished in {time.time() - started:.0f} s", flush=True)
    return path


def ended_trials(path: Location) -> int:
    """How many trials of the experiment saved at `path` ended (finished or failed). A stopped search saves the
    trials it interrupted as running or pending, and a resume continues them."""
    experiment = tune.ExperimentAnalysis(path.path, storage_filesystem=path.filesystem)
    return sum(trial.status in ("TERMINATED", "ERROR") for trial in experiment.trials)


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
