"""What each of petseg's speed-ups buys on the same six-variant search: an ablation, repeated, on a named machine.

    python experiments/benchmark.py                              # CPU: 96 px, 96 generated images, 4 epochs, 3 repeats
                                                                 # (27 searches, about 80 min on 2 cores)
    python experiments/benchmark.py --device cuda --size 256     # a GPU: 400 images, 0.5 GPU and 4 CPUs per trial
    python experiments/benchmark.py --images 16 --size 48 --epochs 1 --samples 1 --repeats 1 \\
        --scaling-epochs 1,2 --output /tmp/bench.md              # a check that it runs (minutes)

Every run is the same search: the same trials (learning rates drawn once by petseg's seeded searcher and
handed to every run as a fixed list), ASHA and early stopping off, so every trial runs every epoch. Rows:

    naive                 the backbone runs on every step, fp32, images decoded every epoch
    + decoded-image cache images decoded and resized once
    + feature cache       backbone features computed once per backbone, the head trains on them
    + bf16 autocast       only where the device computes bf16 natively (always on CUDA); else skipped, said so
    all together          the three at once (petseg's default)

Each row runs --repeats times, in an order rotated every repeat, each time with fresh cache folders, so
every repeat pays its one-off backbone passes and decoding. The report gives each row's median and range
(min-max) of the search wall time and its speedup over naive from the medians; naive and all together
again at each of --scaling-epochs (the one-off passes amortise as epochs grow); the per-step limit of the
feature cache (a live-backbone training step over a head-only step on cached features, per variant,
timed in this run) and how close the feature cache alone comes to it; petseg's speed goals, met or not;
the FLOP rate of those steps as a share of a measured matmul rate; every repeat's raw wall time. The machine,
the versions and the command are named. The last line is `total speedup N.NNx` (all together over naive, from
medians).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from petseg.errors import PetsegError
from petseg.models import VARIANTS, default_variants
from petseg.train.engine import amp_enabled, cpu_has_native_bf16

# Row key -> (label, feature_cache, decoded_cache, amp), in report order.
ROWS = {
    "naive": ("naive (live backbone every step, fp32, decode every epoch)", False, False, False),
    "decoded": ("naive + decoded-image cache", False, True, False),
    "features": ("naive + feature cache", True, False, False),
    "bf16": ("naive + bf16 autocast", False, False, True),
    "all": ("all together (feature cache + decoded cache + bf16)", True, True, True),
}
# petseg's speed goals, stated for a 2-core CPU at 96 px and 4 epochs.
GOAL_SPEEDUP, GOAL_SHARE, GOAL_SETTING = 2.5, 0.85, {"device": "cpu", "size": 96, "epochs": 4}
DEVICE_DEFAULTS = {"cpu": {"size": 96, "images": 96, "gpus_per_trial": 0.0, "cpus_per_trial": 1.0},
                   "cuda": {"size": 256, "images": 400, "gpus_per_trial": 0.5,
                            "cpus_per_trial": float(min(4, max(1, (os.cpu_count() or 2) // 2)))}}


class UsageError(Exception):
    """Flags that cannot run here; main prints the message and exits 2."""


def parse_args(argv=None) -> argparse.Namespace:
    """Benchmark flags, with the device's defaults filled in where a flag was left out."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where trials train (cuda: trials get GPUs; an error when torch sees none)")
    parser.add_argument("--size", type=int, help="image size in pixels (cpu 96, cuda 256)")
    parser.add_argument("--images", type=int, help="generated images, half train, a quarter val (cpu 96, cuda 400)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs every trial of the ablation runs")
    parser.add_argument("--scaling-epochs", default="1,2,4", help="comma-separated epoch counts: naive vs all together")
    parser.add_argument("--samples", type=int, default=2, help="learning rates per variant")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row (median and range reported)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variants", default=",".join(default_variants()),
                        help="comma-separated variants (default: the paper's six)")
    parser.add_argument("--cpus-per-trial", type=float, help="cpu 1, cuda min(4, half the cores)")
    parser.add_argument("--gpus-per-trial", type=float, help="cuda only; default 0.5")
    parser.add_argument("--step-repeats", type=int, default=7, help="timed training steps per probe (median)")
    parser.add_argument("--output", default="results/benchmark.md", help="where the Markdown report goes")
    args = parser.parse_args(argv)
    for name, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.scaling_epochs = sorted({int(e) for e in args.scaling_epochs.split(",") if e.strip()})
    return args


