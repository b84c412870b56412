"""What each of petseg's speed-ups buys on the same search: every row of the ablation, repeated with fresh caches.

Every run is the same search: the same trials (learning rates drawn once by petseg's seeded searcher and
handed to every run as a fixed list), ASHA and early stopping off, so every trial runs every epoch. Each
row runs `repeats` times, in an order rotated every repeat, each time with fresh cache folders, so every
repeat pays its one-off backbone passes and decoding. `ablation_report` turns the result into Markdown.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..data import DataSpec
from ..errors import ConfigError
from ..models import VARIANTS, default_variants
from ..train.engine import amp_enabled
from .machine import training_machine
from .probe import StepProbe, matmul_flops, step_probe


class Row(NamedTuple):
    """One row of the ablation: its report label and which of petseg's speed-ups it turns on."""

    label: str
    feature_cache: bool
    decoded_cache: bool
    amp: bool


# In report order.
ROWS = {
    "naive": Row("naive (live backbone every step, fp32, decode every epoch)", False, False, False),
    "decoded": Row("naive + decoded-image cache", False, True, False),
    "features": Row("naive + feature cache", True, False, False),
    "bf16": Row("naive + bf16 autocast", False, False, True),
    "all": Row("all together (feature cache + decoded cache + bf16)", True, True, True),
}
DEVICE_DEFAULTS = {"cpu": {"size": 96, "images": 96, "gpus_per_trial": 0.0, "cpus_per_trial": 1.0},
                   "cuda": {"size": 256, "images": 400, "gpus_per_trial": 0.5,
                            "cpus_per_trial": float(min(4, max(1, (os.cpu_count() or 2) // 2)))}}


@dataclass(frozen=True)
class AblationSettings:
    """What the ablation runs: device, data size, the search (variants, samples, epochs) and its repeats."""

    device: str
    size: int
    images: int
    gpus_per_trial: float
    cpus_per_trial: float
    epochs: int = 4
    scaling_epochs: tuple[int, ...] = (1, 2, 4)
    samples: int = 2
    repeats: int = 3
    batch_size: int = 8
    variants: tuple[str, ...] = tuple(default_variants())
    step_repeats: int = 7


@dataclass(frozen=True)
class Run:
    """One search of one row at one epoch count: wall seconds, each variant's trial seconds and two checks."""

    row: str
    epochs: int
    repeat: int
    seconds: float
    variant_seconds: dict[str, float]
    same_trials: bool  # ran exactly the fixed trials
    every_epoch: bool  # every trial ran all its epochs


@dataclass(frozen=True)
class AblationResult:
    """Everything the report states: the machine, the data split, the trials, every run and the step probes."""

    machine: str
    bf16: bool  # autocast computes in bf16 on this device
    split: dict[str, int]  # train / val / test image counts
    trials: list[dict]
    slots: int  # trials running at once
    cores: int
    runs: list[Run]
    steps: list[StepProbe]
    matmul: float  # FLOP/s of the reference matmul


def ablation_settings(device: str = "cpu", **given) -> AblationSettings:
    """Settings with `device`'s defaults (size, images, CPUs and GPUs per trial) wherever `given` has None."""
    if device not in DEVICE_DEFAULTS:
        raise ConfigError(f"--device {device!r}: choose one of {', '.join(DEVICE_DEFAULTS)}")
    values = {**DEVICE_DEFAULTS[device], **{key: value for key, value in given.items() if value is not None}}
    return AblationSettings(device=device, **values)


def check_settings(settings: AblationSettings) -> None:
    """Raise ConfigError, naming the flag, for settings this machine or this benchmark cannot run."""
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                          "run on a machine with a GPU and a CUDA build of torch, or use --device cpu")
    if settings.device == "cpu" and settings.gpus_per_trial:
        raise ConfigError(f"--gpus-per-trial {settings.gpus_per_trial:g} with --device cpu: "
                          "use --device cuda for GPU trials")
    if settings.device == "cuda" and not settings.gpus_per_trial:
        raise ConfigError("--device cuda needs --gpus-per-trial > 0 (default 0.5)")
    unknown = [v for v in settings.variants if v not in VARIANTS]
    if unknown or not settings.variants:
        raise ConfigError(f"unknown or no variants {unknown}; choose from: {', '.join(VARIANTS)}")
    small = {name: getattr(settings, name) for name in ("size", "images", "epochs", "samples", "repeats",
                                                         "batch_size", "step_repeats") if getattr(settings, name) < 1}
    if small or not settings.scaling_epochs or min(settings.scaling_epochs) < 1:
        raise ConfigError(f"these must be at least 1: {small or {'scaling_epochs': list(settings.scaling_epochs)}}")


def trial_slots(settings: AblationSettings, cpus: int, gpus: int) -> int:
    """Trials running at once on a machine of `cpus` and `gpus`: what they hold."""
    slots = int(cpus // settings.cpus_per_trial)
    if settings.gpus_per_trial:
        slots = min(slots, int(gpus // settings.gpus_per_trial))
    return max(1, slots)


def rows_for(bf16: bool) -> list[str]:
    """The ablation rows that apply: "+ bf16" only where autocast computes in bf16 (`bf16`)."""
    return [row for row in ROWS if row != "bf16" or bf16]


def schedule(rows: list[str], epochs: int, scaling: tuple[int, ...], repeats: int) -> list[tuple[str, int, int]]:
    """(row, epochs, repeat) of every run: each repeat covers every cell once, its order rotated per repeat."""
    cells = [(row, epochs) for row in rows] + [(row, e) for e in scaling if e != epochs for row in ("naive", "all")]
    runs = []
    for repeat in range(repeats):
        shift = repeat * len(cells) // repeats
        runs += [(row, e, repeat) for row, e in cells[shift:] + cells[:shift]]
    return runs


def walls(runs: list[Run], row: str, epochs: int) -> list[float]:
    """The search wall seconds of `row` at `epochs`, in repeat order."""
    return [r.seconds for r in sorted(runs, key=lambda r: r.repeat) if r.row == row and r.epochs == epochs]


def trial_seconds(runs: list[Run], row: str, epochs: int) -> list[float]:
    """Each repeat's sum of its trials' own training seconds (no Tune scheduling or trial start-up), in repeat order."""
    return [sum(r.variant_seconds.values()) for r in sorted(runs, key=lambda r: r.repeat)
            if r.row == row and r.epochs == epochs]


def variant_medians(runs: list[Run], row: str, epochs: int) -> dict[str, float]:
    """variant -> median over repeats of its trials' summed training seconds."""
    chosen = [r.variant_seconds for r in runs if r.row == row and r.epochs == epochs]
    return {v: statistics.median(s[v] for s in chosen) for v in chosen[0]}


def fixed_trials(variants: tuple[str, ...], samples: int, seed: int = 0) -> list[dict]:
    """[{variant, lr}] drawn once by petseg's seeded searcher (random sampler), in its order: every run's trials."""
    import optuna

    from ..tune.config import lr_bounds, resolve_config
    from ..tune.groups import VariantSearcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = resolve_config("paper", overrides={"variants": list(variants), "num_samples": samples, "seed": seed})
    searcher = VariantSearcher({v: lr_bounds(config, v) for v in variants}, samples, "val_weighted_iou", "max",
                               seed=seed, sampler="random")
    return [searcher.suggest(str(index)) for index in range(samples * len(variants))]


def probe_steps(settings: AblationSettings, device: torch.device, trials: list[dict]) -> tuple[list[StepProbe], float]:
    """The step probe of every variant and the matmul rate, at the threads a trial uses; restores the threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    try:
        lrs = {t["variant"]: t["lr"] for t in reversed(trials)}  # each variant's first learning rate
        return ([step_probe(v, lrs[v], settings.batch_size, settings.size, settings.step_repeats, device)
                 for v in settings.variants], matmul_flops(device))
    finally:
        torch.set_num_threads(threads)


def _base_values(settings: AblationSettings, work: Path) -> dict:
    """The study settings every run shares (random weights, generated data, no ASHA)."""
    return dict(variants=list(settings.variants), synthetic_images=settings.images, image_size=settings.size,
                batch_size=settings.batch_size, num_samples=settings.samples, pretrained=False, asha=False,
                cpus_per_trial=settings.cpus_per_trial, gpus_per_trial=settings.gpus_per_trial,
                storage_path=str(work / "ray"), results_dir=str(work / "results"), cache_dir=str(work / "data"))


def _prepare(settings: AblationSettings, work: Path) -> DataSpec:
    """The generated dataset's spec, made once (outside every timed search) under work/data."""
    from ..study.pets import prepare_data
    from ..tune.config import resolve_config

    with contextlib.redirect_stdout(io.StringIO()):
        return prepare_data(resolve_config("paper", overrides={**_base_values(settings, work), "decoded_cache": False}))


def run_once(settings: AblationSettings, work: Path, data: DataSpec, trials: list[dict], row: str, epochs: int,
             repeat: int) -> Run:
    """One search of `row` at `epochs` with fresh caches under `work`, timed from the start of the search."""
    from ray import tune

    from ..study.session import study_run
    from ..tune.config import resolve_config
    from ..tune.results import trial_records
    from ..tune.runner import run_search

    spec_row = ROWS[row]
    name = f"{row}-e{epochs}-r{repeat}"
    cache = work / f"cache-{name}"
    values = {**_base_values(settings, work), "name": name, "max_epochs": epochs, "patience": epochs + 1,
              "feature_cache": spec_row.feature_cache, "decoded_cache": spec_row.decoded_cache, "amp": spec_row.amp,
              "cache_dir": str(cache)}
    spec = dataclasses.replace(data, decoded_cache_dir=str(cache) if spec_row.decoded_cache else None)
    config = resolve_config("paper", overrides=values)
    with contextlib.redirect_stdout(io.StringIO()), study_run(config, lambda _: spec) as run:
        started = time.perf_counter()  # the search only: Ray has started
        path = run_search(run.config, run.data, fixed=trials)
        seconds = time.perf_counter() - started
    records = trial_records(tune.ExperimentAnalysis(path.path, storage_filesystem=path.filesystem), epochs)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(path.path, ignore_errors=True)  # the benchmark's storage is a local folder
    return Run(row, epochs, repeat, seconds, records.groupby("variant")["seconds"].sum().to_dict(),
               same_trials=sorted(records.lr.round(12)) == sorted(round(t["lr"], 12) for t in trials),
               every_epoch=bool((records.epochs == epochs).all()) and len(records) == len(trials))


def run_ablation(settings: AblationSettings, progress: Callable[[str], None] = lambda line: None) -> AblationResult:
    """Check the settings, probe the steps, then run every search of the schedule in fresh folders under a
    temporary one; `progress` gets a line after each search."""
    check_settings(settings)
    device = torch.device(settings.device)
    bf16 = amp_enabled(device)
    trials = fixed_trials(settings.variants, settings.samples)
    steps, matmul = probe_steps(settings, device, trials)
    runs = []
    with tempfile.TemporaryDirectory(prefix="petseg-bench-") as tmp:
        work = Path(tmp)
        data = _prepare(settings, work)
        plan = schedule(rows_for(bf16), settings.epochs, settings.scaling_epochs, settings.repeats)
        for index, (row, epochs, repeat) in enumerate(plan, 1):
            runs.append(run_once(settings, work, data, trials, row, epochs, repeat))
            progress(f"[benchmark] {index}/{len(plan)}: {row}, {epochs} epochs, repeat {repeat + 1}: "
                     f"{runs[-1].seconds:.1f} s")
    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return AblationResult(machine=training_machine(device, max(1, int(settings.cpus_per_trial))), bf16=bf16,
                          split={part: len(data.split[part]) for part in ("train", "val", "test")}, trials=trials,
                          slots=trial_slots(settings, cores, gpus), cores=cores, runs=runs, steps=steps,
                          matmul=matmul)
