"""The ablation's Markdown report: rows, scaling with the epochs, the feature cache's per-step limit, petseg's
speed goals, FLOP rates and every raw wall time. Its last line is `total speedup N.NNx`."""
from __future__ import annotations

import statistics

from .ablation import ROWS, AblationResult, AblationSettings, Run, rows_for, trial_seconds, variant_medians, walls
from .markdown import seconds_range, table
from .probe import StepProbe
from .stats import line_fit, search_bound, share_of_bound, speedup, summarise, verdict

# petseg's speed goals, stated for a 2-core CPU at 96 px and 4 epochs.
GOAL_SPEEDUP, GOAL_SHARE, GOAL_SETTING = 2.5, 0.85, {"device": "cpu", "size": 96, "epochs": 4}


def ablation_table(runs: list[Run], rows: list[str], epochs: int, bf16: bool) -> list[str]:
    """Markdown lines: each row's median and range of wall seconds and its speedup over naive."""
    naive = walls(runs, "naive", epochs)
    lines = []
    for row in rows:
        label, features, decoded, amp = ROWS[row]
        applied = "yes" if amp and bf16 else ("asked, not on this device" if amp else "no")
        times = walls(runs, row, epochs)
        lines.append([label, "yes" if features else "no", "yes" if decoded else "no", applied,
                      f"{summarise(times).median:.1f}", seconds_range(times), f"{speedup(naive, times):.2f}x",
                      f"{statistics.median(trial_seconds(runs, row, epochs)):.1f}"])
    text = table(["row", "feature cache", "decoded cache", "bf16 autocast", "median s", "range s",
                  "speedup vs naive", "trial s (median)"], lines)
    if "bf16" not in rows:
        text += ["", "The “naive + bf16 autocast” row is skipped: this device does not compute bf16 natively "
                     "(no AVX512-BF16 / AMX), so petseg's autocast stays off here."]
    return text


def scaling_section(runs: list[Run], scaling: tuple[int, ...]) -> list[str]:
    """Markdown lines: naive vs all together at each epoch count, and the straight-line fit of their medians."""
    lines = []
    for e in scaling:
        naive, fast = walls(runs, "naive", e), walls(runs, "all", e)
        lines.append([str(e), f"{summarise(naive).median:.1f}", seconds_range(naive), f"{summarise(fast).median:.1f}",
                      seconds_range(fast), f"{speedup(naive, fast):.2f}x"])
    text = table(["epochs", "naive median s", "naive range s", "all together median s", "all together range s",
                  "speedup"], lines)
    if len(scaling) >= 2:
        naive_fit, fast_fit = (line_fit(list(scaling), [summarise(walls(runs, row, e)).median for e in scaling])
                               for row in ("naive", "all"))
        limit = (f"the speedup tends to {naive_fit.slope / fast_fit.slope:.2f}x (the ratio of the per-epoch costs) "
                 "as the epochs grow" if naive_fit.slope > 0 and fast_fit.slope > 0
                 else "a per-epoch cost is not positive here, so noise dominates the fit")
        text += ["", f"Straight-line fit of the medians, wall s ≈ one-off + per-epoch × epochs: naive "
                     f"{naive_fit.intercept:.1f} + {naive_fit.slope:.1f} × epochs; all together "
                     f"{fast_fit.intercept:.1f} + {fast_fit.slope:.1f} × epochs. "
                     f"All together pays its one-off backbone passes and decoding up front; {limit}."]
    return text


