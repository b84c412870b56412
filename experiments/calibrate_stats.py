"""How often do petseg's paired tests call two equally good variants (or models) different, and how often
do they find a real difference? A null simulation of both shipped tests.

    python experiments/calibrate_stats.py        # results/calibration.md, a few minutes on one core

The variant-level test (about "this variant": seeds are the replication unit) runs at each number of
seeds per variant in --seeds; the per-model test (about "this trained model": test images only) on one
run of each. The simulated study is described in petseg/report/calibration.py and in the output.
Exits 1 when a false-positive rate is above the level by more than its Monte Carlo error.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from petseg.errors import PetsegError
from petseg.metrics import metric_names
from petseg.report import calibration
from petseg.train.timing import device_name

LEVEL = 0.95  # the level of every verdict in a study's report


def parse_args(argv=None) -> argparse.Namespace:
    """Calibration flags."""
    defaults = calibration.Scenario()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=10_000, help="simulations per row and hypothesis")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per simulated test")
    parser.add_argument("--seeds", default="2,3,5,10", help="comma-separated seeds per variant")
    parser.add_argument("--images", type=int, default=defaults.images, help="test images per simulation")
    parser.add_argument("--seed-sd", type=float, default=defaults.seed_sd,
                        help="seed-to-seed SD of a run's per-pixel accuracy")
    parser.add_argument("--delta", type=float, default=defaults.delta,
                        help="variant A's advantage in per-pixel accuracy under the alternative (power)")
    parser.add_argument("--metric", default="weighted_iou", choices=metric_names(), help="the metric tested")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", default="results/calibration.md", help="where the Markdown report goes")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(n) for n in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give comma-separated whole numbers, e.g. 2,3,5,10")
    return args


def main(argv=None) -> int:
    """Run the calibration, print and write the report; returns the exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    scenario = calibration.Scenario(images=args.images, seed_sd=args.seed_sd, delta=args.delta)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        table = calibration.calibrate(scenario, args.seeds, args.sims, args.resamples, args.metric, LEVEL, args.seed)
    except PetsegError as err:
        print(f"calibrate_stats.py: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "experiments/calibrate_stats.py", *(sys.argv[1:] if argv is None else argv)])
    text = calibration.calibration_markdown(table, scenario, args.sims, args.resamples, args.metric, LEVEL, command,
                                            device_name(torch.device("cpu")), time.perf_counter() - started,
                                            time.process_time() - cpu_started)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    if not table["within"].all():
        print("calibrate_stats.py: a false-positive rate is above the level by more than its Monte Carlo error",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
