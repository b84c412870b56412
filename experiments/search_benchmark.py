"""Which Optuna sampler finds a good learning rate within petseg's small per-variant budgets.

    python experiments/search_benchmark.py                  # results/search_benchmark.md, ~30 min on 2 cores
    python experiments/search_benchmark.py --smoke-seeds 0  # the known objective only, ~10 min on 2 busy cores
    python experiments/search_benchmark.py --budgets 20 --at-once 1 --seeds 8 --smoke-seeds 0 --output /tmp/b20.md

Every sampler drives petseg's own VariantSearcher (suggest, then on_trial_complete) on a known,
seeded objective of log10(lr) over [1e-5, 1e-2] shaped like val weighted mIoU against the learning
rate: a peak at the optimum, wider towards small rates (they underfit slowly) than towards large ones
(they diverge), a lower shoulder 1.3 decades below it, and Gaussian noise. The peak sits at five
positions, with many seeds each. Each search runs with 1, 4 and 8 trials at once, as Ray Tune runs
them side by side (a finished trial is replaced by a new suggestion while the others still run):
one at a time every start-up length is compared; side by side, petseg's samplers (which see the
running trials) against the same samplers blind to them.

Then the same samplers run the smoke study's real search (Ray Tune, ASHA, generated data) for a few
seeds, each seed a problem of its own that every sampler meets.

Per budget N (trials per variant), trials at once and sampler: how many trials were random (as
the searcher's `suggested_by` says); the mean regret (noise-free optimum minus the noise-free value
of the trial with the best observed value) after the first 2, 4, 8 trials; the mean
|log10(lr / optimum)| of the later half of the suggestions, also as a share of random's; and the
seconds per suggestion.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from petseg.tune.search_space import SAMPLERS, startup_trials
from petseg.tune.groups import VariantSearcher, make_sampler

LOW, HIGH = -5.0, -2.0  # log10 of the lr range searched (the DenseASPP family's default)
PEAKS = (-4.5, -4.0, -3.5, -3.0, -2.5)
METRIC = "val_weighted_iou"
CHECKPOINTS = (2, 4, 8)
SMOKE_VARIANTS = ("fcn_resnet50", "denseaspp_voc", "cutdenseaspp_voc")  # one of each backbone family
SamplerFactory = Callable[[int], optuna.samplers.BaseSampler] | None


def parse_args(argv=None) -> argparse.Namespace:
    """Benchmark flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="2,8", help="comma-separated trials per variant (smoke 2, paper 8)")
    parser.add_argument("--seeds", type=int, default=24, help="seeded searches per peak position")
    parser.add_argument("--at-once", default="1,4,8",
                        help="comma-separated trials run at once (1: one after another); those above a budget skipped")
    parser.add_argument("--noise", type=float, default=0.01, help="standard deviation of the objective's noise")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the GP's fits are tiny: on 2 cores one thread suggests twice as fast)")
    parser.add_argument("--smoke-seeds", type=int, default=2,
                        help="also run the smoke study's search with each sampler for this many seeds (0: skip)")
    parser.add_argument("--smoke-budget", type=int, default=8, help="learning rates per variant in the smoke runs")
    parser.add_argument("--output", default="results/search_benchmark.md", help="where the Markdown report goes")
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.at_once = [int(n) for n in args.at_once.split(",")]
    if min(args.budgets) < 1 or args.seeds < 1 or min(args.at_once) < 1:
        parser.error("--budgets, --at-once and --seeds must be at least 1")
    return args


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


