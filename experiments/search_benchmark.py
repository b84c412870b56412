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
import sys
from pathlib import Path

from petseg.bench.sampler import SamplerSettings, check_settings, run_sampler_benchmark
from petseg.bench.sampler_report import sampler_report
from petseg.errors import ConfigError


def numbers(text: str, flag: str, parser: argparse.ArgumentParser) -> tuple[int, ...]:
    """Comma-separated whole numbers of `flag`, or the parser's usage error."""
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        parser.error(f"{flag} {text!r}: give comma-separated whole numbers, e.g. 2,8")


def parse_args(argv=None) -> tuple[SamplerSettings, Path]:
    """Benchmark flags as the library's settings, and where the report goes."""
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
    settings = SamplerSettings(budgets=numbers(args.budgets, "--budgets", parser), seeds=args.seeds,
                               at_once=numbers(args.at_once, "--at-once", parser), noise=args.noise,
                               threads=args.threads, smoke_seeds=args.smoke_seeds, smoke_budget=args.smoke_budget)
    try:
        check_settings(settings)
    except ConfigError as err:
        parser.error(str(err))
    return settings, Path(args.output)


def main(argv=None) -> None:
    """Measure every candidate sampler at every budget, print the report and write it."""
    settings, output = parse_args(argv)
    result = run_sampler_benchmark(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    text = sampler_report(settings, result)
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)


if __name__ == "__main__":
    main()
