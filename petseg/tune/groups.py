"""Fairness for one Tune run over several variants: a searcher and a scheduler grouped by variant.

One seeded Optuna search (a GP after a budget-sized random start, see `petseg.search_space`) and
one ASHA per `config["variant"]`, so a variant's trials are only ever ranked against each other:
a weak variant's best learning rate is never stopped because another variant is stronger. Both
subclass Tune DeveloperAPIs, tested on the Ray version pinned in pyproject.toml. Every suggestion
says how its learning rate (and any other searched value) was chosen (`suggested_by`: random, gp,
tpe, or fixed for a given list).
"""
from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace

import optuna
import ray
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import StudyError
from ..train.trial_spec import SEARCHED
from .cache_plan import CacheGate, CachePlan
from .search_space import DEFAULT_SAMPLER, startup_trials

# The run settings of the search this driver runs now: its cache plan and its limit on trials started at once.
# A resumed search's searcher comes back from its pickles with the plan of the run that started it; its gate
# takes this one, so a resume keeps to the budget it is given. The limit is never pickled: read from here.
_this_run: dict = {"plan": None, "limit": None}


@contextmanager
def searchers_run_with(plan: CachePlan | None, limit: Callable[[], int] | None = None):
    """Within the block, searchers keep at most limit() trials started and unfinished (see tune.concurrency), and a
    searcher restored from a saved search gates its trials by `plan` (this run's)."""
    _this_run.update(plan=plan, limit=limit)
    try:
        yield
    finally:
        _this_run.update(plan=None, limit=None)


class _StateSearcher(Searcher):
    """A searcher whose whole state is its attributes: saved and restored by pickling them.

    With a CacheGate, a trial of a variant starts only when the gate allows it (the feature caches then
    stay within the disk budget); suggest returns None meanwhile, and Tune asks again later. Among the
    allowed, a trial that would wait for another trial's cache build comes after one that can start
    working (a slot otherwise sits idle for the length of that build).
    """

    def __init__(self, metric: str, mode: str, gate: CacheGate | None = None):
        super().__init__(metric=metric, mode=mode)
        self.gate = gate
        self.trial_variant: dict[str, str] = {}
        self.unfinished: set[str] = set()  # trials started and not yet complete, counted against the limit
        self.caches: dict[str, set[tuple[str, str]]] = {}  # variant -> (node, folder) of the caches it read

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Remember the feature-cache folders (and their node) a trial's variant reads, to delete them later."""
        if trial_id in self.trial_variant:
            if self.gate is not None:
                self.gate.reported(self.trial_variant[trial_id])
            for folder in result.get("feature_caches") or ():
                self.caches.setdefault(self.trial_variant[trial_id], set()).add((result.get("node", ""), folder))

    def _allowed(self, variant: str) -> bool:
        """Whether the gate lets a trial of `variant` start; the done caches it condemns for the room are deleted
        here and now (Tune asks again in a loop while no trial runs, so nothing else would get to delete them)."""
        if self.gate is None or self.gate.allows(variant):
            return True
        for group in self.gate.to_evict():
            for member in self.gate.plan.caches[group].variants:
                for node, folder in sorted(self.caches.pop(member, ())):
                    remove_on_node(node, folder)
            self.gate.evicted(group)
        return self.gate.allows(variant)

    def _room(self) -> bool:
        """Whether one more trial may start within this run's limit on trials at once."""
        limit = _this_run["limit"]
        return limit is None or len(self.unfinished) < limit()

    def _waits(self, variant: str) -> bool:
        """Whether a trial of `variant` started now would wait for a cache build another trial is doing."""
        return self.gate is not None and self.gate.building(variant)

    def _started(self, trial_id: str, variant: str) -> None:
        self.trial_variant[trial_id] = variant
        self.unfinished.add(trial_id)
        if self.gate is not None:
            self.gate.start(variant)

    def _finished(self, trial_id: str) -> None:
        self.unfinished.discard(trial_id)
        if self.gate is not None and trial_id in self.trial_variant:
            self.gate.finish(self.trial_variant[trial_id])

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Accept Tune's param_space (constants merged into every trial's config by Tune)."""
        return True

    def save(self, checkpoint_path: str) -> None:
        """Persist the searcher's state, so a resumed study continues where it stopped."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        """Load what `save` wrote; the cache gate then keeps to this run's plan (see searchers_run_with)."""
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
        # A state saved before petseg counted trials at once: the trials it resumes go uncounted until they end.
        self.__dict__.setdefault("unfinished", set())
        if self.gate is not None and _this_run["plan"] is not None:
            self.gate.replan(_this_run["plan"])


def make_sampler(kind: str, num_samples: int, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler `kind` ("gp", petseg's default; "tpe"; "random") for one variant's `num_samples`
    trials, random for its budget-sized start (see petseg.search_space), aware of the trials still running.

    OptunaSearch keeps a started trial RUNNING in its study until it is told the result: the GP then picks
    the next rate by expected improvement over the running ones too (qLogEI), and TPE's constant liar counts
    them as bad, so trials started side by side spread out instead of repeating one rate.
    """
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples, kind),
                                          constant_liar=True)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials(num_samples, kind))


