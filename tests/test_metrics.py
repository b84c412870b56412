"""Metrics against an independent per-class computation and hand-worked cases."""
import math

import numpy as np
import pytest
import torch

from petseg.metrics import confusion_matrix, scores


def independent_scores(pred, target, num_classes):
    """IoU from boolean masks, class by class, without any confusion matrix."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    ious, weights = [], []
    for c in range(num_classes):
        union = np.logical_or(pred == c, target == c).sum()
        inter = np.logical_and(pred == c, target == c).sum()
        ious.append(inter / union if union else math.nan)
        weights.append((target == c).mean())
    present = [i for i in ious if not math.isnan(i)]
    weighted = sum(w * i for w, i in zip(weights, ious) if not math.isnan(i))
    return (pred == target).mean(), sum(present) / len(present), weighted, ious


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_independent_computation(seed):
    rng = np.random.default_rng(seed)
    target = rng.choice(3, size=(4, 17, 23), p=[0.3, 0.6, 0.1])
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 3, target.shape))
    # Accumulate batch by batch, as evaluation does, to check the sum equals the whole-split matrix.
    confmat = sum(confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), 3) for p, t in zip(pred, target))
    got = scores(confmat)
    acc, miou, wiou, ious = independent_scores(pred, target, 3)
    assert got["pixel_accuracy"] == pytest.approx(acc)
    assert got["mean_iou"] == pytest.approx(miou)
    assert got["weighted_iou"] == pytest.approx(wiou)
    assert got["iou_per_class"] == pytest.approx(ious)


def test_rows_are_ground_truth():
    confmat = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), 2)
    assert confmat.tolist() == [[1, 1], [0, 1]]


def test_hand_worked_example():
    # GT: 6 pet (0), 2 background (1); prediction gets 4 pet right, calls 2 pet pixels background.
    target = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    got = scores(confusion_matrix(pred, target, 2))
    assert got["pixel_accuracy"] == pytest.approx(6 / 8)
    assert got["iou_per_class"] == pytest.approx([4 / 6, 2 / 4])
    assert got["mean_iou"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert got["weighted_iou"] == pytest.approx(6 / 8 * 4 / 6 + 2 / 8 * 2 / 4)


def test_class_absent_from_both_is_nan_and_excluded():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    got = scores(confusion_matrix(pred, target, 3))
    assert math.isnan(got["iou_per_class"][2])
    assert got["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["weighted_iou"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)


def test_class_missed_entirely_counts_as_zero():
    target = torch.tensor([0, 0, 2, 2])
    pred = torch.tensor([0, 0, 0, 0])
    got = scores(confusion_matrix(pred, target, 3))
    assert got["iou_per_class"][2] == 0.0
    assert got["mean_iou"] == pytest.approx((2 / 4 + 0) / 2)


def test_ignore_index_and_bad_ids():
    target = torch.tensor([0, 255, 1])
    pred = torch.tensor([0, 1, 1])
    assert confusion_matrix(pred, target, 2, ignore_index=255).sum() == 2
    with pytest.raises(ValueError, match=r"target holds class ids outside 0..1: \[255\]"):
        confusion_matrix(pred, target, 2)
    with pytest.raises(ValueError, match="empty confusion matrix"):
        scores(torch.zeros(3, 3, dtype=torch.int64))


def test_dice_is_reported_beside_the_headline_metrics_and_never_joins_their_tests():
    from petseg.metrics import REGISTRY, headline_metrics, metric_names
    from petseg.report import stats
    from petseg.report.analysis import metrics_covered
    from petseg.report.tables import table2_columns

    confmat = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 0]])
    # Dice per class: 2*5/(6+7), 2*7/(10+8), and 0 for the class only ever predicted; mean over the three.
    assert scores(confmat)["dice"] == pytest.approx((10 / 13 + 14 / 18 + 0) / 3)
    assert headline_metrics() == ("pixel_accuracy", "mean_iou", "weighted_iou") and "dice" in metric_names()
    assert not REGISTRY["dice"].headline and table2_columns()["test_dice"] == "Dice"
    rng = np.random.default_rng(0)
    scored = {name: rng.integers(1, 50, size=(6, 3, 3)) for name in ("a", "b", "c")}
    rows = stats.pairwise_tests(scored, n_resamples=200)
    assert len(rows) == 3 * len(headline_metrics()) and {row["metric"] for row in rows} == set(headline_metrics())
    assert metrics_covered() == ("The verdicts cover the headline metrics (pixel accuracy, mIoU, weighted mIoU); "
                                 "Dice is reported, not tested.")


@pytest.fixture
def registry_snapshot():
    """Restore the metric registry after a test registers its own."""
    from petseg.metrics import REGISTRY
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def test_a_registered_metric_reaches_every_table_and_only_a_headline_one_grows_the_holm_family(registry_snapshot):
    from petseg.metrics import Metric, headline_metrics, metric_names, register_metric
    from petseg.report import stats
    from petseg.report.analysis import metrics_covered
    from petseg.report.tables import table2_columns

    register_metric(Metric("recall_0", "recall of class 0",
                           lambda s: s["true_positive"][:, 0] / s["gt_pixels"][:, 0], headline=False))
    confmat = torch.tensor([[6, 2, 0], [2, 7, 1], [0, 0, 4]])
    assert scores(confmat)["recall_0"] == pytest.approx(6 / 8)
    assert metric_names()[-1] == "recall_0" and table2_columns()["test_recall_0"] == "recall of class 0"
    assert "recall_0" not in headline_metrics() and "recall of class 0" in metrics_covered()
    summary = stats.summarize(np.stack([confmat.numpy()] * 4), n_resamples=50)
    assert summary["recall_0"] == pytest.approx(6 / 8) and summary["recall_0_low"] <= summary["recall_0_high"]
    rng = np.random.default_rng(0)
    scored = {name: rng.integers(1, 50, size=(6, 3, 3)) for name in ("a", "b")}
    assert len(stats.pairwise_tests(scored, n_resamples=100)) == 3

    register_metric(Metric("recall_1", "recall of class 1",
                           lambda s: s["true_positive"][:, 1] / s["gt_pixels"][:, 1], headline=True))
    assert headline_metrics()[-1] == "recall_1"
    assert {row["metric"] for row in stats.pairwise_tests(scored, n_resamples=100)} == set(headline_metrics())


def test_a_metric_name_is_a_column_name_and_taken_once(registry_snapshot):
    from petseg.metrics import REGISTRY, Metric, register_metric

    with pytest.raises(ValueError, match="must be a Python identifier"):
        register_metric(Metric("f-score", "F", REGISTRY["dice"].compute, headline=False))
    with pytest.raises(ValueError, match="'dice' is already registered"):
        register_metric(Metric("dice", "my Dice", REGISTRY["dice"].compute, headline=False))
    assert register_metric(REGISTRY["dice"]) is REGISTRY["dice"]  # the same entry again is harmless