def check_args(args) -> None:
    """Raise UsageError for flags this machine or this benchmark cannot run."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "run on a machine with a GPU and a CUDA build of torch, or use --device cpu")
    if args.device == "cpu" and args.gpus_per_trial:
        raise UsageError(f"--gpus-per-trial {args.gpus_per_trial:g} with --device cpu: "
                         "use --device cuda for GPU trials")
    if args.device == "cuda" and not args.gpus_per_trial:
        raise UsageError("--device cuda needs --gpus-per-trial > 0 (default 0.5)")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        raise UsageError(f"unknown or no variants {unknown}; choose from: {', '.join(VARIANTS)}")
    small = {name: getattr(args, name) for name in ("size", "images", "epochs", "samples", "repeats", "batch_size",
                                                     "step_repeats") if getattr(args, name) < 1}
    if small or not args.scaling_epochs or min(args.scaling_epochs) < 1:
        raise UsageError(f"these must be at least 1: {small or {'scaling_epochs': args.scaling_epochs}}")


# ---- arithmetic (pure) ----

def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of one row's repeats."""
    return statistics.median(values), min(values), max(values)


def speedup(baseline: list[float], faster: list[float]) -> float:
    """Median of `baseline` over median of `faster` (the speedup from medians)."""
    return statistics.median(baseline) / statistics.median(faster)


def search_bound(naive_seconds: dict[str, float], ratios: dict[str, float]) -> float:
    """The search-level limit of the feature cache: sum_v T_v / sum_v (T_v / r_v).

    T_v: variant v's naive training seconds; r_v: its live-step / cached-step ratio. The speedup of the
    whole search if every variant's naive time shrank by its own per-step ratio (and nothing else changed).
    """
    return sum(naive_seconds.values()) / sum(seconds / ratios[v] for v, seconds in naive_seconds.items())


def share_of_bound(measured: float, bound: float) -> float:
    """How much of the limit the measured speedup reaches (1.0: all of it)."""
    return measured / bound


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs: the one-off seconds and the seconds per epoch."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def verdict(value: float, goal: float) -> str:
    """"met" or "not met"."""
    return "met" if value >= goal else "not met"


