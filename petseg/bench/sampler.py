"""Which Optuna sampler finds a good learning rate within petseg's small per-variant budgets.

Every sampler drives petseg's own VariantSearcher (suggest, then on_trial_complete) on a known, seeded
objective of log10(lr) shaped like val weighted mIoU against the learning rate, with 1 or more trials
at once as Ray Tune runs them side by side; then, optionally, the smoke study's real search for a few
seeds. `sampler_report` turns the result into Markdown.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from ..errors import ConfigError
from ..tune.groups import VariantSearcher, make_sampler
from ..tune.search_space import SAMPLERS, startup_trials
from .machine import sampler_machine
from .stats import mean_and_error

LOW, HIGH = -5.0, -2.0  # log10 of the lr range searched (the DenseASPP family's default)
PEAKS = (-4.5, -4.0, -3.5, -3.0, -2.5)
METRIC = "val_weighted_iou"
CHECKPOINTS = (2, 4, 8)
SMOKE_VARIANTS = ("fcn_resnet50", "denseaspp_voc", "cutdenseaspp_voc")  # one of each backbone family
SamplerFactory = Callable[[int], optuna.samplers.BaseSampler] | None


@dataclass(frozen=True)
class SamplerSettings:
    """What the sampler benchmark measures: budgets, trials at once, seeds, noise, and the smoke runs."""

    budgets: tuple[int, ...] = (2, 8)
    seeds: int = 24
    at_once: tuple[int, ...] = (1, 4, 8)
    noise: float = 0.01
    threads: int = 1
    smoke_seeds: int = 2
    smoke_budget: int = 8


@dataclass(frozen=True)
class Search:
    """One simulated search of one variant: log10 lr in suggestion order, observed values, seconds spent
    suggesting, and how many suggestions were random."""

    xs: np.ndarray
    observed: np.ndarray
    seconds: float
    random: int


@dataclass(frozen=True)
class SamplerRow:
    """One (budget, trials at once, sampler) measured: score -> (mean, standard error), and random's distance."""

    budget: int
    at_once: int
    sampler: str
    scores: dict[str, tuple[float, float]]
    random_distance: float  # the later-half distance of the random row in the same setting


@dataclass(frozen=True)
class SamplerBenchmark:
    """Every measured row, the smoke runs ((sampler, seed) -> their trials), the machine and the wall seconds."""

    machine: str
    rows: list[SamplerRow]
    objective_seconds: float
    smoke_seconds: float = 0.0
    smoke: dict[tuple[str, int], list[dict]] = field(default_factory=dict)


def check_settings(settings: SamplerSettings) -> None:
    """Raise ConfigError, naming the flags, for counts or a noise the benchmark cannot run."""
    if (not settings.budgets or not settings.at_once or min(settings.budgets) < 1 or settings.seeds < 1
            or min(settings.at_once) < 1):
        raise ConfigError("--budgets, --at-once and --seeds must be at least 1")
    if settings.threads < 1 or settings.smoke_budget < 1 or settings.smoke_seeds < 0:
        raise ConfigError(f"--threads {settings.threads}, --smoke-budget {settings.smoke_budget}, --smoke-seeds "
                          f"{settings.smoke_seeds}: the first two must be at least 1, --smoke-seeds 0 or more")
    if settings.noise < 0:
        raise ConfigError(f"--noise {settings.noise:g}: a standard deviation is 0 or more")


def objective(x: np.ndarray, peak: float) -> np.ndarray:
    """Noise-free 'val weighted mIoU' at log10(lr) `x` for a study whose best lr is near 10**peak."""
    width = np.where(x < peak, 0.6, 0.3)  # too small a rate underfits gradually, too large diverges fast
    shoulder = 0.1 * np.exp(-0.5 * ((x - peak + 1.3) / 0.35) ** 2)
    return 0.2 + 0.5 * np.exp(-0.5 * ((x - peak) / width) ** 2) + shoulder


