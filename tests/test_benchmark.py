"""The benchmark library (petseg.bench) on made-up numbers: the statistics over repeats, the per-step-limit share,
the run schedule, the settings' checks, the Markdown writers of both benchmarks, and the sampler benchmark's
scoring. No search runs here, and no clock is read."""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from petseg.bench.ablation import (ROWS, AblationResult, Run, ablation_settings, check_settings, rows_for, schedule,
                                   trial_slots, variant_medians, walls)
from petseg.bench.ablation_report import ablation_report
from petseg.bench.markdown import seconds_range, table
from petseg.bench.probe import StepProbe, median_seconds
from petseg.bench.sampler import (HIGH, LOW, SamplerBenchmark, SamplerRow, SamplerSettings, candidates, objective,
                                  scores, simulate)
from petseg.bench.sampler import check_settings as check_sampler_settings
from petseg.bench.sampler_report import sampler_report, smoke_table
from petseg.bench.stats import (LineFit, Summary, line_fit, mean_and_error, search_bound, share_of_bound, speedup,
                                summarise, verdict)
from petseg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fcn_resnet50", "denseaspp_voc")
# row -> wall seconds per repeat (4 epochs), and per-variant trial seconds of every repeat
WALLS = {"naive": [300.0, 280.0, 290.0], "decoded": [270.0, 260.0, 275.0], "features": [150.0, 140.0, 160.0],
         "bf16": [200.0, 210.0, 190.0], "all": [100.0, 110.0, 105.0]}
SCALING = {2: {"naive": [150.0, 155.0, 160.0], "all": [80.0, 82.0, 78.0]},
           8: {"naive": [560.0, 570.0, 580.0], "all": [150.0, 160.0, 155.0]}}
STEPS = [StepProbe("fcn_resnet50", live_ms=400.0, cached_ms=160.0, ratio=2.5, live_flop=40_000_000_000,
                   cached_flop=10_000_000_000),
         StepProbe("denseaspp_voc", live_ms=150.0, cached_ms=50.0, ratio=3.0, live_flop=10_000_000_000,
                   cached_flop=3_000_000_000)]


def fake_runs() -> list[Run]:
    """Runs as run_ablation collects them: 5 rows at 4 epochs, naive and all together at 2 and 8."""
    runs = []
    for row, times in WALLS.items():
        for repeat, seconds in enumerate(times):
            runs.append(Run(row, 4, repeat, seconds, {"fcn_resnet50": seconds * 0.6, "denseaspp_voc": seconds * 0.4},
                            same_trials=True, every_epoch=True))
    for epochs, rows in SCALING.items():
        for row, times in rows.items():
            for repeat, seconds in enumerate(times):
                runs.append(Run(row, epochs, repeat, seconds, {v: seconds / 2 for v in VARIANTS}, True, True))
    return runs


def report(bf16: bool = True, **given) -> str:
    """The report of the made-up runs, as on a device that does (or does not) compute bf16 natively."""
    settings = ablation_settings("cpu", variants=VARIANTS, samples=1, scaling_epochs=(2, 4, 8), **given)
    result = AblationResult(machine="AMD EPYC, native bf16: yes, 2 cores", bf16=bf16,
                            split={"train": 48, "val": 24, "test": 24},
                            trials=[{"variant": "fcn_resnet50", "lr": 4.43e-3}, {"variant": "denseaspp_voc",
                                                                                  "lr": 2.03e-4}],
                            slots=2, cores=2, runs=fake_runs(), steps=STEPS, matmul=1e11)
    return ablation_report(settings, result, "python experiments/benchmark.py")


# ---- statistics over repeats ----

def test_median_range_and_speedup_from_medians():
    assert summarise([3.0, 1.0, 2.0]) == Summary(median=2.0, low=1.0, high=3.0)
    assert summarise([4.0, 1.0, 2.0, 3.0]).median == 2.5  # an even count: the mean of the middle two
    assert speedup([300.0, 280.0, 290.0], [100.0, 110.0, 105.0]) == pytest.approx(290.0 / 105.0)
    assert seconds_range([3.0, 1.0, 2.0]) == "1.0–3.0"
    assert verdict(2.5, 2.5) == "met" and verdict(2.49, 2.5) == "not met"