def step_section(steps: list[StepProbe], naive_t: dict[str, float], features_t: dict[str, float], bound: float,
                 measured: float, measured_trials: float) -> list[str]:
    """Markdown lines: per-variant step times and limits, and the search-level limit and share."""
    lines = []
    for s in steps:
        gain = naive_t[s.variant] / features_t[s.variant]
        lines.append([s.variant, f"{s.live_ms:.1f}", f"{s.cached_ms:.1f}", f"{s.ratio:.2f}x",
                      f"{naive_t[s.variant]:.1f}", f"{features_t[s.variant]:.1f}", f"{gain:.2f}x",
                      f"{100 * share_of_bound(gain, s.ratio):.0f}%"])
    return table(["variant", "live step ms", "cached step ms", "limit (live / cached)", "naive trial s",
                  "feature-cache trial s", "feature-cache speedup", "share of limit"], lines) + [
        "", f"Search-level limit: **{bound:.2f}x** = Σ T_v / Σ (T_v / r_v), T_v a variant's naive trial "
            "seconds (sum of its trials, median over repeats), r_v its live / cached step ratio: the search's "
            "speedup if every variant's naive time shrank by its own step ratio. The feature cache alone "
            "measured "
            f"**{measured:.2f}x** (search wall time, medians): **{100 * share_of_bound(measured, bound):.0f}%** "
            f"of the limit, the number the goal reads. On summed trial seconds instead (leaving out Tune's "
            f"scheduling and trial start-up, which no cache removes): {measured_trials:.2f}x, "
            f"{100 * share_of_bound(measured_trials, bound):.0f}% of the limit. The step ratio leaves out "
            "what the cache adds (its one-off backbone pass per backbone and split) and what it also removes "
            "(decoding images every epoch: cached features are read instead), so a share near or above 100% "
            "is possible."]


def goal_lines(total: float, share: float | None, settings: AblationSettings, cores: int) -> list[str]:
    """petseg's two speed goals against this run's numbers, with whether this run is the goal's setting."""
    setting = {"device": settings.device, "size": settings.size, "epochs": settings.epochs}
    same = setting == GOAL_SETTING and cores == 2
    note = ("this run is that setting" if same else
            f"this run is {settings.device}, {settings.size} px, {settings.epochs} epochs, {cores} cores: not the "
            "goal's setting, shown for reference")
    share_text = ("not measured (no feature-cache row)" if share is None
                  else f"{100 * share:.0f}% — **{verdict(share, GOAL_SHARE)}**")
    return [f"Goals (the 2-core CPU, 96 px, 4 epochs; {note}):", "",
            f"- whole search, all together vs naive, ≥ {GOAL_SPEEDUP:.1f}x: {total:.2f}x — "
            f"**{verdict(total, GOAL_SPEEDUP)}**",
            f"- feature cache alone within {100 * GOAL_SHARE:.0f}% of its search-level per-step limit: {share_text}"]


def flop_rate_lines(steps: list[StepProbe], matmul: float) -> list[str]:
    """Markdown lines: achieved TFLOP/s of the probed steps and their share of the measured matmul rate."""
    lines = []
    for s in steps:
        live, cached = s.live_flop / s.live_ms / 1e9, s.cached_flop / s.cached_ms / 1e9
        lines.append([s.variant, f"{live:.3f}", f"{100 * live * 1e12 / matmul:.0f}%", f"{cached:.3f}",
                      f"{100 * cached * 1e12 / matmul:.0f}%"])
    return [f"Reference: {matmul / 1e12:.3f} TFLOP/s, the measured rate of a large fp32 matmul on the same device "
            "and threads; not the device's peak, so the shares below are not a model FLOP utilisation (MFU). "
            "FLOPs are those PyTorch's FlopCounterMode counts per step. A share above 100% is possible: a step's "
            "kernels (convolutions, mostly) can run faster than that one reference matmul, which itself runs at "
            "or below the hardware's peak.", "",
            *table(["variant", "live step TFLOP/s", "live step, share of matmul rate", "cached step TFLOP/s",
                    "cached step, share of matmul rate"], lines)]


def raw_table(runs: list[Run], repeats: int) -> list[str]:
    """Markdown lines: every run's wall seconds, one line per (row, epochs), one column per repeat."""
    cells = sorted({(r.row, r.epochs) for r in runs}, key=lambda c: (c[1], list(ROWS).index(c[0])))
    return table(["row", "epochs", *(f"repeat {r + 1}" for r in range(repeats))],
                 [[row, str(epochs), *(f"{s:.1f}" for s in walls(runs, row, epochs))] for row, epochs in cells])


