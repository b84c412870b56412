"""experiments/benchmark.py's pure parts on made-up numbers: the arithmetic, the per-step-limit share, the run
schedule, the report, and the --device cuda refusal without a GPU. No search runs here."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    """experiments/benchmark.py as a module."""
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "experiments" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = ["fcn_resnet50", "denseaspp_voc"]
# row -> wall seconds per repeat (4 epochs), and per-variant trial seconds of every repeat
WALLS = {"naive": [300.0, 280.0, 290.0], "decoded": [270.0, 260.0, 275.0], "features": [150.0, 140.0, 160.0],
         "bf16": [200.0, 210.0, 190.0], "all": [100.0, 110.0, 105.0]}
SCALING = {2: {"naive": [150.0, 155.0, 160.0], "all": [80.0, 82.0, 78.0]},
           8: {"naive": [560.0, 570.0, 580.0], "all": [150.0, 160.0, 155.0]}}


def fake_runs() -> list[dict]:
    """Runs as main collects them: 5 rows at 4 epochs, naive and all together at 2 and 8."""
    runs = []
    for row, times in WALLS.items():
        for repeat, seconds in enumerate(times):
            runs.append({"row": row, "epochs": 4, "repeat": repeat, "seconds": seconds, "same_trials": True,
                         "every_epoch": True,
                         "variant_seconds": {"fcn_resnet50": seconds * 0.6, "denseaspp_voc": seconds * 0.4}})
    for epochs, rows in SCALING.items():
        for row, times in rows.items():
            for repeat, seconds in enumerate(times):
                runs.append({"row": row, "epochs": epochs, "repeat": repeat, "seconds": seconds, "same_trials": True,
                             "every_epoch": True, "variant_seconds": {v: seconds / 2 for v in VARIANTS}})
    return runs


STEPS = [{"variant": "fcn_resnet50", "live_ms": 400.0, "cached_ms": 160.0, "ratio": 2.5, "live_flop": 4e10,
          "cached_flop": 1e10},
         {"variant": "denseaspp_voc", "live_ms": 150.0, "cached_ms": 50.0, "ratio": 3.0, "live_flop": 1e10,
          "cached_flop": 3e9}]


def report(bench, native_bf16: bool = True, **changes) -> str:
    """The report of the made-up runs, as on a device that does (or does not) compute bf16 natively."""
    bench.amp_enabled = lambda device, enabled=True: native_bf16 and enabled
    args = bench.parse_args(["--variants", ",".join(VARIANTS), "--samples", "1", "--scaling-epochs", "2,4,8",
                             *changes.pop("argv", [])])
    info = {"command": "python experiments/benchmark.py", "machine": "AMD EPYC, native bf16: yes, 2 cores",
            "device": torch.device("cpu"), "split": {"train": 48, "val": 24, "test": 24},
            "trials": [{"variant": "fcn_resnet50", "lr": 4.43e-3}, {"variant": "denseaspp_voc", "lr": 2.03e-4}],
            "slots": 2, "cores": 2, **changes}
    return bench.render(args, info, fake_runs(), STEPS, matmul=1e11)


def test_median_range_and_speedup_from_medians(bench):
    assert bench.summary([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert bench.speedup([300.0, 280.0, 290.0], [100.0, 110.0, 105.0]) == pytest.approx(290.0 / 105.0)
    assert bench.fmt_range([3.0, 1.0, 2.0]) == "1.0–3.0"
    assert bench.line_fit([2, 4, 8], [20.0, 30.0, 50.0]) == pytest.approx((10.0, 5.0))
    assert bench.verdict(2.5, 2.5) == "met" and bench.verdict(2.49, 2.5) == "not met"


def test_search_bound_weights_each_variant_by_its_naive_time(bench):
    # 60 s shrinking 3x and 40 s shrinking 2x: 100 s become 40 s.
    assert bench.search_bound({"a": 60.0, "b": 40.0}, {"a": 3.0, "b": 2.0}) == pytest.approx(2.5)
    assert bench.search_bound({"a": 10.0, "b": 90.0}, {"a": 4.0, "b": 4.0}) == pytest.approx(4.0)
    assert bench.share_of_bound(2.0, 2.5) == pytest.approx(0.8)


def test_schedule_runs_every_cell_once_per_repeat_in_rotated_order(bench):
    plan = bench.schedule(list(bench.ROWS), 4, [2, 4, 8], repeats=3)
    cells = [(r, e) for r, e, _ in plan]
    assert len(plan) == 3 * 9 and len(set(cells)) == 9  # 5 rows at 4 epochs, naive and all at 2 and 8
    per_repeat = [[(r, e) for r, e, k in plan if k == repeat] for repeat in range(3)]
    assert all(sorted(p) == sorted(per_repeat[0]) for p in per_repeat)
    assert per_repeat[0][0] != per_repeat[1][0] != per_repeat[2][0]


def test_report_names_the_machine_rows_goals_and_ends_with_the_total(bench):
    text = report(bench)
    assert "Machine: AMD EPYC, native bf16: yes, 2 cores" in text
    for label, *_ in bench.ROWS.values():
        assert f"| {label} |" in text
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


def test_report_gives_flop_rates_as_a_share_of_the_measured_matmul_not_as_mfu(bench):
    text = report(bench)
    assert "Reference: 0.100 TFLOP/s, the measured rate of a large fp32 matmul" in text
    assert "MFU |" not in text and "| live step, share of matmul rate |" in text
    # fcn: 4e10 FLOP in 400 ms and 1e10 in 160 ms against 1e11 FLOP/s
    assert "| fcn_resnet50 | 0.100 | 100% | 0.062 | 62% |" in text
    assert "A share above 100% is possible" in text


def test_report_skips_the_bf16_row_where_the_device_lacks_it(bench):
    text = report(bench, native_bf16=False)
    assert "| naive + bf16 autocast |" not in text
    assert "row is skipped: this device does not compute bf16 natively" in text
    assert "| asked, not on this device |" in text  # all together: bf16 asked for, not applied


def test_report_says_when_the_run_is_not_the_goals_setting(bench):
    assert "this run is that setting" in report(bench)
    assert "not the goal's setting" in report(bench, argv=["--size", "48"])


def test_device_cuda_without_a_gpu_exits_2_with_a_message(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", "cuda"]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_device_defaults(bench):
    cpu, cuda = bench.parse_args([]), bench.parse_args(["--device", "cuda"])
    assert (cpu.size, cpu.images, cpu.gpus_per_trial, cpu.repeats) == (96, 96, 0.0, 3)
    assert (cuda.size, cuda.gpus_per_trial) == (256, 0.5) and cuda.images > cpu.images
    assert bench.trial_slots(cuda, cpus=16, gpus=1) == 2 and bench.trial_slots(cpu, cpus=2, gpus=0) == 2