MODELS = {optuna.samplers.GPSampler: "gp", optuna.samplers.TPESampler: "tpe"}  # model sampler -> suggested_by


class TracedSampler(optuna.samplers.BaseSampler):
    """Delegates to `sampler` and keeps, in `last`, how its latest trial's parameters were chosen.

    Optuna's GP and (multivariate) TPE draw from their model in relative sampling and fall back to independent
    sampling, random, for the start-up; over the fixed ranges nothing else reaches independent sampling. So
    a trial whose relative sampling returned its rate was suggested by the model, any other one at random.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler):
        self.sampler = sampler
        self.model = next((name for cls, name in MODELS.items() if isinstance(sampler, cls)), "random")
        self.last = "random"

    def infer_relative_search_space(self, study, trial):
        """The wrapped sampler's relative search space."""
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        """The wrapped sampler's model draw; noted as the model's when it returned any parameter."""
        params = self.sampler.sample_relative(study, trial, search_space)
        if params:
            self.last = self.model
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        """The wrapped sampler's independent (start-up) draw."""
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        """A new trial: random until its relative sampling says otherwise."""
        self.last = "random"
        self.sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        """Pass the finished trial on to the wrapped sampler."""
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the wrapped sampler."""
        self.sampler.reseed_rng()


class VariantSearcher(_StateSearcher):
    """One seeded OptunaSearch per variant; each new trial goes to the variant with fewest started (of those
    not waiting for a cache build, if any).

    `ranges`: variant -> {searched value: (low, high)} (names of petseg.train.trial_spec.Searched, lr among them;
    petseg.tune.config.search_ranges), each searched log-uniform; a bare (low, high) is the lr range alone.
    `sampler` names the kind (see make_sampler); `new_sampler(seed)`, if given, builds each variant's instead.
    `ranked_by` (default `metric`) is the result key a finished trial is ranked by, the value its search learns.
    """

    def __init__(self, ranges: dict[str, dict[str, tuple[float, float]] | tuple[float, float]], num_samples: int,
                 metric: str, mode: str, seed: int = 0, sampler: str = DEFAULT_SAMPLER,
                 new_sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None,
                 gate: CacheGate | None = None, ranked_by: str | None = None):
        super().__init__(metric=metric, mode=mode, gate=gate)
        self.num_samples = num_samples
        self.ranked_by = ranked_by or metric
        new_sampler = new_sampler or partial(make_sampler, sampler, num_samples)
        self.samplers = {variant: TracedSampler(new_sampler(seed + index)) for index, variant in enumerate(ranges)}
        self.searchers = {
            variant: OptunaSearch(space={name: optuna.distributions.FloatDistribution(low, high, log=True)
                                         for name, (low, high) in named_ranges(bounds).items()},
                                  metric=self.ranked_by, mode=mode, sampler=self.samplers[variant])
            for variant, bounds in ranges.items()
        }
        self.started = {variant: 0 for variant in self.searchers}

    def suggest(self, trial_id: str) -> dict | None:
        """{"variant", its searched values ("lr", ...), "suggested_by"} for the least-started variant still under its
        budget (allowed by the cache gate, not waiting for a build where one can), None while the gate holds every
        such variant back, FINISHED when all budgets are spent."""
        open_variants = [v for v, n in self.started.items() if n < self.num_samples]
        if not open_variants:
            return Searcher.FINISHED
        if not self._room():
            return None
        allowed = [v for v in open_variants if self._allowed(v)]
        if not allowed:
            return None
        variant = min(allowed, key=lambda v: (self._waits(v), self.started[v]))
        suggestion = self.searchers[variant].suggest(trial_id)
        self.started[variant] += 1
        self._started(trial_id, variant)
        return {"variant": variant, **suggestion, "suggested_by": self.samplers[variant].last}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Route an intermediate result to the trial's own variant search."""
        super().on_trial_result(trial_id, result)
        if trial_id in self.trial_variant and self.ranked_by in result and not ended_in_error(result):
            self.searchers[self.trial_variant[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Route a final result (or error) to the trial's own variant search, which learns its `ranked_by` value;
        a trial that ended itself in error (a non-finite loss, its own errors past its retries) counts as failed."""
        if trial_id in self.trial_variant:
            if result is not None and ended_in_error(result):
                result, error = None, True
            self.searchers[self.trial_variant[trial_id]].on_trial_complete(trial_id, result, error)
            self._finished(trial_id)


def named_ranges(bounds: dict[str, tuple[float, float]] | tuple[float, float]) -> dict[str, tuple[float, float]]:
    """Searched value -> (low, high): `bounds` as given, or a bare (low, high) as the lr range; ValueError when
    it has no lr or names a value petseg.train.trial_spec.Searched does not have."""
    named = dict(bounds) if isinstance(bounds, dict) else {"lr": tuple(bounds)}
    unknown = sorted(set(named) - set(SEARCHED))
    if "lr" not in named or unknown:
        raise ValueError(f"search ranges {named} need an lr range and only searched values of {SEARCHED}")
    return named


def ended_in_error(result: dict) -> bool:
    """Whether a trial's result says it ended itself in error: its loss became NaN or infinite, or its own code
    failed more often than its retries allow (the trainable's last result then, with NaN metrics)."""
    return bool(result.get("nonfinite_loss") or result.get("trial_error"))


# The version of VariantScheduler.state's layout; a saved state of another version is refused, not guessed at.
SCHEDULER_STATE_FORMAT = 1


class VariantScheduler(FIFOScheduler):
    """One AsyncHyperBand (ASHA) per variant, each cutting rungs among its own variant's trials.

    Every result given to a variant's ASHA is also kept as plain data (variant -> trial id -> [epoch, metric]
    pairs): `state` saves that record and `load_state` replays it into fresh ASHAs, so a resumed study meets
    the rungs it left, through ASHA's public hooks only.
    """

    def __init__(self, variants: list[str], metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int, time_attr: str = "epoch"):
        super().__init__()
        super().set_search_properties(metric, mode)  # what Tune's `metric` property reads
        self.mode, self.time_attr = mode, time_attr
        self.asha = dict(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t,
                         grace_period=min(grace_period, max_t), reduction_factor=reduction_factor)
        self.schedulers = {variant: AsyncHyperBandScheduler(**self.asha) for variant in variants}
        self.results: dict[str, dict[str, list[list[float]]]] = {variant: {} for variant in variants}

    def _of(self, trial) -> AsyncHyperBandScheduler:
        return self.schedulers[trial.config["variant"]]

    def _record(self, trial, result: dict) -> None:
        """Keep a result the trial's ASHA reads (it ignores one without the epoch or the metric)."""
        if self.time_attr in result and self.metric in result:
            self.results[trial.config["variant"]].setdefault(trial.trial_id, []).append(
                [result[self.time_attr], result[self.metric]])

    def set_search_properties(self, metric, mode, **spec) -> bool:
        """Metric and mode are fixed at construction; accept Tune's matching ones."""
        return metric in (None, self.metric) and mode in (None, self.mode)

    def on_trial_add(self, tune_controller, trial) -> None:
        """Register the trial with its variant's ASHA."""
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """CONTINUE or STOP, decided only against trials of the same variant; a trial ending in error stops."""
        if ended_in_error(result):
            return self.STOP
        self._record(trial, result)
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        """Record the final result in the variant's rungs (the NaN of a trial that ended in error never enters)."""
        if ended_in_error(result):
            self._of(trial).on_trial_remove(tune_controller, trial)
        else:
            self._record(trial, result)
            self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        """Forget an errored trial (Tune may retry it as a new attempt of the same trial)."""
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        """Forget a removed trial."""
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        """Per-variant ASHA state for Tune's status output."""
        return "\n".join(f"{variant}: {s.debug_string()}" for variant, s in self.schedulers.items())

    def state(self) -> dict:
        """The rungs as plain data: {"format", "metric", "time_attr", "results": variant -> trial id -> pairs}."""
        return {"format": SCHEDULER_STATE_FORMAT, "metric": self.metric, "time_attr": self.time_attr,
                "results": {variant: {trial: [list(pair) for pair in pairs] for trial, pairs in trials.items()}
                            for variant, trials in self.results.items()}}

    def load_state(self, state, source: str) -> None:
        """Rebuild every variant's ASHA from `state` (what `state` returned), replaying its results in order; raise
        StudyError naming `source` when the state is of another format, metric or set of variants."""
        found = state.get("format") if isinstance(state, dict) else None
        if found != SCHEDULER_STATE_FORMAT:
            raise StudyError(f"{source} holds ASHA state in format {found!r} (None: an older petseg's pickled ASHA "
                             f"objects), but this petseg reads format {SCHEDULER_STATE_FORMAT}; resume the study "
                             "with the petseg that started it, or start a new one (--name NEW)")
        saved = (state.get("metric"), state.get("time_attr"), sorted(state.get("results", {})))
        if saved != (self.metric, self.time_attr, sorted(self.schedulers)):
            raise StudyError(f"{source} holds ASHA rungs of metric {saved[0]!r} by {saved[1]!r} for variants "
                             f"{saved[2]}, but the study ranks by {self.metric!r} by {self.time_attr!r} over "
                             f"{sorted(self.schedulers)}; resume it with the config it was saved with")
        self.schedulers = {variant: AsyncHyperBandScheduler(**self.asha) for variant in self.schedulers}
        self.results = {variant: {} for variant in self.schedulers}
        for variant, trials in state["results"].items():
            for trial_id, pairs in trials.items():
                trial = SimpleNamespace(trial_id=trial_id, config={"variant": variant})
                self.schedulers[variant].on_trial_add(None, trial)
                for epoch, value in pairs:
                    self.on_trial_result(None, trial, {self.time_attr: epoch, self.metric: value})
                # Replayed trials leave the rungs their results but no registration: Tune adds the unfinished
                # ones again when it resumes them.
                self.schedulers[variant].on_trial_remove(None, trial)


class SchedulerState(Callback):
    """Saves the per-variant ASHA rungs with every experiment snapshot and puts them back on restore.

    Tune restores a searcher's state but not a scheduler's; without this a resumed study would meet empty
    rungs and let trials run epochs that the uninterrupted study would have cut.
    """

    def __init__(self, scheduler: VariantScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        """The scheduler's plain-data rungs (Tune saves them in callback-states-*.pkl in the study's folder)."""
        return self.scheduler.state()

    def set_state(self, state: dict) -> None:
        """Restore the rungs saved with the experiment into the scheduler the restored search uses."""
        self.scheduler.load_state(state, "the study's callback-states-*.pkl (its saved ASHA rungs)")


class FixedTrials(_StateSearcher):
    """Suggests a fixed list of configs in order (those the cache gate allows, and of them those not waiting for a
    cache build, first), then FINISHED (e.g. seed repeats of chosen configs); each marked suggested_by "fixed"."""

    def __init__(self, configs: list[dict], metric: str, mode: str, gate: CacheGate | None = None):
        super().__init__(metric=metric, mode=mode, gate=gate)
        self.configs = list(configs)
        self.handed: set[int] = set()

    def suggest(self, trial_id: str) -> dict | None:
        """The first config not yet handed out that the gate allows (not waiting for a build, where one can);
        None while it allows none; then FINISHED."""
        remaining = [index for index in range(len(self.configs)) if index not in self.handed]
        if not remaining:
            return Searcher.FINISHED
        if not self._room():
            return None
        allowed = [i for i in remaining if self._allowed(self.configs[i]["variant"])]
        if not allowed:
            return None
        index = min(allowed, key=lambda i: (self._waits(self.configs[i]["variant"]), i))
        self.handed.add(index)
        self._started(trial_id, self.configs[index]["variant"])
        return {**self.configs[index], "suggested_by": "fixed"}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn (the list is fixed); the gate counts the trial as finished."""
        self._finished(trial_id)


def remove_on_node(node_ip: str, folder: str) -> None:
    """Delete `folder` on the node at `node_ip` (here when it is this driver's node, else by a task pinned there)."""
    here = ray.util.get_node_ip_address()
    if node_ip in ("", here):
        shutil.rmtree(folder, ignore_errors=True)
        return
    node_id = next((n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == node_ip), None)
    if node_id is not None:  # a node that is gone took its cache with it
        remote = ray.remote(num_cpus=0)(shutil.rmtree)
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
            folder, ignore_errors=True)
