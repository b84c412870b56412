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
import shlex
import sys
from pathlib import Path

from petseg.bench.ablation import DEVICE_DEFAULTS, ablation_settings, run_ablation
from petseg.bench.ablation_report import ablation_report
from petseg.errors import PetsegError
from petseg.models import default_variants


def parse_args(argv=None) -> argparse.Namespace:
    """Benchmark flags; a flag left out that the device sets is None (ablation_settings fills it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=tuple(DEVICE_DEFAULTS), default="cpu",
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
    try:
        args.scaling_epochs = tuple(sorted({int(e) for e in args.scaling_epochs.split(",") if e.strip()}))
    except ValueError:
        parser.error(f"--scaling-epochs {args.scaling_epochs!r}: give comma-separated whole numbers, e.g. 1,2,4")
    args.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    return args


def main(argv=None) -> int:
    """Run the ablation, print and write its report; 2 on unusable flags."""
    args = parse_args(argv)
    try:
        settings = ablation_settings(**{key: value for key, value in vars(args).items() if key != "output"})
        result = run_ablation(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except PetsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "experiments/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    report = ablation_report(settings, result, command)
    print(report, end="")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
