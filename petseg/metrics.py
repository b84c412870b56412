"""Segmentation metrics from a confusion matrix accumulated over a whole split.

A class absent from both the ground truth and the predictions has no IoU (0/0): its entry in
`iou_per_class` is NaN, it is left out of `mean_iou`, and it carries zero weight in `weighted_iou`.
A class present in the ground truth but never predicted correctly has IoU 0 and counts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Metric:
    """A split-level score: its name (the `val_<name>` / `test_<name>` columns), its label in tables and figures,
    how it is computed from a batch of confusion-matrix statistics (see statistics()), and whether it is a headline
    metric: one the paired tests and their Holm family cover. Reported-only metrics get tables and intervals."""

    name: str
    label: str
    compute: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    headline: bool


def _mean_over_present(values: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.where(stats["present"], values, 0.0).sum(dim=1) / stats["present"].sum(dim=1)


REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add `metric` to every table, result column and (if headline) the Holm family of the verdicts; a plugin module
    calls this at import. A name already registered to another metric is refused."""
    if not metric.name.isidentifier():
        raise ValueError(f"metric name {metric.name!r} must be a Python identifier: it names result columns")
    if REGISTRY.get(metric.name, metric) is not metric:
        raise ValueError(f"metric {metric.name!r} is already registered ({REGISTRY[metric.name].label})")
    REGISTRY[metric.name] = metric
    return metric


def metric_names() -> tuple[str, ...]:
    """Every registered metric, in table order (the built-in ones first, then plugins' in the order registered)."""
    return tuple(REGISTRY)


def headline_metrics() -> tuple[str, ...]:
    """The metrics the paired tests, their Holm family and the verdicts cover."""
    return tuple(name for name, metric in REGISTRY.items() if metric.headline)


# Adding a metric is one register_metric call. A headline one joins the Holm family of every verdict (and can
# change verdicts); a reported one only adds columns.
for _metric in (
    Metric("pixel_accuracy", "pixel accuracy", lambda s: s["true_positive"].sum(dim=1) / s["total"], headline=True),
    Metric("mean_iou", "mIoU", lambda s: _mean_over_present(s["iou"], s), headline=True),
    # Absent classes have zero frequency; where() keeps their NaN out of the sum.
    Metric("weighted_iou", "weighted mIoU",
           lambda s: torch.where(s["present"], s["frequency"] * s["iou"], 0.0).sum(dim=1), headline=True),
    # Dice (F1) per class, 2 TP / (ground truth + predicted pixels), averaged over the classes present.
    Metric("dice", "Dice", lambda s: _mean_over_present(2 * s["true_positive"] / (s["union"] + s["true_positive"]), s),
           headline=False),
):
    register_metric(_metric)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """int64 [num_classes, num_classes] counts; rows are ground truth, columns predictions."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.numel()} pixels but target has {target.numel()}")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, values in (("target", target), ("prediction", pred)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1}: "
                             f"{sorted(set(values.unique().tolist()) - set(range(num_classes)))}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """One confusion matrix accumulated over a whole split, batch by batch; compute() gives its scores."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, device: torch.device | str = "cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch's predicted and true class ids (any shape, the same for both)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.matrix.device)

    def compute(self) -> dict:
        """scores() of everything added so far."""
        return scores(self.matrix.cpu())


def statistics(confmats: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every metric is computed from, for confusion matrices [R, C, C]: total pixels [R]; true positives,
    ground-truth pixels, union, IoU, class frequency and whether a class is present (in either) [R, C]."""
    confmats = confmats.double()
    total = confmats.sum(dim=(1, 2))
    true_positive = confmats.diagonal(dim1=1, dim2=2)
    gt_pixels = confmats.sum(dim=2)
    union = gt_pixels + confmats.sum(dim=1) - true_positive
    return {"total": total, "true_positive": true_positive, "gt_pixels": gt_pixels, "union": union,
            "iou": true_positive / union,  # 0/0 -> NaN for a class absent from both sides
            "present": union > 0, "frequency": gt_pixels / total[:, None]}


def batch_scores(confmats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every registered metric [R] of many confusion matrices [R, C, C] at once, and iou_per_class [R, C]; the one
    definition every petseg score (and bootstrap resample) uses."""
    stats = statistics(confmats)
    return {**{name: metric.compute(stats) for name, metric in REGISTRY.items()}, "iou_per_class": stats["iou"]}


def scores(confmat: torch.Tensor) -> dict:
    """Every registered metric and iou_per_class of one `confmat`."""
    if confmat.sum() == 0:
        raise ValueError("empty confusion matrix: no pixels were scored")
    one = batch_scores(torch.as_tensor(confmat)[None])
    return {**{name: float(one[name][0]) for name in metric_names()}, "iou_per_class": one["iou_per_class"][0].tolist()}
