"""Bootstrap confidence intervals and paired tests over per-image confusion matrices."""
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from petseg.data import PetSegmentation, find_samples, load_trimap
from petseg.train.engine import evaluate
from petseg.metrics import metric_names, scores
from petseg.report.calibration import TOLERANCE, CalibrationError, Scenario, calibrate
from petseg.report.stats import (batch_scores, bootstrap_ci, holm, paired_test, paired_variant_test,
                                 pairwise_tests, seed_summary, summarize)
from petseg.train.engine import per_image_confusions
from petseg.models import build_seeded_model
from petseg.train.training import make_loader

ROOT = Path(__file__).resolve().parents[1]


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
    for metric in metric_names():
        expected = [scores(torch.from_numpy(c))[metric] for c in confmats]
        assert batch_scores(confmats, metric) == pytest.approx(expected, abs=1e-12)


def test_identical_images_collapse_the_interval_to_the_point():
    confusions = np.repeat(np.array([[[50, 3, 1], [4, 30, 2], [5, 1, 9]]]), 40, axis=0)
    for metric in metric_names():
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
    for metric in metric_names():
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
    rng = np.random.default_rng(0)
    scored = {"good": noisy_confusions(rng, 60, 0.92), "bad": noisy_confusions(rng, 60, 0.75)}
    # Six equally good variants: 45 tests among them, enough for the uncorrected test to call some different.
    scored.update({f"same{i}": noisy_confusions(rng, 60, 0.85) for i in range(6)})
    rows = pairwise_tests(scored, seed=0, n_resamples=2000)
    assert len(rows) == 28 * 3
    adjusted = holm([row["p_value"] for row in rows])
    for row, p_holm in zip(rows, adjusted):
        assert row["p_holm"] == pytest.approx(p_holm) and row["p_holm"] >= row["p_value"]
        assert (row["verdict"] != "not distinguishable") == (row["p_holm"] < 0.05)
    good_bad = [r for r in rows if {r["a"], r["b"]} == {"good", "bad"}]
    assert all(r["verdict"] == ("A better" if r["a"] == "good" else "B better") for r in good_bad)
    # Without the correction some "same" pairs would be called different at 95%; with it, none is.
    same = [r for r in rows if r["a"].startswith("same") and r["b"].startswith("same")]
    assert sum(r["p_value"] < 0.05 for r in same) >= 2
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
        paired_variant_test(shaky[:1], shaky[:1], "pixel_accuracy")
    with pytest.raises(ValueError, match="same seeds"):
        paired_variant_test(shaky[:3], steady, "pixel_accuracy")


def test_variant_test_is_a_paired_t_test_over_seeds_when_the_images_add_no_variance():
    """Every image of a run alike: resampling images changes nothing, so only the seeds vary."""
    rng = np.random.default_rng(9)
    per_run = rng.integers(10, 200, size=(2, 4, 3, 3))  # variant, seed, matrix
    runs_a, runs_b = (np.repeat(per_run[v][:, None], 20, axis=1) for v in (0, 1))  # [4 seeds, 20 images, 3, 3]
    for metric in metric_names():
        a, b = (batch_scores(per_run[v], metric) for v in (0, 1))
        result = paired_variant_test(runs_a, runs_b, metric, n_resamples=300)
        assert result["diff"] == pytest.approx(np.mean(a - b))
        assert result["p_value"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)  # paired by seed index
        half_width = scipy.stats.t(3).ppf(0.975) * np.std(a - b, ddof=1) / 2
        assert (result["low"], result["high"]) == pytest.approx((np.mean(a - b) - half_width,
                                                                  np.mean(a - b) + half_width))


def test_model_test_is_a_t_test_over_images_with_the_bootstrap_standard_error():
    """Pixel accuracy of equal-size images is a mean over images: the test is the paired t-test over them."""
    rng = np.random.default_rng(10)
    first, second = noisy_confusions(rng, 10, 0.85), noisy_confusions(rng, 10, 0.8)
    a, b = (np.trace(c, axis1=1, axis2=2) / c.sum(axis=(1, 2)) for c in (first, second))
    result = paired_test(first, second, "pixel_accuracy", n_resamples=20_000)
    assert result["diff"] == pytest.approx(np.mean(a - b))
    # The bootstrap's variance is 9/10 of the unbiased one at 10 images; the test scales it back.
    expected = scipy.stats.t(9).ppf(0.975) * np.std(a - b, ddof=1) / math.sqrt(10)
    assert (result["high"] - result["low"]) / 2 == pytest.approx(expected, rel=0.02)
    assert result["p_value"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=0.1)


def test_both_tests_hold_their_false_positive_rate_in_a_null_simulation():
    """A small experiments/calibrate_stats.py: equal variants (models) are called different at most about 5% of
    the time, and a real difference is found."""
    sims = 600
    table = calibrate(Scenario(delta=0.08), seed_counts=(2, 5), sims=sims, n_resamples=100).set_index(
        ["test", "seeds"])
    bound = 0.05 + TOLERANCE * math.sqrt(0.05 * 0.95 / sims)
    assert list(table.index) == [("variant", 2), ("variant", 5), ("model", 1)]
    for (test, seeds), row in table.iterrows():
        assert row["false_positive_rate"] <= bound, (test, seeds, row["false_positive_rate"])
        assert row["within"]
    assert table.loc[("variant", 5), "power"] > 0.5 and table.loc[("model", 1), "power"] > 0.9
    with pytest.raises(CalibrationError, match=r"seed counts \[1, 5\]"):
        calibrate(Scenario(), seed_counts=(1, 5), sims=10)


def test_calibration_script_writes_its_table_and_command(tmp_path):
    output = tmp_path / "calibration.md"
    args = ["--sims", "40", "--resamples", "20", "--seeds", "2,3", "--output", str(output)]
    run = subprocess.run([sys.executable, str(ROOT / "experiments" / "calibrate_stats.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    text = output.read_text()
    assert f"`python experiments/calibrate_stats.py {' '.join(args)}`" in text and "40 simulations" in text
    assert text.count("this variant (paired_variant_test)") == 2 and "this trained model (paired_test) | 1 |" in text
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "calibrate_stats.py"), "--seeds", "1,2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "seed counts [1, 2]" in bad.stderr


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
    for metric in metric_names():
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
