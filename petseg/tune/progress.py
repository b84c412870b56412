"""What a search prints on the console: the plan in a few lines, then one line per trial epoch and per
finished trial, and a note while trials wait for resources. Ray's and Tune's own output only with -v."""
from __future__ import annotations

import time

import optuna
from ray import tune
from ray.exceptions import RayError

from ..train.trial_spec import Searched
from .config import StudyConfig
from .groups import ended_in_error
from .search_space import SAMPLERS, random_start
from .storage import Location

SHORT = {"val_weighted_iou": "wIoU", "val_mean_iou": "mIoU"}
WAIT_NOTE_S = 60  # how long trials may all be pending before the console says they are waiting
# The queue trials send their lines through and what a trial asks of a node, for this driver session; a
# restored search's callbacks come from its pickle, so they find both here rather than holding them.
_console = {"messages": None, "request": ""}


def attach(messages, config: StudyConfig) -> None:
    """Print the lines trials put on `messages` (a Ray queue) during this driver session, and name the resources
    a trial of `config` asks for while trials wait."""
    _console["messages"] = messages
    _console["request"] = f"{config.run.cpus_per_trial:g} CPU" + (
        f" and {config.run.gpus_per_trial:g} GPU" if config.run.gpus_per_trial else "")


def print_start(config: StudyConfig, path: Location, metric: str) -> None:
    """The resolved plan in a few lines, where the full config is saved and how to watch the trials."""
    search, run = config.search, config.run
    asha = (f"ASHA per variant (grace {search.grace_period}, factor {search.reduction_factor})" if search.asha
            else "no ASHA")
    where = f"the Ray cluster at {run.address}" if run.address else "a local Ray"
    print(f"[petseg] {run.name}: {len(search.variants)} variant(s) x {search.num_samples} learning rates "
          f"({SAMPLERS[search.sampler]}, {random_start(search.num_samples, search.sampler)}), {asha}, "
          f"at most {search.max_epochs} epochs, "
          f"{search.image_size} px, batch {search.batch_size}, seed {search.seed}, ranking by val {SHORT.get(metric, metric)}",
          flush=True)
    print(f"[petseg] {run.cpus_per_trial:g} CPU / {run.gpus_per_trial:g} GPU per trial on {where}; full config in "
          f"{path / 'petseg_config.yaml'}; trial logs and checkpoints in {path}", flush=True)
    print(f"[petseg] watch the trials: tensorboard --logdir {path}", flush=True)
    if not run.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" line per variant otherwise


def print_plan(plan) -> None:
    """The feature-cache plan: each backbone's cache in the order its variants run, and the peak within the budget."""
    print("[petseg] feature caches, backbone by backbone:", flush=True)
    for line in plan.describe():
        print(f"[petseg]   {line}", flush=True)


def ended_how(result: dict, max_epochs: int) -> str:
    """Why a finished trial stopped, from its last result: its own error, early stopping, the epoch limit, or ASHA."""
    if result.get("nonfinite_loss"):
        return "loss became non-finite"
    if result.get("trial_error"):
        return f"failed {result.get('failures', 0)} time(s), the last with {result['trial_error']}"
    if result.get("early_stopped"):
        return "early stopping"
    return "max epochs" if result.get("epoch", 0) >= max_epochs else "stopped by ASHA"


class TrialLines(tune.Callback):
    """One line per trial epoch, per finished and per errored trial, and a note while trials wait for nodes."""

    def __init__(self, config: StudyConfig):
        self.max_epochs = config.search.max_epochs
        self.drained = 0.0
        self.waiting_since: float | None = None
        self.noted = 0.0

    def _name(self, trial) -> str:
        return f"{trial.config['variant']:<20} {Searched.from_json(trial.config).describe()}"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """The epoch a trial just finished with its val scores."""
        if ended_in_error(result):
            return
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        print(f"[petseg] {self._name(trial)} epoch {result.get('epoch', 0)}/{self.max_epochs}  "
              f"val wIoU {result.get('val_weighted_iou', float('nan')):.4f}  mIoU {result.get('val_mean_iou', float('nan')):.4f}"
              f"  ({done}/{len(trials)} trials done)", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """How a finished trial ended and its best val weighted mIoU."""
        result = trial.last_result or {}
        print(f"[petseg] done  {self._name(trial)} after {result.get('epoch', 0)} epoch(s), "
              f"{ended_how(result, self.max_epochs)}; best val wIoU "
              f"{result.get('best_val_weighted_iou', float('nan')):.4f}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Which trial errored and why (the last line of its error); the whole log is in its folder on storage."""
        lines = [line.strip() for line in str(trial.get_error() or "").splitlines() if line.strip()]
        print(f"[petseg] error {self._name(trial)}: {lines[-1] if lines else 'unknown error'} "
              f"(log: {trial.path})", flush=True)

    def on_step_end(self, iteration, trials, **info):
        """Print the trials' messages (at most once a second); while every unfinished trial is pending (none
        runs), say so once a minute: they wait for resources."""
        if _console["messages"] is not None and time.monotonic() - self.drained >= 1.0:
            self.drained = time.monotonic()
            drain(_console["messages"])
        pending = sum(t.status == "PENDING" for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        if not pending or running:
            self.waiting_since = None
            return
        now = time.monotonic()
        self.waiting_since = self.waiting_since or now
        if now - self.waiting_since >= WAIT_NOTE_S and now - self.noted >= WAIT_NOTE_S:
            self.noted = now
            print(f"[petseg] waiting for nodes: {pending} trial(s) pending, none running; each needs "
                  f"{_console['request']} on one node (`ray status` shows the cluster)", flush=True)


def drain(messages) -> None:
    """Print every line the trials have sent so far; a lost queue only ends these lines, never the search."""
    try:
        while not messages.empty():
            print(f"[petseg] {messages.get_nowait()}", flush=True)
    except RayError as err:
        _console["messages"] = None
        print(f"[petseg] trial messages are no longer shown ({type(err).__name__}); each trial's log stays in "
              "its folder", flush=True)