def search(new_sampler: SamplerFactory, budget: int, peak: float, seed: int, at_once: int, noise: float
           ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One variant's search: log10 lr in suggestion order, observed values, seconds spent suggesting, and how
    many of its suggestions were random."""
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
    return xs, observed, seconds, random


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


def measure(new_sampler: SamplerFactory, budget: int, at_once: int, args) -> dict[str, tuple[float, float]]:
    """Mean and standard error of each score over every peak and seed, plus seconds per suggestion."""
    rows, seconds = [], 0.0
    for p, peak in enumerate(PEAKS):
        for s in range(args.seeds):
            xs, observed, spent, random = search(new_sampler, budget, peak, 1000 * p + s, at_once, args.noise)
            rows.append({"random trials": float(random), **scores(xs, observed, peak, budget)})
            seconds += spent
    result = {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]) / np.sqrt(len(rows))))
              for key in rows[0]}
    result["s/suggestion"] = (seconds / (len(rows) * budget), 0.0)
    return result


def smoke_search(sampler: str, seed: int, budget: int, work: Path) -> list[dict]:
    """The smoke study's real search (generated data, random weights, ASHA on) with `sampler`: one row per
    trial with its variant, start time and best val weighted mIoU."""
    from ray import tune

    from petseg.study.pets import prepare_data
    from petseg.study.session import search
    from petseg.tune.config import resolve_config

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


def smoke_table(runs: dict[tuple[str, int], list[dict]], budget: int) -> str:
    """Per sampler: best val weighted mIoU found within the first n trials of each variant (by start), and its
    shortfall from the best any sampler found for that variant and seed (mean ± standard error)."""
    best_any = {}
    for (sampler, seed), rows in runs.items():
        for row in rows:
            key = (seed, row["variant"])
            best_any[key] = max(best_any.get(key, -np.inf), row["score"])
    checkpoints = [n for n in CHECKPOINTS if n <= budget]
    head = ["sampler", *(f"best@{n}" for n in checkpoints), f"shortfall@{budget}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sampler in SAMPLERS:
        found = {n: [] for n in checkpoints}
        shortfall = []
        for (kind, seed), rows in runs.items():
            if kind != sampler:
                continue
            for variant in SMOKE_VARIANTS:
                scores_in_order = [r["score"] for r in sorted(rows, key=lambda r: r["start"]) if r["variant"] == variant]
                for n in checkpoints:
                    found[n].append(np.nanmax(scores_in_order[:n]))
                shortfall.append(best_any[(seed, variant)] - np.nanmax(scores_in_order))
        cells = [SAMPLERS[sampler]] + [f"{np.mean(found[n]):.4f}" for n in checkpoints]
        cells.append(f"{np.mean(shortfall):.4f} ± {np.std(shortfall, ddof=1) / np.sqrt(len(shortfall)):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, threads and library versions, for the report."""
    model = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        model = (f"{fields.get('model name', model)} (family {fields.get('cpu family', '?')}, model "
                 f"{fields.get('model', '?')}{', virtual machine' if 'hypervisor' in fields.get('flags', '') else ''})")
    greenlet = "present" if importlib.util.find_spec("greenlet") else "absent (GP optimises its acquisition sequentially)"
    return (f"{model}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the start), "
            f"{torch.get_num_threads()} torch thread(s); Optuna {optuna.__version__}, torch {torch.__version__}, "
            f"Python {sys.version.split()[0]}; greenlet {greenlet}")


def table(results: list[dict]) -> str:
    """Markdown table of every measured (budget, mode, sampler)."""
    checkpoints = sorted({key for r in results for key in r["scores"] if key.startswith("regret@")},
                         key=lambda k: int(k.split("@")[1]))
    head = ["budget", "trials at once", "sampler", "random trials", *checkpoints, "later-half distance", "vs random",
            "s/suggestion"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [str(r["budget"]), str(r["at_once"]), r["sampler"], f"{r['scores']['random trials'][0]:.2f}"]
        cells += [f"{r['scores'][k][0]:.4f} ± {r['scores'][k][1]:.4f}" if k in r["scores"] else "–" for k in checkpoints]
        distance = r["scores"]["distance"]
        cells += [f"{distance[0]:.3f} ± {distance[1]:.3f}", f"{distance[0] / r['random_distance']:.2f}",
                  f"{r['scores']['s/suggestion'][0]:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args, results: list[dict], seconds: tuple[float, float], smoke: dict) -> str:
    """The whole Markdown report; `seconds`: wall time of the known objective's part and of the smoke runs."""
    runs = len(PEAKS) * args.seeds
    smoke_section = [] if not smoke else [
        "## On the smoke study", "",
        f"The smoke preset's real search (generated data, random weights, 2 epochs, ASHA), {args.smoke_budget} "
        f"learning rates per variant for {', '.join(SMOKE_VARIANTS)}, seeds 0..{args.smoke_seeds - 1} (each seed "
        "is its own problem: data, split and initialisation; every sampler meets the same ones). best@n: best "
        "val weighted mIoU among a variant's first n trials (by start), mean over variants and seeds; shortfall: "
        "the best any sampler found for that variant and seed minus this sampler's best.", "",
        smoke_table(smoke, args.smoke_budget), ""]
    return "\n".join([
        "# Learning-rate sampler benchmark", "",
        f"Command: `python experiments/search_benchmark.py --budgets {','.join(map(str, args.budgets))} "
        f"--at-once {','.join(map(str, args.at_once))} --seeds {args.seeds} --noise {args.noise} "
        f"--threads {args.threads} --smoke-seeds {args.smoke_seeds} --smoke-budget {args.smoke_budget}`  ",
        f"Machine: {machine()}  ",
        f"Wall time: {seconds[0]:.0f} s on the known objective" + (f", {seconds[1]:.0f} s on the smoke study"
                                                                   if smoke else ""), "",
        f"Objective: noisy (sd {args.noise}) val-mIoU-like curve of log10(lr) over [1e-5, 1e-2], peak at 10^p for "
        f"p in {', '.join(map(str, PEAKS))}, {args.seeds} seeds each ({runs} searches per row), driven through "
        "`petseg.tune.groups.VariantSearcher`. Trials at once 1: each suggestion sees every earlier result; "
        "k > 1: the first k start together and a new one starts whenever the oldest running one finishes (a budget "
        "of k trials at k at once starts all of them before any result). Side by side, petseg's samplers see "
        "the running trials (GP: expected improvement over them too; TPE: constant liar); the rows \"blind to "
        "running trials\" are the same samplers fitting the finished trials only.", "",
        "random trials: mean number of a search's trials that were drawn at random, from the searcher's "
        "`suggested_by` (the start-up counts finished trials only, so it grows with the trials at once). "
        "regret@n: noise-free optimum minus the noise-free value of the best-observed of the first n trials "
        "(mean ± standard error). Later-half distance: mean |log10(lr / optimum)| of the last N/2 suggestions; "
        "vs random: that distance over random's in the same setting. s/suggestion: mean over all N suggestions.", "",
        table(results), "",
        *smoke_section,
    ])


def main(argv=None) -> None:
    """Measure every candidate sampler at every budget, print the table and write the report."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one "study created" line per search otherwise
    started, results = time.perf_counter(), []
    for budget in args.budgets:
        for at_once in [n for n in args.at_once if n <= budget]:
            for label, new_sampler in candidates(budget, at_once).items():
                scored = measure(new_sampler, budget, at_once, args)
                if label == "random":  # the first row: every later one is compared with it
                    random_distance = scored["distance"][0]
                results.append(dict(budget=budget, at_once=at_once, sampler=label, scores=scored,
                                    random_distance=random_distance))
                print(f"budget {budget}, {at_once} at once, {label}: later-half distance "
                      f"{scored['distance'][0]:.3f}", file=sys.stderr, flush=True)
    objective_seconds, smoke = time.perf_counter() - started, {}
    with tempfile.TemporaryDirectory(prefix="petseg-search-") as work:
        for seed in range(args.smoke_seeds):
            for sampler in SAMPLERS:
                smoke[(sampler, seed)] = smoke_search(sampler, seed, args.smoke_budget, Path(work))
                print(f"smoke seed {seed}, {sampler}: done", file=sys.stderr, flush=True)
    text = report(args, results, (objective_seconds, time.perf_counter() - started - objective_seconds), smoke)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
