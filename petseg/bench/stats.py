"""Statistics over a benchmark's repeats: pure arithmetic on measured seconds, no clock."""
from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """The median and range of one measurement's repeats."""

    median: float
    low: float
    high: float


@dataclass(frozen=True)
class LineFit:
    """A least-squares straight line: the one-off cost (intercept) and the cost per unit (slope)."""

    intercept: float
    slope: float


def summarise(values: list[float]) -> Summary:
    """Median, min and max of one measurement's repeats."""
    return Summary(statistics.median(values), min(values), max(values))


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


def line_fit(xs: list[float], ys: list[float]) -> LineFit:
    """Least-squares line of ys against xs (at least two distinct xs): the one-off cost and the cost per x."""
    if len(set(xs)) < 2:
        raise ValueError(f"a line needs at least two distinct x values, got {xs}")
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return LineFit(mean_y - slope * mean_x, slope)


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (population SD over sqrt(n), as the sampler report states it)."""
    n = len(values)
    mean = statistics.fmean(values)
    return mean, statistics.pstdev(values, mean) / n ** 0.5


def verdict(value: float, goal: float) -> str:
    """"met" or "not met"."""
    return "met" if value >= goal else "not met"