def ablation_report(settings: AblationSettings, result: AblationResult, command: str) -> str:
    """The Markdown report of `result`, naming `command`; its last line is `total speedup N.NNx`."""
    runs, epochs = result.runs, settings.epochs
    rows = rows_for(result.bf16)
    total = speedup(walls(runs, "naive", epochs), walls(runs, "all", epochs))
    share = None
    step_lines = ["No feature-cache row ran."]
    if "features" in rows:
        bound = search_bound(variant_medians(runs, "naive", epochs), {s.variant: s.ratio for s in result.steps})
        measured = speedup(walls(runs, "naive", epochs), walls(runs, "features", epochs))
        share = share_of_bound(measured, bound)
        measured_trials = speedup(trial_seconds(runs, "naive", epochs), trial_seconds(runs, "features", epochs))
        step_lines = step_section(result.steps, variant_medians(runs, "naive", epochs),
                                  variant_medians(runs, "features", epochs), bound, measured, measured_trials)
    split = result.split
    lrs = "; ".join(f"{v}: " + ", ".join(f"{t['lr']:.2e}" for t in result.trials if t["variant"] == v)
                    for v in settings.variants)
    return "\n".join([
        "# petseg benchmark", "",
        f"Command: `{command}`  ",
        f"Machine: {result.machine}.  ",
        f"Data: generated images in the Oxford-IIIT Pet layout (petseg.synthetic), {settings.images} images "
        f"({split['train']} train, {split['val']} val, {split['test']} test), {settings.size} px, offline "
        f"augmentation ({2 * split['train']} training items per epoch); batch {settings.batch_size}; {epochs} epochs "
        f"per trial; {settings.samples} learning rate(s) per variant, {len(result.trials)} trials per search; "
        f"random-init weights; {settings.cpus_per_trial:g} CPU / {settings.gpus_per_trial:g} GPU per trial, up to "
        f"{result.slots} trials at once.  ",
        "Learning rates (drawn once by petseg's seeded searcher, random sampler, seed 0; the same in every run): "
        f"{lrs}.",
        "",
        f"Every run ran exactly these trials: {all(r.same_trials for r in runs)}; every trial ran all its epochs "
        f"(ASHA and early stopping off): {all(r.every_epoch for r in runs)}.", "",
        f"## Search wall time by optimisation ({settings.repeats} repeats each, {epochs} epochs)", "",
        *ablation_table(runs, rows, epochs, result.bf16), "",
        "Wall time: from the start of the Tune search to its end (every trial's training and validation and the "
        "one-off cache builds inside the trials; Ray's start-up and the data generation are outside). Trial s: "
        "the sum of the trials' own training seconds, median over repeats (without Tune's scheduling and trial "
        "start-up). Speedup: "
        "median naive over the row's median. Every repeat of every row used fresh cache folders, so each paid its "
        "own one-off backbone passes and decoding; repeats ran in an order rotated per repeat.", "",
        "## How the advantage grows with the epochs", "",
        *scaling_section(runs, settings.scaling_epochs), "",
        "## Per-step limit of the feature cache", "",
        "One training step with the live backbone (backbone forward + head forward/backward + optimiser step) over "
        "one head-only step on cached features: same batch and size, fp32 (the precision of the feature-cache row), "
        f"{max(1, int(settings.cpus_per_trial))} torch thread(s) as in a trial, one probe at a time; median of "
        f"{settings.step_repeats} steps after 2 warm-up steps" + (", CUDA synchronised" if settings.device == "cuda"
                                                                 else "")
        + ", timed in this run before the searches.", "",
        *step_lines, "",
        "## Goals", "",
        *goal_lines(total, share, settings, result.cores), "",
        "## FLOP rate of the probed steps, as a share of a measured matmul rate", "",
        *flop_rate_lines(result.steps, result.matmul), "",
        "## Raw wall times (s)", "",
        *raw_table(runs, settings.repeats), "",
        f"total speedup {total:.2f}x",
    ]) + "\n"
