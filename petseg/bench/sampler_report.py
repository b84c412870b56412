"""The sampler benchmark's Markdown report: the known objective's table and, when run, the smoke study's."""
from __future__ import annotations

import numpy as np

from ..tune.search_space import SAMPLERS
from .markdown import table
from .sampler import CHECKPOINTS, PEAKS, SMOKE_VARIANTS, SamplerBenchmark, SamplerRow, SamplerSettings


def objective_table(rows: list[SamplerRow]) -> list[str]:
    """Markdown lines: every measured (budget, trials at once, sampler)."""
    checkpoints = sorted({key for r in rows for key in r.scores if key.startswith("regret@")},
                         key=lambda k: int(k.split("@")[1]))
    lines = []
    for r in rows:
        cells = [str(r.budget), str(r.at_once), r.sampler, f"{r.scores['random trials'][0]:.2f}"]
        cells += [f"{r.scores[k][0]:.4f} ± {r.scores[k][1]:.4f}" if k in r.scores else "–" for k in checkpoints]
        distance = r.scores["distance"]
        cells += [f"{distance[0]:.3f} ± {distance[1]:.3f}", f"{distance[0] / r.random_distance:.2f}",
                  f"{r.scores['s/suggestion'][0]:.4f}"]
        lines.append(cells)
    return table(["budget", "trials at once", "sampler", "random trials", *checkpoints, "later-half distance",
                  "vs random", "s/suggestion"], lines)


def smoke_table(runs: dict[tuple[str, int], list[dict]], budget: int) -> list[str]:
    """Markdown lines, per sampler: best val weighted mIoU found within the first n trials of each variant (by
    start), and its shortfall from the best any sampler found for that variant and seed (mean ± standard error)."""
    best_any = {}
    for (sampler, seed), rows in runs.items():
        for row in rows:
            key = (seed, row["variant"])
            best_any[key] = max(best_any.get(key, -np.inf), row["score"])
    checkpoints = [n for n in CHECKPOINTS if n <= budget]
    lines = []
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
        lines.append(cells)
    return table(["sampler", *(f"best@{n}" for n in checkpoints), f"shortfall@{budget}"], lines)


def sampler_report(settings: SamplerSettings, result: SamplerBenchmark) -> str:
    """The whole Markdown report, naming the command that reproduces it."""
    runs = len(PEAKS) * settings.seeds
    smoke_section = [] if not result.smoke else [
        "## On the smoke study", "",
        f"The smoke preset's real search (generated data, random weights, 2 epochs, ASHA), {settings.smoke_budget} "
        f"learning rates per variant for {', '.join(SMOKE_VARIANTS)}, seeds 0..{settings.smoke_seeds - 1} (each seed "
        "is its own problem: data, split and initialisation; every sampler meets the same ones). best@n: best "
        "val weighted mIoU among a variant's first n trials (by start), mean over variants and seeds; shortfall: "
        "the best any sampler found for that variant and seed minus this sampler's best.", "",
        *smoke_table(result.smoke, settings.smoke_budget), ""]
    return "\n".join([
        "# Learning-rate sampler benchmark", "",
        f"Command: `python experiments/search_benchmark.py --budgets {','.join(map(str, settings.budgets))} "
        f"--at-once {','.join(map(str, settings.at_once))} --seeds {settings.seeds} --noise {settings.noise} "
        f"--threads {settings.threads} --smoke-seeds {settings.smoke_seeds} --smoke-budget {settings.smoke_budget}`  ",
        f"Machine: {result.machine}  ",
        f"Wall time: {result.objective_seconds:.0f} s on the known objective"
        + (f", {result.smoke_seconds:.0f} s on the smoke study" if result.smoke else ""), "",
        f"Objective: noisy (sd {settings.noise}) val-mIoU-like curve of log10(lr) over [1e-5, 1e-2], peak at 10^p "
        f"for p in {', '.join(map(str, PEAKS))}, {settings.seeds} seeds each ({runs} searches per row), driven "
        "through `petseg.tune.groups.VariantSearcher`. Trials at once 1: each suggestion sees every earlier result; "
        "k > 1: the first k start together and a new one starts whenever the oldest running one finishes (a budget "
        "of k trials at k at once starts all of them before any result). Side by side, petseg's samplers see "
        "the running trials (GP: expected improvement over them too; TPE: constant liar); the rows \"blind to "
        "running trials\" are the same samplers fitting the finished trials only.", "",
        "random trials: mean number of a search's trials that were drawn at random, from the searcher's "
        "`suggested_by` (the start-up counts finished trials only, so it grows with the trials at once). "
        "regret@n: noise-free optimum minus the noise-free value of the best-observed of the first n trials "
        "(mean ± standard error). Later-half distance: mean |log10(lr / optimum)| of the last N/2 suggestions; "
        "vs random: that distance over random's in the same setting. s/suggestion: mean over all N suggestions.", "",
        *objective_table(result.rows), "",
        *smoke_section,
    ])
