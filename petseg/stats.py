"""How sure is a test score? Bootstrap confidence intervals and paired comparisons over test images.

The unit is the test image, not the pixel: pixels of one image are strongly correlated, so
resampling pixels would give intervals far too narrow. Each image contributes its own confusion
matrix; a resample draws images with replacement, sums their matrices and recomputes the metric
from the sum, exactly as a whole-split score is computed (petseg.metrics).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .data import CLASS_NAMES, NUM_CLASSES, PetSegmentation, load_trimap
from .engine import autocast
from .metrics import confusion_matrix, scores
from .predict import upsample_logits
from .training import make_loader

METRICS = ("pixel_accuracy", "mean_iou", "weighted_iou")


@torch.no_grad()
def per_image_confusions(model: nn.Module, dataset: PetSegmentation, device: torch.device, batch_size: int,
                         original_size: bool = False, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """int64 [N, C, C] confusion matrix of each dataset item, in order (rows = ground truth).

    By default at the dataset's size (masks resized nearest, as in training). With original_size,
    each image's logits are upsampled bilinearly to its original size and scored on its full trimap.
    """
    if original_size and dataset.augment is not None:
        raise ValueError(f"original_size needs an unaugmented dataset (augment={dataset.augment!r}): "
                         "augmented copies have no original trimap")
    model.eval()
    matrices = []
    for images, masks in make_loader(dataset, batch_size, train=False):
        with autocast(device):
            logits = model(images.to(device, non_blocking=True)).float()
        if original_size:
            samples = dataset.samples[len(matrices):len(matrices) + len(logits)]
            matrices += [_full_size_confusion(item, s.trimap, num_classes) for item, s in zip(logits, samples)]
        else:
            predictions = logits.argmax(dim=1)
            matrices += [confusion_matrix(p, m.to(device), num_classes) for p, m in zip(predictions, masks)]
    return torch.stack(matrices).cpu().numpy() if matrices else np.zeros((0, num_classes, num_classes), np.int64)


def _full_size_confusion(logits: torch.Tensor, trimap_path, num_classes: int) -> torch.Tensor:
    truth = torch.from_numpy(load_trimap(trimap_path)).to(logits.device)
    prediction = upsample_logits(logits[None], tuple(truth.shape)).argmax(dim=1)[0]
    return confusion_matrix(prediction, truth, num_classes)


def batch_scores(confmats: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of each of many confusion matrices [R, C, C] at once, defined as petseg.metrics.scores."""
    _check_metric(metric)
    confmats = np.asarray(confmats, dtype=np.float64)
    total = confmats.sum(axis=(1, 2))
    true_positive = np.diagonal(confmats, axis1=1, axis2=2)
    if metric == "pixel_accuracy":
        return true_positive.sum(axis=1) / total
    gt_pixels = confmats.sum(axis=2)
    union = gt_pixels + confmats.sum(axis=1) - true_positive
    present = union > 0
    with np.errstate(invalid="ignore"):  # 0/0 for a class absent from both sides; masked out below
        iou = true_positive / union
    if metric == "mean_iou":
        return np.where(present, iou, 0.0).sum(axis=1) / present.sum(axis=1)
    return np.where(present, gt_pixels / total[:, None] * iou, 0.0).sum(axis=1)


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
    low, high = _interval(diffs, level)
    # Two-sided: twice the smaller share of resampled differences on either side of 0. The +1
    # counts the observed data as one resample, so a finite bootstrap never claims p = 0.
    below = (1 + np.count_nonzero(diffs <= 0)) / (n_resamples + 1)
    above = (1 + np.count_nonzero(diffs >= 0)) / (n_resamples + 1)
    verdict = "A better" if low > 0 else "B better" if high < 0 else "not distinguishable"
    return {"diff": _point(conf_a, metric) - _point(conf_b, metric), "low": low, "high": high,
            "p_value": min(1.0, 2 * min(below, above)), "verdict": verdict}


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
