"""How sure is a test score? Bootstrap confidence intervals and paired comparisons over test images.

The unit is the test image, not the pixel: pixels of one image are strongly correlated, so
resampling pixels would give intervals far too narrow. Each image contributes its own confusion
matrix; a resample draws images with replacement, sums their matrices and recomputes the metric
from the sum, exactly as a whole-split score is computed (petseg.metrics).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .. import metrics
from ..data import CLASS_NAMES
from ..metrics import METRICS, scores


def batch_scores(confmats: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of each of many confusion matrices [R, C, C] at once (petseg.metrics.batch_scores)."""
    _check_metric(metric)
    return metrics.batch_scores(torch.from_numpy(np.asarray(confmats, dtype=np.float64)))[metric].numpy()


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: use one of {METRICS}")


def _check_confusions(confusions, name: str = "confusions") -> np.ndarray:
    confusions = np.asarray(confusions)
    if confusions.ndim != 3 or confusions.shape[1] != confusions.shape[2] or len(confusions) == 0:
        raise ValueError(f"{name} has shape {confusions.shape}; expected [images, classes, classes] with at "
                         "least one image (per_image_confusions gives it)")
    return confusions


def _check_resampling(n_resamples: int, level: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}: need at least 1 (2000 is usual)")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: a confidence level must lie strictly between 0 and 1, e.g. 0.95")


