"""Segmentation metrics from a confusion matrix accumulated over a whole split.

A class absent from both the ground truth and the predictions has no IoU (0/0): its entry in
`iou_per_class` is NaN, it is left out of `mean_iou`, and it carries zero weight in `weighted_iou`.
A class present in the ground truth but never predicted correctly has IoU 0 and counts.
"""
from __future__ import annotations

import torch

# The split-level scores every table, test and bootstrap reports.
METRICS = ("pixel_accuracy", "mean_iou", "weighted_iou")


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


def batch_scores(confmats: torch.Tensor) -> dict[str, torch.Tensor]:
    """The scores of many confusion matrices [R, C, C] at once: pixel_accuracy, mean_iou, weighted_iou [R]
    and iou_per_class [R, C]; the one definition every petseg score (and bootstrap resample) uses."""
    confmats = confmats.double()
    total = confmats.sum(dim=(1, 2))
    true_positive = confmats.diagonal(dim1=1, dim2=2)
    gt_pixels = confmats.sum(dim=2)
    union = gt_pixels + confmats.sum(dim=1) - true_positive
    iou = true_positive / union  # 0/0 -> NaN for a class absent from both sides
    present = union > 0
    frequency = gt_pixels / total[:, None]
    return {
        "pixel_accuracy": true_positive.sum(dim=1) / total,
        "mean_iou": torch.where(present, iou, 0.0).sum(dim=1) / present.sum(dim=1),
        # Absent classes have zero frequency; where() keeps their NaN out of the sum.
        "weighted_iou": torch.where(present, frequency * iou, 0.0).sum(dim=1),
        "iou_per_class": iou,
    }


def scores(confmat: torch.Tensor) -> dict:
    """pixel_accuracy, mean_iou, weighted_iou (frequency-weighted) and iou_per_class of one `confmat`."""
    if confmat.sum() == 0:
        raise ValueError("empty confusion matrix: no pixels were scored")
    one = batch_scores(torch.as_tensor(confmat)[None])
    return {"pixel_accuracy": float(one["pixel_accuracy"][0]), "mean_iou": float(one["mean_iou"][0]),
            "weighted_iou": float(one["weighted_iou"][0]), "iou_per_class": one["iou_per_class"][0].tolist()}