def test_line_fit_recovers_a_line_and_refuses_a_single_x():
    assert line_fit([2, 4, 8], [20.0, 30.0, 50.0]) == LineFit(intercept=pytest.approx(10.0), slope=pytest.approx(5.0))
    # off-line points: the least-squares line through (1, 1), (2, 3), (3, 2) is 1 + 0.5 x
    assert line_fit([1, 2, 3], [1.0, 3.0, 2.0]) == LineFit(pytest.approx(1.0), pytest.approx(0.5))
    with pytest.raises(ValueError, match="two distinct x"):
        line_fit([4, 4], [1.0, 2.0])


def test_mean_and_error_is_the_population_sd_over_root_n():
    mean, error = mean_and_error([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and error == pytest.approx(np.std([1, 2, 3, 6]) / 2)
    assert mean_and_error([5.0, 5.0]) == (5.0, 0.0)


def test_search_bound_weights_each_variant_by_its_naive_time():
    # 60 s shrinking 3x and 40 s shrinking 2x: 100 s become 40 s.
    assert search_bound({"a": 60.0, "b": 40.0}, {"a": 3.0, "b": 2.0}) == pytest.approx(2.5)
    assert search_bound({"a": 10.0, "b": 90.0}, {"a": 4.0, "b": 4.0}) == pytest.approx(4.0)
    assert share_of_bound(2.0, 2.5) == pytest.approx(0.8)


def test_median_seconds_times_only_the_calls_after_warm_up():
    ticks, calls = itertools.count(), []
    durations = iter([5.0, 1.0, 3.0])  # each timed call's seconds on the fake clock
    now = [0.0]

    def clock():
        next(ticks)
        return now[0]

    def step():
        calls.append(1)
        if len(calls) > 2:  # the two warm-up calls take no clock time
            now[0] += next(durations)

    assert median_seconds(step, torch.device("cpu"), repeats=3, warmup=2, clock=clock) == 3.0
    assert len(calls) == 5 and next(ticks) == 6  # two clock reads per timed call, none for warm-up
    with pytest.raises(ValueError, match="repeats=0"):
        median_seconds(step, torch.device("cpu"), repeats=0)


# ---- the ablation's runs ----

def test_schedule_runs_every_cell_once_per_repeat_in_rotated_order():
    plan = schedule(list(ROWS), 4, (2, 4, 8), repeats=3)
    cells = [(r, e) for r, e, _ in plan]
    assert len(plan) == 3 * 9 and len(set(cells)) == 9  # 5 rows at 4 epochs, naive and all at 2 and 8
    per_repeat = [[(r, e) for r, e, k in plan if k == repeat] for repeat in range(3)]
    assert all(sorted(p) == sorted(per_repeat[0]) for p in per_repeat)
    assert per_repeat[0][0] != per_repeat[1][0] != per_repeat[2][0]


def test_rows_skip_bf16_only_where_the_device_lacks_it():
    assert rows_for(True) == list(ROWS)
    assert rows_for(False) == [row for row in ROWS if row != "bf16"]


def test_walls_and_variant_medians_read_one_cell_in_repeat_order():
    runs = list(reversed(fake_runs()))
    assert walls(runs, "naive", 4) == [300.0, 280.0, 290.0]
    assert walls(runs, "all", 2) == [80.0, 82.0, 78.0]
    assert variant_medians(runs, "naive", 4) == {"fcn_resnet50": pytest.approx(174.0),
                                                 "denseaspp_voc": pytest.approx(116.0)}


def test_device_defaults():
    cpu, cuda = ablation_settings("cpu"), ablation_settings("cuda")
    assert (cpu.size, cpu.images, cpu.gpus_per_trial, cpu.repeats) == (96, 96, 0.0, 3)
    assert (cuda.size, cuda.gpus_per_trial) == (256, 0.5) and cuda.images > cpu.images
    assert ablation_settings("cpu", size=48, images=None).images == 96  # None: the device's default
    assert trial_slots(cuda, cpus=16, gpus=1) == 2 and trial_slots(cpu, cpus=2, gpus=0) == 2
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        ablation_settings("tpu")


def test_device_cuda_without_a_gpu_is_refused_with_a_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"torch.cuda.is_available\(\) is False"):
        check_settings(ablation_settings("cuda"))


def test_the_script_exits_2_on_the_refusal():
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "benchmark.py"), "--device", "cuda"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2 and "error: --device cuda: torch sees no CUDA GPU" in run.stderr


@pytest.mark.parametrize(("given", "message"), [
    ({"gpus_per_trial": 1.0}, "--gpus-per-trial 1 with --device cpu"),
    ({"variants": ("fcn_resnet50", "nope")}, r"unknown or no variants \['nope'\]"),
    ({"variants": ()}, r"unknown or no variants \[\]"),
    ({"repeats": 0, "size": 0}, r"at least 1: \{'size': 0, 'repeats': 0\}"),
    ({"scaling_epochs": (0, 2)}, r"at least 1: \{'scaling_epochs': \[0, 2\]\}"),
    ({"scaling_epochs": ()}, "scaling_epochs"),
])
def test_settings_the_benchmark_cannot_run_are_refused_by_flag(given, message):
    check_settings(ablation_settings("cpu"))  # the defaults run
    with pytest.raises(ConfigError, match=message):
        check_settings(ablation_settings("cpu", **given))


# ---- the ablation's report ----

def test_report_names_the_machine_rows_goals_and_ends_with_the_total():
    text = report()
    assert "Machine: AMD EPYC, native bf16: yes, 2 cores" in text
    for row in ROWS.values():
        assert f"| {row.label} |" in text
    assert "| 290.0 | 280.0–300.0 | 1.00x |" in text  # naive: median and range
    assert "| 150.0 | 140.0–160.0 | 1.93x |" in text  # feature cache: 290 / 150
    # search-level limit: fcn 174 s / 2.5, denseaspp 116 s / 3.0 -> 290 / (69.6 + 38.67)
    assert f"**{290 / (174 / 2.5 + 116 / 3):.2f}x**" in text
    assert "whole search, all together vs naive, ≥ 2.5x: 2.76x — **met**" in text
    share = 100 * (290 / 150) / (290 / (174 / 2.5 + 116 / 3))
    assert f"per-step limit: {share:.0f}% — **{'met' if share >= 85 else 'not met'}**" in text
    assert "| 2 | 155.0 | 150.0–160.0 | 80.0 | 78.0–82.0 | 1.94x |" in text  # scaling
    assert "| naive | 4 | 300.0 | 280.0 | 290.0 |" in text  # raw repeats, in repeat order
    assert "fcn_resnet50: 4.43e-03" in text and "48 train, 24 val, 24 test" in text
    assert text.rstrip().splitlines()[-1] == f"total speedup {290 / 105:.2f}x"
    assert re.fullmatch(r"total speedup \d+\.\d\dx", text.rstrip().splitlines()[-1])


def test_report_fits_a_line_to_the_scaling_medians():
    # naive medians 155, 290, 570 and all together 80, 105, 155 at 2, 4, 8 epochs
    naive, fast = line_fit([2, 4, 8], [155.0, 290.0, 570.0]), line_fit([2, 4, 8], [80.0, 105.0, 155.0])
    assert (f"naive {naive.intercept:.1f} + {naive.slope:.1f} × epochs; all together {fast.intercept:.1f} + "
            f"{fast.slope:.1f} × epochs") in report()
    assert f"the speedup tends to {naive.slope / fast.slope:.2f}x" in report()


def test_report_gives_flop_rates_as_a_share_of_the_measured_matmul_not_as_mfu():
    text = report()
    assert "Reference: 0.100 TFLOP/s, the measured rate of a large fp32 matmul" in text
    assert "MFU |" not in text and "| live step, share of matmul rate |" in text
    # fcn: 4e10 FLOP in 400 ms and 1e10 in 160 ms against 1e11 FLOP/s
    assert "| fcn_resnet50 | 0.100 | 100% | 0.062 | 62% |" in text
    assert "A share above 100% is possible" in text


def test_report_skips_the_bf16_row_where_the_device_lacks_it():
    text = report(bf16=False)
    assert "| naive + bf16 autocast |" not in text
    assert "row is skipped: this device does not compute bf16 natively" in text
    assert "| asked, not on this device |" in text  # all together: bf16 asked for, not applied


def test_report_says_when_the_run_is_not_the_goals_setting():
    assert "this run is that setting" in report()
    assert "not the goal's setting" in report(size=48)


# ---- Markdown ----

def test_markdown_table_has_a_rule_and_refuses_ragged_rows():
    assert table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    assert table(["only"], []) == ["| only |", "|---|"]
    with pytest.raises(ValueError, match="3 cells where the header has 2"):
        table(["a", "b"], [["1", "2", "3"]])


# ---- the sampler benchmark ----

def test_objective_peaks_where_asked_and_falls_faster_towards_large_rates():
    grid = np.linspace(LOW, HIGH, 3001)
    for peak in (-4.5, -3.0):
        assert grid[objective(grid, peak).argmax()] == pytest.approx(peak, abs=2e-3)
        assert objective(np.array([peak - 0.5]), peak)[0] > objective(np.array([peak + 0.5]), peak)[0]