def _resample_counts(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """[R, N] times each image is drawn in each of R resamples of N images with replacement."""
    draws = np.random.default_rng(seed).integers(0, n_images, size=(n_resamples, n_images))
    # One bincount over all resamples: row r's draws are shifted into their own block of N bins.
    shifted = draws + np.arange(n_resamples)[:, None] * n_images
    return np.bincount(shifted.ravel(), minlength=n_resamples * n_images).reshape(n_resamples, n_images)


def _resampled_totals(confusions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[R, C, C] sums of the images' matrices weighted by each resample's draw counts."""
    n_images, classes = confusions.shape[0], confusions.shape[1]
    # float64 holds integer pixel counts exactly up to 2**53, far beyond any test split.
    flat = confusions.reshape(n_images, -1).astype(np.float64)
    return (counts.astype(np.float64) @ flat).reshape(-1, classes, classes)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _point(confusions: np.ndarray, metric: str) -> float:
    return scores(torch.from_numpy(confusions.sum(axis=0)))[metric]


def bootstrap_ci(confusions, metric: str, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): `metric` of the summed matrices and its percentile bootstrap CI over images."""
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    confusions = _check_confusions(confusions)
    counts = _resample_counts(len(confusions), n_resamples, seed)
    low, high = _interval(batch_scores(_resampled_totals(confusions, counts), metric), level)
    return _point(confusions, metric), low, high


def paired_test(conf_a, conf_b, metric: str, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap of metric(A) - metric(B) on the same test images: diff, low, high, p_value, verdict.

    Each resample draws one set of image indices and applies it to both models. The verdict is
    "A better" / "B better" when the CI of the difference excludes 0, else "not distinguishable".
    """
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    conf_a, conf_b = _check_confusions(conf_a, "conf_a"), _check_confusions(conf_b, "conf_b")
    if conf_a.shape != conf_b.shape:
        raise ValueError(f"conf_a has shape {conf_a.shape} but conf_b {conf_b.shape}; a paired test needs "
                         "both models' confusions on the same images in the same order")
    counts = _resample_counts(len(conf_a), n_resamples, seed)
    diffs = (batch_scores(_resampled_totals(conf_a, counts), metric)
             - batch_scores(_resampled_totals(conf_b, counts), metric))
    return _difference_test(_point(conf_a, metric) - _point(conf_b, metric), diffs, level)


def _difference_test(observed: float, diffs: np.ndarray, level: float) -> dict:
    """diff, CI, two-sided bootstrap p-value and verdict of resampled differences `diffs`."""
    low, high = _interval(diffs, level)
    # Two-sided: twice the smaller share of resampled differences on either side of 0. The +1
    # counts the observed data as one resample, so a finite bootstrap never claims p = 0.
    below = (1 + np.count_nonzero(diffs <= 0)) / (len(diffs) + 1)
    above = (1 + np.count_nonzero(diffs >= 0)) / (len(diffs) + 1)
    verdict = "A better" if low > 0 else "B better" if high < 0 else "not distinguishable"
    return {"diff": observed, "low": low, "high": high, "p_value": min(1.0, 2 * min(below, above)),
            "verdict": verdict}


def _check_runs(runs, name: str) -> np.ndarray:
    runs = np.asarray(runs)
    if runs.ndim != 4 or len(runs) < 2:
        raise ValueError(f"{name} has shape {runs.shape}; expected [runs >= 2, images, classes, classes]: the "
                         "per-image confusions of at least two training runs (seeds) on the same test images")
    _check_confusions(runs[0], name)
    return runs


def paired_variant_test(runs_a, runs_b, metric: str, n_resamples: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Paired bootstrap of metric(A) - metric(B) over training runs and test images together (the variant level).

    runs_*: [runs, images, C, C], each run a separately trained model (another seed) of that variant,
    all scored on the same images. A resample draws the images once for both variants (paired) and each
    variant's runs with replacement on their own; a variant's score is the mean over its drawn runs.
    So the interval covers training variation as well as test images. Same keys as paired_test.
    """
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    runs_a, runs_b = _check_runs(runs_a, "runs_a"), _check_runs(runs_b, "runs_b")
    if runs_a.shape[1:] != runs_b.shape[1:]:
        raise ValueError(f"runs_a scores {runs_a.shape[1]} images but runs_b {runs_b.shape[1]}; a paired test needs "
                         "both variants' runs on the same images in the same order")
    counts = _resample_counts(runs_a.shape[1], n_resamples, seed)
    rng = np.random.default_rng([seed, 1])  # the run draws, independent of the image draws

    def resampled_means(runs):
        per_run = np.stack([batch_scores(_resampled_totals(run, counts), metric) for run in runs], axis=1)  # [R, S]
        picks = rng.integers(0, len(runs), size=(n_resamples, len(runs)))
        return np.take_along_axis(per_run, picks, axis=1).mean(axis=1)

    def point(runs):
        return float(np.mean([_point(run, metric) for run in runs]))

    diffs = resampled_means(runs_a) - resampled_means(runs_b)
    return _difference_test(point(runs_a) - point(runs_b), diffs, level)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the given order: rejecting where adjusted p < alpha keeps the
    chance of any false "better" among all these tests at most alpha."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.empty_like(p_values)
    running = 0.0
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def pairwise_tests(scored: dict[str, np.ndarray], seed: int = 0, n_resamples: int = 10_000,
                   alpha: float = 0.05, variant_level: bool = False) -> list[dict]:
    """Every pair of `scored` (name -> per-image confusions, or per-run ones with variant_level) and metric,
    Holm-corrected over all of them: a, b, metric, diff, low, high, p_value, p_holm, verdict.

    The verdict is "A better" / "B better" only where the Holm-adjusted p-value is below alpha; the
    intervals are each test's own (unadjusted) 95% bootstrap interval.
    """
    test = paired_variant_test if variant_level else paired_test
    rows = []
    for a, b in itertools.combinations(scored, 2):
        for metric in METRICS:
            result = test(scored[a], scored[b], metric, n_resamples=n_resamples, seed=seed)
            rows.append({"a": a, "b": b, "metric": metric, **result})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_holm"] = float(adjusted)
        significant = adjusted < alpha
        row["verdict"] = ("A better" if row["diff"] > 0 else "B better") if significant else "not distinguishable"
    return rows


def summarize(confusions, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Every metric with its CI (`<metric>`, `<metric>_low`, `<metric>_high`) and `iou_<class>` per class."""
    confusions = _check_confusions(confusions)
    row = {}
    for metric in METRICS:
        row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = bootstrap_ci(
            confusions, metric, n_resamples, level, seed)
    per_class = scores(torch.from_numpy(confusions.sum(axis=0)))["iou_per_class"]
    names = CLASS_NAMES if len(per_class) == len(CLASS_NAMES) else [str(i) for i in range(len(per_class))]
    return {**row, **{f"iou_{name}": iou for name, iou in zip(names, per_class)}}


def seed_summary(values) -> tuple[float, float]:
    """(mean, sample std with ddof=1) of one score over seeds; std is NaN for a single seed."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("seed_summary got no values; pass one score per seed")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan
