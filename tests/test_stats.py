"""Bootstrap confidence intervals and paired tests over per-image confusion matrices."""
import math
import warnings

import numpy as np
import pytest
import torch

from petseg.data import PetSegmentation, find_samples, load_trimap
from petseg.train.engine import evaluate
from petseg.metrics import scores
from petseg.report.stats import (METRICS, batch_scores, bootstrap_ci, holm, paired_test, paired_variant_test,
                                 pairwise_tests, seed_summary, summarize)
from petseg.train.engine import per_image_confusions
from petseg.models import build_seeded_model
from petseg.train.training import make_loader


def image_confusions(correct: np.ndarray, pixels: int = 10) -> np.ndarray:
    """[N, 3, 3] confusions of images whose pixels are all right (pet as pet) or all wrong (pet as background)."""
    confusions = np.zeros((len(correct), 3, 3), dtype=np.int64)
    confusions[correct, 0, 0] = pixels
    confusions[~correct, 0, 1] = pixels
    return confusions


def noisy_confusions(rng: np.random.Generator, n_images: int, accuracy: float) -> np.ndarray:
    """[N, 3, 3] confusions of 100-pixel images whose per-image accuracy scatters around `accuracy`."""
    confusions = np.zeros((n_images, 3, 3), dtype=np.int64)
    for index in range(n_images):
        truth = rng.integers(0, 3, size=100)
        wrong = rng.random(100) > np.clip(accuracy + rng.normal(0, 0.05), 0, 1)
        prediction = np.where(wrong, (truth + 1) % 3, truth)
        np.add.at(confusions[index], (truth, prediction), 1)
    return confusions


def test_batch_scores_match_metrics_scores_including_absent_classes():
    rng = np.random.default_rng(0)
    confmats = rng.integers(0, 50, size=(20, 3, 3))
    confmats[5, 2, :] = 0  # class 2 absent from both ground truth and prediction: NaN IoU, left out
    confmats[5, :, 2] = 0
    confmats[7, 1, 1] = 0  # class 1 present but never right: IoU 0, counted
    for metric in METRICS:
        expected = [scores(torch.from_numpy(c))[metric] for c in confmats]
        assert batch_scores(confmats, metric) == pytest.approx(expected, abs=1e-12)


def test_identical_images_collapse_the_interval_to_the_point():
    confusions = np.repeat(np.array([[[50, 3, 1], [4, 30, 2], [5, 1, 9]]]), 40, axis=0)
    for metric in METRICS:
        point, low, high = bootstrap_ci(confusions, metric, n_resamples=500)
        assert point == pytest.approx(scores(torch.from_numpy(confusions[0]))[metric], abs=1e-12)
        assert low == pytest.approx(point, abs=1e-12) and high == pytest.approx(point, abs=1e-12)


def test_all_or_nothing_images_give_the_binomial_proportion_interval():
    """Images entirely right or wrong make pixel accuracy a proportion: CI ~ p +- 1.96 sqrt(p(1-p)/n)."""
    n, p = 400, 0.3
    correct = np.arange(n) < int(p * n)
    point, low, high = bootstrap_ci(image_confusions(correct), "pixel_accuracy", n_resamples=4000, seed=1)
    half_width = 1.96 * math.sqrt(p * (1 - p) / n)  # 0.045
    assert point == pytest.approx(p)
    assert low == pytest.approx(p - half_width, abs=0.006)
    assert high == pytest.approx(p + half_width, abs=0.006)
    # A wider level gives a wider interval around the same point.
    _, low99, high99 = bootstrap_ci(image_confusions(correct), "pixel_accuracy", n_resamples=4000, level=0.99, seed=1)
    assert low99 < low and high99 > high


def test_planted_difference_is_flagged_both_ways():
    rng = np.random.default_rng(0)
    better, worse = noisy_confusions(rng, 60, 0.9), noisy_confusions(rng, 60, 0.8)
    for metric in METRICS:
        result = paired_test(better, worse, metric)
        assert result["verdict"] == "A better", metric
        assert result["diff"] > 0 and 0 < result["low"] <= result["diff"] <= result["high"]
        assert result["p_value"] < 0.01
        swapped = paired_test(worse, better, metric)
        assert swapped["verdict"] == "B better" and swapped["diff"] == pytest.approx(-result["diff"])


def test_holm_adjusts_step_down_and_keeps_the_order():
    # Sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06 (kept monotone), 0.04 -> 0.06.
    np.testing.assert_allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([0.004]).tolist() == [0.004]  # one test: nothing to correct


def test_pairwise_verdicts_are_holm_corrected():
    rng = np.random.default_rng(6)
    scored = {"good": noisy_confusions(rng, 60, 0.92), "bad": noisy_confusions(rng, 60, 0.75)}
    # Equally good variants whose one test would be borderline: the correction over all tests decides.
    scored.update({f"same{i}": noisy_confusions(rng, 60, 0.85) for i in range(4)})
    rows = pairwise_tests(scored, seed=0, n_resamples=4000)
    assert len(rows) == 15 * 3
    adjusted = holm([row["p_value"] for row in rows])
    for row, p_holm in zip(rows, adjusted):
        assert row["p_holm"] == pytest.approx(p_holm) and row["p_holm"] >= row["p_value"]
        assert (row["verdict"] != "not distinguishable") == (row["p_holm"] < 0.05)
    good_bad = [r for r in rows if {r["a"], r["b"]} == {"good", "bad"}]
    assert all(r["verdict"] == ("A better" if r["a"] == "good" else "B better") for r in good_bad)
    # Without the correction, some "same" pairs would be called different at 95%; with it, none is.
    same = [r for r in rows if r["a"].startswith("same") and r["b"].startswith("same")]
    assert all(r["verdict"] == "not distinguishable" for r in same)


def test_variant_level_test_widens_with_training_variation():
    """Runs that differ a lot from seed to seed make the variant-level interval wider than one model's."""
    rng = np.random.default_rng(8)
    steady = np.stack([noisy_confusions(rng, 40, 0.85) for _ in range(4)])
    shaky = np.stack([noisy_confusions(rng, 40, accuracy) for accuracy in (0.7, 0.95, 0.75, 0.9)])
    one_model = paired_test(shaky[1], steady[0], "pixel_accuracy")
    variant = paired_variant_test(shaky, steady, "pixel_accuracy")
    assert variant["high"] - variant["low"] > 2 * (one_model["high"] - one_model["low"])
    assert one_model["verdict"] == "A better"  # the lucky seed alone looks better ...
    assert variant["verdict"] == "not distinguishable"  # ... the variant, over its seeds, does not
    expected = np.mean([scores(torch.from_numpy(r.sum(axis=0)))["pixel_accuracy"] for r in shaky]) - np.mean(
        [scores(torch.from_numpy(r.sum(axis=0)))["pixel_accuracy"] for r in steady])
    assert variant["diff"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least two training runs"):
        paired_variant_test(shaky[:1], steady, "pixel_accuracy")


def test_identical_models_are_not_distinguishable():
    confusions = noisy_confusions(np.random.default_rng(2), 50, 0.85)
    result = paired_test(confusions, confusions.copy(), "mean_iou")
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "verdict": "not distinguishable"}


def test_equally_good_models_are_not_distinguishable():
    rng = np.random.default_rng(3)
    first, second = noisy_confusions(rng, 60, 0.85), noisy_confusions(rng, 60, 0.85)
    result = paired_test(first, second, "weighted_iou")
    assert result["verdict"] == "not distinguishable"
    assert result["low"] < 0 < result["high"] and result["p_value"] > 0.05


def test_the_same_seed_gives_the_same_answer():
    confusions = noisy_confusions(np.random.default_rng(4), 30, 0.8)
    assert bootstrap_ci(confusions, "mean_iou", seed=7) == bootstrap_ci(confusions, "mean_iou", seed=7)
    assert bootstrap_ci(confusions, "mean_iou", seed=7) != bootstrap_ci(confusions, "mean_iou", seed=8)
    other = noisy_confusions(np.random.default_rng(5), 30, 0.8)
    assert paired_test(confusions, other, "pixel_accuracy", seed=7) == paired_test(confusions, other,
                                                                                   "pixel_accuracy", seed=7)


def test_bad_input_is_named():
    confusions = noisy_confusions(np.random.default_rng(6), 5, 0.8)
    with pytest.raises(ValueError, match="'accuracy'.*pixel_accuracy"):
        bootstrap_ci(confusions, "accuracy")
    with pytest.raises(ValueError, match="same images"):
        paired_test(confusions, confusions[:4], "mean_iou")
    with pytest.raises(ValueError, match=r"shape \(0, 3, 3\)"):
        bootstrap_ci(confusions[:0], "mean_iou")
    with pytest.raises(ValueError, match="level=1.5"):
        bootstrap_ci(confusions, "mean_iou", level=1.5)


def test_summarize_has_every_metric_with_its_interval_and_the_class_ious():
    confusions = noisy_confusions(np.random.default_rng(7), 20, 0.8)
    summary = summarize(confusions, n_resamples=200)
    whole = scores(torch.from_numpy(confusions.sum(axis=0)))
    for metric in METRICS:
        assert summary[metric] == pytest.approx(whole[metric])
        assert summary[f"{metric}_low"] <= summary[metric] <= summary[f"{metric}_high"]
    assert [summary[f"iou_{c}"] for c in ("pet", "background", "border")] == pytest.approx(whole["iou_per_class"])


def test_seed_summary():
    assert seed_summary([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    mean, std = seed_summary([0.5])
    assert mean == 0.5 and math.isnan(std)
    with pytest.raises(ValueError, match="one score per seed"):
        seed_summary([])


@pytest.fixture(scope="module")
def model_and_data(pet_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model("fcn_resnet50", pretrained=False, seed=0)
    test = find_samples(pet_root)["test"][:6]
    return model.eval(), PetSegmentation(test, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_per_image_confusions_sum_to_the_whole_split_matrix(model_and_data):
    model, dataset = model_and_data
    device = torch.device("cpu")
    confusions = per_image_confusions(model, dataset, device, batch_size=4)
    assert confusions.shape == (6, 3, 3) and confusions.dtype == np.int64
    assert (confusions.sum(axis=(1, 2)) == 32 * 32).all()
    whole = evaluate(model, make_loader(dataset, 4, train=False), device, 3)["confusion_matrix"]
    assert np.array_equal(confusions.sum(axis=0), whole.numpy())


def test_per_image_confusions_at_original_size_score_every_trimap_pixel(model_and_data):
    model, dataset = model_and_data
    confusions = per_image_confusions(model, dataset, torch.device("cpu"), batch_size=4, original_size=True)
    trimaps = [load_trimap(sample.trimap) for sample in dataset.samples]
    assert [int(c.sum()) for c in confusions] == [t.size for t in trimaps]
    assert [c.sum(axis=1).tolist() for c in confusions] == [np.bincount(t.ravel(), minlength=3).tolist()
                                                           for t in trimaps]
