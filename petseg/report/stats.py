"""How sure is a test score? Bootstrap confidence intervals, and paired tests between models (over test
images) and between variants (over training seeds and test images).

The unit is the test image, not the pixel: pixels of one image are strongly correlated, so
resampling pixels would give intervals far too narrow. Each image contributes its own confusion
matrix; a resample draws images with replacement, sums their matrices and recomputes the metric
from the sum, exactly as a whole-split score is computed (petseg.metrics). Every test here has a null
simulation (petseg.report.calibration) showing its false-positive rate at or below the level.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.stats
import torch

from .. import metrics
from ..data import CLASS_NAMES
from ..metrics import headline_metrics, metric_names, scores


def batch_scores(confmats: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of each of many confusion matrices [..., C, C] at once (petseg.metrics.batch_scores)."""
    _check_metric(metric)
    confmats = np.asarray(confmats, dtype=np.float64)
    flat = torch.from_numpy(confmats.reshape(-1, *confmats.shape[-2:]))
    return metrics.batch_scores(flat)[metric].numpy().reshape(confmats.shape[:-2])


def _check_metric(metric: str) -> None:
    if metric not in metric_names():
        raise ValueError(f"metric={metric!r}: use one of {metric_names()}")


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


def _resample_counts(n_images: int, n_resamples: int, seed: int, pairs: int | None = None) -> np.ndarray:
    """[R, N] times each image is drawn in each of R resamples of N images with replacement; with `pairs`,
    [pairs, R, N]: every pair its own draws (the first pair's are the unbatched draws of the same seed)."""
    shape = (n_resamples, n_images) if pairs is None else (pairs, n_resamples, n_images)
    draws = np.random.default_rng(seed).integers(0, n_images, size=shape).reshape(-1, n_images)
    # One bincount over all resamples: row r's draws are shifted into their own block of N bins.
    shifted = draws + np.arange(len(draws))[:, None] * n_images
    return np.bincount(shifted.ravel(), minlength=draws.size).reshape(shape)


def _resampled_totals(confusions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[..., R, C, C] sums of the images' matrices [..., N, C, C] weighted by each resample's draw counts
    ([R, N], or [pairs, R, N] for confusions [pairs, ..., N, C, C])."""
    *lead, n_images, classes, _ = confusions.shape
    # float64 holds integer pixel counts exactly up to 2**53, far beyond any test split.
    flat = confusions.reshape(*lead, n_images, classes * classes).astype(np.float64)
    counts = counts.astype(np.float64)
    if counts.ndim == 3:  # per-pair draws: line them up with the pair axis, broadcast over the axes after it
        counts = counts.reshape(len(counts), *[1] * (len(lead) - 1), *counts.shape[1:])
    return (counts @ flat).reshape(*lead, counts.shape[-2], classes, classes)


def _point(confusions: np.ndarray, metric: str) -> float:
    return scores(torch.from_numpy(confusions.sum(axis=0)))[metric]


def bootstrap_ci(confusions, metric: str, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): `metric` of the summed matrices and its percentile bootstrap CI over images."""
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    confusions = _check_confusions(confusions)
    counts = _resample_counts(len(confusions), n_resamples, seed)
    resampled = batch_scores(_resampled_totals(confusions, counts), metric)
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return _point(confusions, metric), float(low), float(high)


def paired_test(conf_a, conf_b, metric: str, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Is model A better than model B on test images like these? diff = metric(A) - metric(B), low, high,
    p_value, verdict.

    Each bootstrap resample draws one set of image indices and applies it to both models; their spread
    gives the standard error of the difference, se^2 = n / (n - 1) * var(resampled differences) (the
    bootstrap variance of a mean over n images is (n - 1) / n of the unbiased one). The test is t = diff / se
    on n - 1 degrees of freedom and the interval diff -+ t quantile * se; the verdict is "A better" /
    "B better" when it excludes 0, else "not distinguishable". (A percentile interval of the same resamples
    lacks both the n / (n - 1) and the t quantile, so on a small test set it is too narrow and calls equal
    models different too often; experiments/calibrate_stats.py measures this test's rate.)
    """
    conf_a, conf_b = _check_confusions(conf_a, "conf_a"), _check_confusions(conf_b, "conf_b")
    if conf_a.shape != conf_b.shape:
        raise ValueError(f"conf_a has shape {conf_a.shape} but conf_b {conf_b.shape}; a paired test needs "
                         "both models' confusions on the same images in the same order")
    return _first(paired_tests(conf_a[None], conf_b[None], metric, n_resamples, seed, level))


def paired_tests(conf_a, conf_b, metric: str, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
                 ) -> dict[str, np.ndarray]:
    """paired_test of many pairs of models at once, conf_* [pairs, images, C, C]: each key an array over pairs.

    Each pair draws its own images (independent tests); the null simulation (petseg.report.calibration)
    runs this.
    """
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    conf_a, conf_b = np.asarray(conf_a), np.asarray(conf_b)
    if conf_a.shape != conf_b.shape or conf_a.ndim != 4 or 0 in conf_a.shape[:2]:
        raise ValueError(f"conf_a has shape {conf_a.shape} and conf_b {conf_b.shape}; a paired test needs both "
                         "models' confusions on the same images in the same order, [pairs, images, classes, classes]")
    n_images = conf_a.shape[1]
    if n_images < 2:
        raise ValueError(f"conf_a scores {n_images} image; a paired test needs at least 2 images")
    counts = _resample_counts(n_images, n_resamples, seed, pairs=len(conf_a))
    resampled = (batch_scores(_resampled_totals(conf_a, counts), metric)
                 - batch_scores(_resampled_totals(conf_b, counts), metric))  # [P, R]
    diff = batch_scores(conf_a.sum(axis=1), metric) - batch_scores(conf_b.sum(axis=1), metric)
    return _t_test(diff, np.sqrt(_image_variance(resampled, n_images)), n_images - 1, level)


def _image_variance(resampled: np.ndarray, n_images: int) -> np.ndarray:
    """The variance over test images of a statistic, from its resampled values [P, R]: the bootstrap's,
    scaled by n / (n - 1), which it falls short by for a mean of n images."""
    return resampled.var(axis=1, ddof=1) * n_images / (n_images - 1)


def _t_test(diff: np.ndarray, se: np.ndarray, df: int, level: float) -> dict[str, np.ndarray]:
    """Two-sided t-test of diff / se on `df` degrees of freedom, with its interval and verdict."""
    t_dist = scipy.stats.t(df=df)
    half_width = t_dist.ppf((1 + level) / 2) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        # se = 0: every seed and resample gave the same difference, so it is certain (or exactly 0).
        p_value = np.where(se > 0, 2 * t_dist.sf(np.abs(diff) / se), np.where(diff == 0, 1.0, 0.0))
    low, high = diff - half_width, diff + half_width
    verdict = np.where(low > 0, "A better", np.where(high < 0, "B better", "not distinguishable"))
    return {"diff": diff, "low": low, "high": high, "p_value": p_value, "verdict": verdict}


def _first(results: dict[str, np.ndarray]) -> dict:
    """The first pair's result of a batched test, as plain Python values."""
    return {key: str(values[0]) if key == "verdict" else float(values[0]) for key, values in results.items()}


VARIANT_MIN_SEEDS = 2  # a t-test over seeds needs the spread of per-seed differences: two seeds at least


def _check_runs(runs, name: str) -> np.ndarray:
    runs = np.asarray(runs)
    if runs.ndim != 5 or runs.shape[1] < VARIANT_MIN_SEEDS or 0 in runs.shape:
        raise ValueError(f"{name} has shape {runs.shape[1:] if runs.ndim == 5 else runs.shape}; expected "
                         f"[seeds >= {VARIANT_MIN_SEEDS}, images, classes, classes]: the per-image confusions of at "
                         "least two training runs (seeds) on the same test images")
    return runs


def paired_variant_test(runs_a, runs_b, metric: str, n_resamples: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Is variant A better than variant B, over training seeds and test images? Same keys as paired_test.

    runs_*: [seeds, images, C, C], each run a model trained afresh with its own seed at the variant's chosen
    lr (never the search's selected trial: its val score was picked as the best of many, so it is biased),
    all scored on the same images; run k of A is paired with run k of B (the same seed).

    Seeds are the replication unit: a paired t-test over the N per-seed differences d_k = metric(A_k) -
    metric(B_k) of whole-test-set scores, t = mean(d) / se on N - 1 degrees of freedom with
    se^2 = var(d) / N + V, V the image variance of mean(d) from a paired bootstrap (images drawn once for
    every run, as in paired_test). var(d) / N alone would test "on these test images"; V adds the test
    set's own sampling, so the verdict is about the variant on images like these. V comes from many
    images, so t is nearer normal than t(N - 1) and the t(N - 1) reference errs on the safe side: with
    normal seed noise the false-positive rate stays at or below the level for every N >= 2, at the cost
    of power at small N (experiments/calibrate_stats.py measures both). A resampling test over seeds
    could not do this: with N = 2..5 no sign flip or bootstrap of seeds can reach p < 0.05.
    """
    runs_a, runs_b = np.asarray(runs_a), np.asarray(runs_b)
    return _first(paired_variant_tests(runs_a[None], runs_b[None], metric, n_resamples, seed, level))


def paired_variant_tests(runs_a, runs_b, metric: str, n_resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict[str, np.ndarray]:
    """paired_variant_test of many pairs of variants at once, runs_* [pairs, seeds, images, C, C]."""
    _check_metric(metric)
    _check_resampling(n_resamples, level)
    runs_a, runs_b = _check_runs(runs_a, "runs_a"), _check_runs(runs_b, "runs_b")
    if runs_a.shape != runs_b.shape:
        raise ValueError(f"runs_a has shape {runs_a.shape[1:]} but runs_b {runs_b.shape[1:]}; a paired test needs "
                         "both variants' runs with the same seeds on the same images in the same order")
    n_seeds, n_images = runs_a.shape[1], runs_a.shape[2]
    if n_images < 2:
        raise ValueError(f"runs_a scores {n_images} image; a paired test needs at least 2 images")
    per_seed = batch_scores(runs_a.sum(axis=2), metric) - batch_scores(runs_b.sum(axis=2), metric)  # [P, N]
    counts = _resample_counts(n_images, n_resamples, seed, pairs=len(runs_a))
    resampled = (batch_scores(_resampled_totals(runs_a, counts), metric)
                 - batch_scores(_resampled_totals(runs_b, counts), metric)).mean(axis=1)  # [P, R]
    variance = per_seed.var(axis=1, ddof=1) / n_seeds + _image_variance(resampled, n_images)
    return _t_test(per_seed.mean(axis=1), np.sqrt(variance), n_seeds - 1, level)


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


REPORT_RESAMPLES = 10_000  # bootstrap resamples per paired test in a study's report


def pairwise_tests(scored: dict[str, np.ndarray], seed: int = 0, n_resamples: int = REPORT_RESAMPLES,
                   alpha: float = 0.05, variant_level: bool = False) -> list[dict]:
    """Every pair of `scored` (name -> per-image confusions, or per-run ones with variant_level) and headline
    metric (petseg.metrics.headline_metrics()), Holm-corrected over all of them: a, b, metric, diff, low, high, p_value, p_holm, verdict.

    The verdict is "A better" / "B better" only where the Holm-adjusted p-value is below alpha; the
    intervals are each test's own (unadjusted) 95% interval.
    """
    test = paired_variant_test if variant_level else paired_test
    rows = []
    for a, b in itertools.combinations(scored, 2):
        for metric in headline_metrics():
            result = test(scored[a], scored[b], metric, n_resamples=n_resamples, seed=seed)
            rows.append({"a": a, "b": b, "metric": metric, **result})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_holm"] = float(adjusted)
        significant = adjusted < alpha
        row["verdict"] = ("A better" if row["diff"] > 0 else "B better") if significant else "not distinguishable"
    return rows


def summarize(confusions, n_resamples: int = 2000, level: float = 0.95, seed: int = 0, class_names=None) -> dict:
    """Every metric with its CI (`<metric>`, `<metric>_low`, `<metric>_high`) and `iou_<class>` per class
    (`class_names`; by default Pets' names for 3 classes, else the class indices)."""
    confusions = _check_confusions(confusions)
    row = {}
    for metric in metric_names():
        row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = bootstrap_ci(
            confusions, metric, n_resamples, level, seed)
    per_class = scores(torch.from_numpy(confusions.sum(axis=0)))["iou_per_class"]
    names = class_names or (CLASS_NAMES if len(per_class) == len(CLASS_NAMES) else [str(i) for i in range(len(per_class))])
    if len(names) != len(per_class):
        raise ValueError(f"summarize got {len(names)} class names for {len(per_class)} classes; give one per class")
    return {**row, **{f"iou_{name}": iou for name, iou in zip(names, per_class)}}


def seed_summary(values) -> tuple[float, float]:
    """(mean, sample std with ddof=1) of one score over seeds; std is NaN for a single seed."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("seed_summary got no values; pass one score per seed")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan
