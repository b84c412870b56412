"""Segmentation metrics from a confusion matrix accumulated over a whole split.

A class absent from both the ground truth and the predictions has no IoU (0/0): its entry in
`iou_per_class` is NaN, it is left out of `mean_iou`, and it carries zero weight in `weighted_iou`.
A class present in the ground truth but never predicted correctly has IoU 0 and counts.
"""
from __future__ import annotations

import torch


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


def scores(confmat: torch.Tensor) -> dict:
    """pixel_accuracy, mean_iou, weighted_iou (frequency-weighted) and iou_per_class of `confmat`."""
    confmat = confmat.double()
    total = confmat.sum()
    if total == 0:
        raise ValueError("empty confusion matrix: no pixels were scored")
    true_positive = confmat.diag()
    gt_pixels = confmat.sum(dim=1)
    union = gt_pixels + confmat.sum(dim=0) - true_positive
    iou = true_positive / union  # 0/0 -> NaN for a class absent from both sides
    present = union > 0
    frequency = gt_pixels / total
    return {
        "pixel_accuracy": float(true_positive.sum() / total),
        "mean_iou": float(iou[present].mean()),
        # Absent classes have zero frequency; where() keeps their NaN out of the sum.
        "weighted_iou": float(torch.where(present, frequency * iou, 0.0).sum()),
        "iou_per_class": iou.tolist(),
    }