def trial_slots(args, cpus: int, gpus: int) -> int:
    """Trials running at once on this machine: what its CPUs (and GPUs) hold."""
    slots = int(cpus // args.cpus_per_trial)
    if args.gpus_per_trial:
        slots = min(slots, int(gpus // args.gpus_per_trial))
    return max(1, slots)


def rows_for(device: torch.device) -> list[str]:
    """The ablation rows that apply on `device` (+ bf16 only where autocast computes in bf16)."""
    return [row for row in ROWS if row != "bf16" or amp_enabled(device)]


def schedule(rows: list[str], epochs: int, scaling: list[int], repeats: int) -> list[tuple[str, int, int]]:
    """(row, epochs, repeat) of every run: each repeat covers every cell once, its order rotated per repeat."""
    cells = [(row, epochs) for row in rows] + [(row, e) for e in scaling if e != epochs for row in ("naive", "all")]
    runs = []
    for repeat in range(repeats):
        shift = repeat * len(cells) // repeats
        runs += [(row, e, repeat) for row, e in cells[shift:] + cells[:shift]]
    return runs


def walls(runs: list[dict], row: str, epochs: int) -> list[float]:
    """The search wall seconds of `row` at `epochs`, in repeat order."""
    return [r["seconds"] for r in sorted(runs, key=lambda r: r["repeat"]) if r["row"] == row and r["epochs"] == epochs]


def trial_seconds(runs: list[dict], row: str, epochs: int) -> list[float]:
    """Each repeat's sum of its trials' own training seconds (no Tune scheduling or trial start-up), in repeat order."""
    return [sum(r["variant_seconds"].values()) for r in sorted(runs, key=lambda r: r["repeat"])
            if r["row"] == row and r["epochs"] == epochs]


def variant_medians(runs: list[dict], row: str, epochs: int) -> dict[str, float]:
    """variant -> median over repeats of its trials' summed training seconds."""
    chosen = [r["variant_seconds"] for r in runs if r["row"] == row and r["epochs"] == epochs]
    return {v: statistics.median(s[v] for s in chosen) for v in chosen[0]}


# ---- the machine ----

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(device: torch.device, trial_threads: int) -> str:
    """CPU model, native bf16, cores, torch threads, the GPU when on CUDA, and the library versions."""
    import ray
    import torchvision

    gpu = f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "no GPU used"
    return (f"{cpu_model()}, native bf16: {'yes' if cpu_has_native_bf16() else 'no'}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()} in the driver and {trial_threads} per trial; {gpu}; "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, ray {ray.__version__}")


def command_line(argv) -> str:
    """The exact command this report came from."""
    return shlex.join(["python", "experiments/benchmark.py", *(sys.argv[1:] if argv is None else argv)])


# ---- the searches ----

def fixed_trials(variants: list[str], samples: int, seed: int = 0) -> list[dict]:
    """[{variant, lr}] drawn once by petseg's seeded searcher (random sampler), in its order: every run's trials."""
    import optuna

    from petseg.tune.config import lr_bounds, resolve_config
    from petseg.tune.groups import VariantSearcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = resolve_config("paper", overrides={"variants": variants, "num_samples": samples, "seed": seed})
    searcher = VariantSearcher({v: lr_bounds(config, v) for v in variants}, samples, "val_weighted_iou", "max",
                               seed=seed, sampler="random")
    return [searcher.suggest(str(index)) for index in range(samples * len(variants))]


def base_values(args, work: Path) -> dict:
    """The study settings every run shares (random weights, generated data, no ASHA)."""
    return dict(variants=args.variants, synthetic_images=args.images, image_size=args.size,
                batch_size=args.batch_size, num_samples=args.samples, pretrained=False, asha=False,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                storage_path=str(work / "ray"), results_dir=str(work / "results"), cache_dir=str(work / "data"))


def prepare(args, work: Path):
    """The generated dataset's spec, made once (outside every timed search) under work/data."""
    from petseg.study.pets import prepare_data
    from petseg.tune.config import resolve_config

    with contextlib.redirect_stdout(io.StringIO()):
        return prepare_data(resolve_config("paper", overrides={**base_values(args, work), "decoded_cache": False}))


def run_once(args, work: Path, data, trials: list[dict], row: str, epochs: int, repeat: int) -> dict:
    """One search of `row` at `epochs` with fresh caches; its wall seconds, per-variant trial seconds and checks."""
    from ray import tune

    from petseg.study.session import study_run
    from petseg.tune.config import resolve_config
    from petseg.tune.results import trial_records
    from petseg.tune.runner import run_search

    _, feature_cache, decoded_cache, amp = ROWS[row]
    name = f"{row}-e{epochs}-r{repeat}"
    cache = work / f"cache-{name}"
    values = {**base_values(args, work), "name": name, "max_epochs": epochs, "patience": epochs + 1,
              "feature_cache": feature_cache, "decoded_cache": decoded_cache, "amp": amp, "cache_dir": str(cache)}
    spec = dataclasses.replace(data, decoded_cache_dir=str(cache) if decoded_cache else None)
    config = resolve_config("paper", overrides=values)
    with contextlib.redirect_stdout(io.StringIO()), study_run(config, lambda _: spec) as run:
        started = time.perf_counter()  # the search only: Ray has started
        path = run_search(run.config, run.data, fixed=trials)
        seconds = time.perf_counter() - started
    records = trial_records(tune.ExperimentAnalysis(path.path, storage_filesystem=path.filesystem), epochs)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(path.path, ignore_errors=True)  # the benchmark's storage is a local folder
    return {"row": row, "epochs": epochs, "repeat": repeat, "seconds": seconds,
            "variant_seconds": records.groupby("variant")["seconds"].sum().to_dict(),
            "same_trials": sorted(records.lr.round(12)) == sorted(round(t["lr"], 12) for t in trials),
            "every_epoch": bool((records.epochs == epochs).all()) and len(records) == len(trials)}


# ---- the per-step probes ----

def median_seconds(step, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of `repeats` calls of `step` after `warmup` untimed ones (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def flops_of(step) -> int:
    """FLOPs PyTorch's FlopCounterMode counts over one call of `step` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def step_probe(variant: str, lr: float, args, device: torch.device, amp: bool = False) -> dict:
    """One training step with the live backbone and one head-only step on cached features, timed and counted.

    Both are petseg's own training step (train_one_epoch over one batch: forward, loss, backward, the
    variant's optimiser step), same batch and size, fp32 unless `amp`; the cached features are
    stored in fp16 and read back as float32, as the feature cache does.
    """
    from petseg.models import build_seeded_model
    from petseg.models.segmenter import map_features
    from petseg.train.engine import train_one_epoch
    from petseg.train.features import HeadOnly
    from petseg.train.training import make_optimizer
    from petseg.train.trial_spec import Searched

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.size, args.size, generator=generator).to(device)
    target = torch.randint(0, 3, (args.batch_size, args.size, args.size), generator=generator).to(device)
    features = map_features(lambda tensor: tensor.half().float(), model.features(images))
    optimizer, _ = make_optimizer(model, variant, Searched(lr), total_steps=1000)
    head = HeadOnly(model, args.size)
    live = lambda: train_one_epoch(model, [(images, target)], optimizer, device, amp=amp)  # noqa: E731
    cached = lambda: train_one_epoch(head, [(features, target)], optimizer, device, amp=amp)  # noqa: E731
    live_s = median_seconds(live, device, args.step_repeats)
    cached_s = median_seconds(cached, device, args.step_repeats)
    return {"variant": variant, "live_ms": 1000 * live_s, "cached_ms": 1000 * cached_s, "ratio": live_s / cached_s,
            "live_flop": flops_of(live), "cached_flop": flops_of(cached)}


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of a large matrix product on `device` in `dtype` (the probes' precision): a reference rate,
    not the device's peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, device, repeats=5, warmup=1)


def probes(args, device: torch.device, trials: list[dict]) -> tuple[list[dict], float]:
    """The step probe of every variant and the matmul rate, at the threads a trial uses; restores the threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(args.cpus_per_trial)))
    try:
        lrs = {t["variant"]: t["lr"] for t in reversed(trials)}  # each variant's first learning rate
        return [step_probe(v, lrs[v], args, device) for v in args.variants], matmul_flops(device)
    finally:
        torch.set_num_threads(threads)


# ---- the report ----

def fmt_range(values: list[float]) -> str:
    """"min-max" seconds."""
    _, low, high = summary(values)
    return f"{low:.1f}–{high:.1f}"


def ablation_table(runs: list[dict], rows: list[str], epochs: int, device: torch.device) -> list[str]:
    """Markdown lines: each row's median and range of wall seconds and its speedup over naive."""
    naive = walls(runs, "naive", epochs)
    lines = ["| row | feature cache | decoded cache | bf16 autocast | median s | range s | speedup vs naive | "
             "trial s (median) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        label, features, decoded, amp = ROWS[row]
        bf16 = "yes" if amp and amp_enabled(device) else ("asked, not on this device" if amp else "no")
        times = walls(runs, row, epochs)
        lines.append(f"| {label} | {'yes' if features else 'no'} | {'yes' if decoded else 'no'} | {bf16} | "
                     f"{summary(times)[0]:.1f} | {fmt_range(times)} | {speedup(naive, times):.2f}x | "
                     f"{statistics.median(trial_seconds(runs, row, epochs)):.1f} |")
    if "bf16" not in rows:
        lines += ["", "The “naive + bf16 autocast” row is skipped: this device does not compute bf16 natively "
                      "(no AVX512-BF16 / AMX), so petseg's autocast stays off here."]
    return lines


def scaling_section(runs: list[dict], scaling: list[int]) -> list[str]:
    """Markdown lines: naive vs all together at each epoch count, and the straight-line fit of their medians."""
    lines = ["| epochs | naive median s | naive range s | all together median s | all together range s | speedup |",
             "|---|---|---|---|---|---|"]
    for e in scaling:
        naive, fast = walls(runs, "naive", e), walls(runs, "all", e)
        lines.append(f"| {e} | {summary(naive)[0]:.1f} | {fmt_range(naive)} | {summary(fast)[0]:.1f} | "
                     f"{fmt_range(fast)} | {speedup(naive, fast):.2f}x |")
    if len(scaling) >= 2:
        (a_naive, b_naive), (a_fast, b_fast) = (line_fit(scaling, [summary(walls(runs, row, e))[0] for e in scaling])
                                                for row in ("naive", "all"))
        limit = (f"the speedup tends to {b_naive / b_fast:.2f}x (the ratio of the per-epoch costs) as the epochs grow"
                 if b_naive > 0 and b_fast > 0 else "a per-epoch cost is not positive here, so noise dominates the fit")
        lines += ["", f"Straight-line fit of the medians, wall s ≈ one-off + per-epoch × epochs: naive "
                      f"{a_naive:.1f} + {b_naive:.1f} × epochs; all together {a_fast:.1f} + {b_fast:.1f} × epochs. "
                      f"All together pays its one-off backbone passes and decoding up front; {limit}."]
    return lines


def step_section(steps: list[dict], naive_t: dict[str, float], features_t: dict[str, float], bound: float,
                 measured: float, measured_trials: float) -> list[str]:
    """Markdown lines: per-variant step times and limits, and the search-level limit and share."""
    lines = ["| variant | live step ms | cached step ms | limit (live / cached) | naive trial s | "
             "feature-cache trial s | feature-cache speedup | share of limit |", "|---|---|---|---|---|---|---|---|"]
    for s in steps:
        v = s["variant"]
        gain = naive_t[v] / features_t[v]
        lines.append(f"| {v} | {s['live_ms']:.1f} | {s['cached_ms']:.1f} | {s['ratio']:.2f}x | {naive_t[v]:.1f} | "
                     f"{features_t[v]:.1f} | {gain:.2f}x | {100 * share_of_bound(gain, s['ratio']):.0f}% |")
    lines += ["", f"Search-level limit: **{bound:.2f}x** = Σ T_v / Σ (T_v / r_v), T_v a variant's naive trial "
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
    return lines


def goal_lines(total: float, share: float | None, args, cores: int) -> list[str]:
    """petseg's two speed goals against this run's numbers, with whether this run is the goal's setting."""
    setting = {"device": args.device, "size": args.size, "epochs": args.epochs}
    same = setting == GOAL_SETTING and cores == 2
    note = ("this run is that setting" if same else
            f"this run is {args.device}, {args.size} px, {args.epochs} epochs, {cores} cores: not the goal's setting, "
            "shown for reference")
    share_text = ("not measured (no feature-cache row)" if share is None
                  else f"{100 * share:.0f}% — **{verdict(share, GOAL_SHARE)}**")
    return [f"Goals (the 2-core CPU, 96 px, 4 epochs; {note}):", "",
            f"- whole search, all together vs naive, ≥ {GOAL_SPEEDUP:.1f}x: {total:.2f}x — "
            f"**{verdict(total, GOAL_SPEEDUP)}**",
            f"- feature cache alone within {100 * GOAL_SHARE:.0f}% of its search-level per-step limit: {share_text}"]


def flop_rate_lines(steps: list[dict], matmul: float) -> list[str]:
    """Markdown lines: achieved TFLOP/s of the probed steps and their share of the measured matmul rate."""
    lines = [f"Reference: {matmul / 1e12:.3f} TFLOP/s, the measured rate of a large fp32 matmul on the same device "
             "and threads; not the device's peak, so the shares below are not a model FLOP utilisation (MFU). "
             "FLOPs are those PyTorch's FlopCounterMode counts per step. A share above 100% is possible: a step's "
             "kernels (convolutions, mostly) can run faster than that one reference matmul, which itself runs at "
             "or below the hardware's peak.", "",
             "| variant | live step TFLOP/s | live step, share of matmul rate | cached step TFLOP/s | "
             "cached step, share of matmul rate |",
             "|---|---|---|---|---|"]
    for s in steps:
        live, cached = s["live_flop"] / s["live_ms"] / 1e9, s["cached_flop"] / s["cached_ms"] / 1e9
        lines.append(f"| {s['variant']} | {live:.3f} | {100 * live * 1e12 / matmul:.0f}% | {cached:.3f} | "
                     f"{100 * cached * 1e12 / matmul:.0f}% |")
    return lines


def raw_table(runs: list[dict], repeats: int) -> list[str]:
    """Markdown lines: every run's wall seconds, one line per (row, epochs), one column per repeat."""
    lines = ["| row | epochs | " + " | ".join(f"repeat {r + 1}" for r in range(repeats)) + " |",
             "|---|---|" + "---|" * repeats]
    cells = sorted({(r["row"], r["epochs"]) for r in runs}, key=lambda c: (c[1], list(ROWS).index(c[0])))
    for row, epochs in cells:
        lines.append(f"| {row} | {epochs} | " + " | ".join(f"{s:.1f}" for s in walls(runs, row, epochs)) + " |")
    return lines


def render(args, info: dict, runs: list[dict], steps: list[dict], matmul: float) -> str:
    """The Markdown report; its last line is `total speedup N.NNx`.

    info: command, machine, device, split (train / val / test counts), trials, slots, cores.
    """
    device, epochs = info["device"], args.epochs
    rows = rows_for(device)
    total = speedup(walls(runs, "naive", epochs), walls(runs, "all", epochs))
    naive_t = variant_medians(runs, "naive", epochs)
    measured = share = None
    step_lines = []
    if "features" in rows:
        features_t = variant_medians(runs, "features", epochs)
        bound = search_bound(naive_t, {s["variant"]: s["ratio"] for s in steps})
        measured = speedup(walls(runs, "naive", epochs), walls(runs, "features", epochs))
        share = share_of_bound(measured, bound)
        measured_trials = speedup(trial_seconds(runs, "naive", epochs), trial_seconds(runs, "features", epochs))
        step_lines = step_section(steps, naive_t, features_t, bound, measured, measured_trials)
    split = info["split"]
    lrs = "; ".join(f"{v}: " + ", ".join(f"{t['lr']:.2e}" for t in info["trials"] if t["variant"] == v)
                    for v in args.variants)
    checks_same = all(r["same_trials"] for r in runs)
    checks_epochs = all(r["every_epoch"] for r in runs)
    return "\n".join([
        "# petseg benchmark", "",
        f"Command: `{info['command']}`  ",
        f"Machine: {info['machine']}.  ",
        f"Data: generated images in the Oxford-IIIT Pet layout (petseg.synthetic), {args.images} images "
        f"({split['train']} train, {split['val']} val, {split['test']} test), {args.size} px, offline augmentation "
        f"({2 * split['train']} training items per epoch); batch {args.batch_size}; {epochs} epochs per trial; "
        f"{args.samples} learning rate(s) per variant, {len(info['trials'])} trials per search; random-init weights; "
        f"{args.cpus_per_trial:g} CPU / {args.gpus_per_trial:g} GPU per trial, up to {info['slots']} trials at once.  ",
        "Learning rates (drawn once by petseg's seeded searcher, random sampler, seed 0; the same in every run): "
        f"{lrs}.",
        "",
        f"Every run ran exactly these trials: {checks_same}; every trial ran all its epochs (ASHA and early "
        f"stopping off): {checks_epochs}.", "",
        f"## Search wall time by optimisation ({args.repeats} repeats each, {epochs} epochs)", "",
        *ablation_table(runs, rows, epochs, device), "",
        "Wall time: from the start of the Tune search to its end (every trial's training and validation and the "
        "one-off cache builds inside the trials; Ray's start-up and the data generation are outside). Trial s: "
        "the sum of the trials' own training seconds, median over repeats (without Tune's scheduling and trial "
        "start-up). Speedup: "
        "median naive over the row's median. Every repeat of every row used fresh cache folders, so each paid its "
        "own one-off backbone passes and decoding; repeats ran in an order rotated per repeat.", "",
        "## How the advantage grows with the epochs", "",
        *scaling_section(runs, args.scaling_epochs), "",
        "## Per-step limit of the feature cache", "",
        "One training step with the live backbone (backbone forward + head forward/backward + optimiser step) over "
        "one head-only step on cached features: same batch and size, fp32 (the precision of the feature-cache row), "
        f"{max(1, int(args.cpus_per_trial))} torch thread(s) as in a trial, one probe at a time; median of "
        f"{args.step_repeats} steps after 2 warm-up steps" + (", CUDA synchronised" if device.type == "cuda" else "")
        + ", timed in this run before the searches.", "",
        *(step_lines or ["No feature-cache row ran."]), "",
        "## Goals", "",
        *goal_lines(total, share, args, info["cores"]), "",
        "## FLOP rate of the probed steps, as a share of a measured matmul rate", "",
        *flop_rate_lines(steps, matmul), "",
        "## Raw wall times (s)", "",
        *raw_table(runs, args.repeats), "",
        f"total speedup {total:.2f}x",
    ]) + "\n"


def run_all(args, device: torch.device, trials: list[dict]):
    """The data spec and every search run of the schedule, each in fresh folders under a temporary one."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="petseg-bench-") as tmp:
        work = Path(tmp)
        data = prepare(args, work)
        plan = schedule(rows_for(device), args.epochs, args.scaling_epochs, args.repeats)
        for index, (row, epochs, repeat) in enumerate(plan, 1):
            runs.append(run_once(args, work, data, trials, row, epochs, repeat))
            print(f"[benchmark] {index}/{len(plan)}: {row}, {epochs} epochs, repeat {repeat + 1}: "
                  f"{runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return data, runs


def main(argv=None) -> int:
    """Probe the steps, run every search repeat, print and write the report; 2 on unusable flags."""
    try:
        args = parse_args(argv)
        check_args(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    trials = fixed_trials(args.variants, args.samples)
    steps, matmul = probes(args, device, trials)
    try:
        data, runs = run_all(args, device, trials)
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = {"command": command_line(argv), "machine": machine_line(device, max(1, int(args.cpus_per_trial))),
            "device": device, "split": {part: len(data.split[part]) for part in ("train", "val", "test")},
            "trials": trials, "cores": os.cpu_count() or 1,
            "slots": trial_slots(args, os.cpu_count() or 1, torch.cuda.device_count() if device.type == "cuda" else 0)}
    report = render(args, info, runs, steps, matmul)
    print(report, end="")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