class _FinishedOnly:
    """A study as a sampler blind to running trials sees it: every trial but the running ones."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        states = tuple(s for s in (states or tuple(TrialState)) if s != TrialState.RUNNING)
        return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)


class BlindGP(optuna.samplers.GPSampler):
    """Optuna's GP as if it did not know about running trials: each suggestion fits the finished ones only."""

    def sample_relative(self, study, trial, search_space):
        """The GP's draw from the finished trials alone."""
        return super().sample_relative(_FinishedOnly(study), trial, search_space)


def candidates(budget: int, at_once: int) -> dict[str, SamplerFactory]:
    """Label -> sampler factory for `budget` trials, `at_once` of them side by side; petseg's default is None
    (VariantSearcher builds it). One at a time, every start-up length; side by side, petseg's samplers against
    the same ones blind to the running trials."""
    default = startup_trials(budget)
    if at_once > 1:
        return {
            "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
            f"TPE, first {startup_trials(budget, 'tpe')} random, constant liar (petseg's tpe)":
                lambda seed: make_sampler("tpe", budget, seed),
            f"TPE, first {startup_trials(budget, 'tpe')} random, blind to running trials":
                lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(budget, "tpe"),
                                                        constant_liar=False),
            f"GP, first {default} random (petseg)": None,
            f"GP, first {default} random, blind to running trials":
                lambda seed: BlindGP(seed=seed, n_startup_trials=default),
        }
    rows: dict[str, SamplerFactory] = {
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
        "TPE, first 10 random (Optuna default, before)": lambda seed: optuna.samplers.TPESampler(seed=seed),
    }
    for k in sorted({2, 3, budget // 3} - {0}):
        if k < budget:  # a TPE that never leaves its random start is the random row again
            rows[f"TPE, first {k} random"] = lambda seed, k=k: optuna.samplers.TPESampler(seed=seed,
                                                                                         n_startup_trials=k)
    for k in sorted({1, 2, 3, budget // 4, default} - {0}):
        if k <= budget:
            rows[f"GP, first {k} random" + (" (petseg)" if k == default else "")] = (
                None if k == default else lambda seed, k=k: optuna.samplers.GPSampler(seed=seed, n_startup_trials=k))
    return rows


def simulate(new_sampler: SamplerFactory, budget: int, peak: float, seed: int, at_once: int, noise: float) -> Search:
    """One variant's search on the known objective, `at_once` trials running side by side: a finished trial (the
    oldest) is replaced by a new suggestion while the others still run."""
    searcher = VariantSearcher({"v": (10**LOW, 10**HIGH)}, budget, METRIC, "max", seed=seed,
                               new_sampler=new_sampler)
    # Every sampler meets the same noise for its i-th trial, so rows differ by their choices only.
    noise_draws = np.random.default_rng(seed).normal(0.0, noise, budget)
    xs, observed, waiting, seconds, random = np.empty(budget), np.empty(budget), deque(), 0.0, 0

    def complete(i: int) -> None:
        observed[i] = objective(xs[i], peak) + noise_draws[i]
        searcher.on_trial_complete(f"t{i}", {METRIC: float(observed[i])})

    for i in range(budget):
        if len(waiting) == at_once:
            complete(waiting.popleft())
        started = time.perf_counter()
        suggestion = searcher.suggest(f"t{i}")
        seconds += time.perf_counter() - started
        xs[i] = np.log10(suggestion["lr"])
        random += suggestion["suggested_by"] == "random"
        waiting.append(i)
    while waiting:
        complete(waiting.popleft())
    return Search(xs, observed, seconds, random)


def scores(xs: np.ndarray, observed: np.ndarray, peak: float, budget: int) -> dict[str, float]:
    """Regret after each checkpoint and the later half's distance to the noise-free optimum."""
    grid = np.linspace(LOW, HIGH, 30001)
    values = objective(grid, peak)
    best_x, best = grid[values.argmax()], values.max()
    row = {}
    for n in sorted({*CHECKPOINTS, budget}):
        if n <= budget:
            picked = xs[:n][observed[:n].argmax()]  # what a user keeps: the best-looking trial
            row[f"regret@{n}"] = float(best - objective(picked, peak))
    row["distance"] = float(np.abs(xs[budget // 2:] - best_x).mean())
    return row


def measure(new_sampler: SamplerFactory, budget: int, at_once: int, seeds: int, noise: float
            ) -> dict[str, tuple[float, float]]:
    """Mean and standard error of each score over every peak and seed, plus seconds per suggestion."""
    rows, seconds = [], 0.0
    for p, peak in enumerate(PEAKS):
        for s in range(seeds):
            search = simulate(new_sampler, budget, peak, 1000 * p + s, at_once, noise)
            rows.append({"random trials": float(search.random), **scores(search.xs, search.observed, peak, budget)})
            seconds += search.seconds
    result = {key: mean_and_error([r[key] for r in rows]) for key in rows[0]}
    result["s/suggestion"] = (seconds / (len(rows) * budget), 0.0)
    return result


def smoke_search(sampler: str, seed: int, budget: int, work: Path) -> list[dict]:
    """The smoke study's real search (generated data, random weights, ASHA on) with `sampler`: one row per
    trial with its variant, start time and best val weighted mIoU."""
    from ray import tune

    from ..study.pets import prepare_data
    from ..study.session import search
    from ..tune.config import resolve_config

    values = dict(name=f"{sampler}-{seed}", variants=list(SMOKE_VARIANTS), num_samples=budget, sampler=sampler,
                  seed=seed, storage_path=str(work / "ray"), results_dir=str(work / "results"),
                  cache_dir=str(work / "cache"))
    with contextlib.redirect_stdout(io.StringIO()):
        path = search(resolve_config("smoke", overrides=values), prepare_data).path
    experiment = tune.ExperimentAnalysis(path.path, storage_filesystem=path.filesystem)
    rows = []
    for trial in experiment.trials:
        history, last = experiment.trial_dataframes.get(trial.trial_id), trial.last_result or {}
        score = history[METRIC].max() if history is not None and METRIC in history else float("nan")
        rows.append({"variant": trial.config["variant"], "start": last.get("timestamp", 0) - last.get("time_total_s", 0),
                     "score": score})
    return rows


def run_sampler_benchmark(settings: SamplerSettings, progress: Callable[[str], None] = lambda line: None
                          ) -> SamplerBenchmark:
    """Measure every candidate sampler at every budget and number of trials at once, then the smoke runs, at
    `settings.threads` torch threads (restored after); `progress` gets a line after each row and smoke run."""
    check_settings(settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one "study created" line per search otherwise
    try:
        machine = sampler_machine()
        started, rows = time.perf_counter(), []
        for budget in settings.budgets:
            for at_once in [n for n in settings.at_once if n <= budget]:
                for label, new_sampler in candidates(budget, at_once).items():
                    scored = measure(new_sampler, budget, at_once, settings.seeds, settings.noise)
                    if label == "random":  # the first row: every later one is compared with it
                        random_distance = scored["distance"][0]
                    rows.append(SamplerRow(budget, at_once, label, scored, random_distance))
                    progress(f"budget {budget}, {at_once} at once, {label}: later-half distance "
                             f"{scored['distance'][0]:.3f}")
        objective_seconds, smoke = time.perf_counter() - started, {}
        with tempfile.TemporaryDirectory(prefix="petseg-search-") as work:
            for seed in range(settings.smoke_seeds):
                for sampler in SAMPLERS:
                    smoke[(sampler, seed)] = smoke_search(sampler, seed, settings.smoke_budget, Path(work))
                    progress(f"smoke seed {seed}, {sampler}: done")
    finally:
        torch.set_num_threads(threads)
    return SamplerBenchmark(machine, rows, objective_seconds, time.perf_counter() - started - objective_seconds,
                            smoke)