def test_scores_read_the_best_observed_trial_and_the_later_half():
    peak = -3.0
    xs = np.array([-5.0, -3.0, -2.0, -3.5])
    observed = np.array([0.1, 0.9, 0.3, 0.5])  # the second trial looks best and is the optimum: no regret
    row = scores(xs, observed, peak, budget=4)
    assert set(row) == {"regret@2", "regret@4", "distance"}
    assert row["regret@2"] == pytest.approx(0.0, abs=1e-6) and row["regret@4"] == row["regret@2"]
    assert row["distance"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-3)  # |-2 - -3| and |-3.5 - -3|
    misled = scores(xs, np.array([0.3, 0.2, 0.1, 0.5]), peak, budget=4)  # noise makes -5 and then -3.5 look best
    assert misled["regret@2"] > 0 and misled["regret@4"] < misled["regret@2"]


def test_a_random_search_is_all_random_and_seeded():
    random = lambda seed: optuna.samplers.RandomSampler(seed=seed)  # noqa: E731
    first, again = (simulate(random, 4, -3.0, seed=7, at_once=2, noise=0.01) for _ in range(2))
    assert first.random == 4 and np.array_equal(first.xs, again.xs) and np.array_equal(first.observed, again.observed)
    assert ((first.xs >= LOW) & (first.xs <= HIGH)).all()
    assert list(candidates(8, 1))[0] == "random" and list(candidates(8, 4))[0] == "random"


def test_sampler_settings_it_cannot_run_are_refused_by_flag():
    check_sampler_settings(SamplerSettings())
    for bad in ({"budgets": (2, 0)}, {"at_once": (0,)}, {"seeds": 0}, {"budgets": ()}):
        with pytest.raises(ConfigError, match="--budgets, --at-once and --seeds must be at least 1"):
            check_sampler_settings(SamplerSettings(**bad))
    with pytest.raises(ConfigError, match="--threads 0, --smoke-budget 8, --smoke-seeds 2"):
        check_sampler_settings(SamplerSettings(threads=0))
    with pytest.raises(ConfigError, match="--smoke-seeds -1"):
        check_sampler_settings(SamplerSettings(smoke_seeds=-1))
    with pytest.raises(ConfigError, match="--noise -0.1"):
        check_sampler_settings(SamplerSettings(noise=-0.1))


def test_sampler_report_compares_every_row_with_random():
    rows = [SamplerRow(2, 1, "random", {"random trials": (2.0, 0.0), "regret@2": (0.2, 0.01), "distance": (0.9, 0.05),
                                        "s/suggestion": (0.0003, 0.0)}, random_distance=0.9),
            SamplerRow(2, 1, "GP", {"random trials": (1.0, 0.0), "regret@2": (0.25, 0.02), "distance": (1.35, 0.06),
                                    "s/suggestion": (0.05, 0.0)}, random_distance=0.9)]
    text = sampler_report(SamplerSettings(smoke_seeds=0), SamplerBenchmark("a CPU", rows, objective_seconds=12.4))
    assert "| budget | trials at once | sampler | random trials | regret@2 | later-half distance |" in text
    assert "| 2 | 1 | GP | 1.00 | 0.2500 ± 0.0200 | 1.350 ± 0.060 | 1.50 | 0.0500 |" in text
    assert "Wall time: 12 s on the known objective\n" in text and "## On the smoke study" not in text
    assert "--smoke-seeds 0 --smoke-budget 8`" in text and "(120 searches per row)" in text


def test_smoke_table_finds_each_samplers_best_and_shortfall():
    from petseg.tune.search_space import SAMPLERS

    runs = {}
    for index, sampler in enumerate(SAMPLERS):
        runs[(sampler, 0)] = [{"variant": v, "start": float(n), "score": 0.5 + 0.1 * index + 0.01 * n}
                              for v in ("fcn_resnet50", "denseaspp_voc", "cutdenseaspp_voc") for n in range(2)]
    lines = smoke_table(runs, budget=2)
    assert lines[0] == "| sampler | best@2 | shortfall@2 |" and len(lines) == 2 + len(SAMPLERS)
    best = 0.5 + 0.1 * (len(SAMPLERS) - 1) + 0.01
    first = f"| {list(SAMPLERS.values())[0]} | {0.51:.4f} | {best - 0.51:.4f} ± 0.0000 |"
    assert first in lines
