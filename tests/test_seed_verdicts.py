"""The report's seed path: one set of fresh seed runs for mean ± std and the variant-level tests, and a
sentence instead of verdicts where there are too few seeds. Small synthetic confusions, no study."""
import numpy as np
import pandas as pd
import pytest
import torch

from petseg.data import CLASS_NAMES
from petseg.metrics import headline_metrics, metric_names, scores
from petseg.report import analysis


def run_confusions(rng: np.random.Generator, accuracy: float, images: int = 30) -> np.ndarray:
    """[images, 3, 3] confusions of one run whose per-image accuracy scatters around `accuracy`."""
    truth = rng.integers(100, 300, size=(images, 3)).astype(np.float64)
    right = np.clip(accuracy + rng.normal(0, 0.04, size=(images, 1)), 0, 1)
    eye = np.eye(3)
    return truth[:, :, None] * (right[:, :, None] * eye + (1 - right[:, :, None]) / 2 * (1 - eye))


def comparison_frame(confusions: dict[str, np.ndarray]) -> pd.DataFrame:
    """The columns comparison_markdown reads, for one scored model per variant."""
    rows = []
    for key, confusion in confusions.items():
        whole = scores(torch.from_numpy(confusion.sum(axis=0)))
        rows.append({"key": key, "model": key.upper(), "trainable_params": 1, "total_params": 2, "best_lr": 1e-3,
                     "epochs": 1, "val_weighted_iou": 0.5, "prediction_ms_per_image": 1.0, "test_images": 30,
                     "device": "cpu", "batch_size": 2, "precision": "fp32", "prediction_repeats": 3,
                     **{f"test_{m}{end}": whole[m] for m in metric_names() for end in ("", "_low", "_high")},
                     **{f"test_iou_{name}": iou for name, iou in zip(CLASS_NAMES, whole["iou_per_class"])}})
    return pd.DataFrame(rows)


def study(rng: np.random.Generator, seeds: dict[str, list[int]]):
    """Each variant's selected trial (run 0) and its seed repeats, as write_report gets them."""
    accuracy = {"good": 0.9, "bad": 0.7, "other": 0.8}
    best = {variant: run_confusions(rng, accuracy[variant] + 0.05) for variant in seeds}  # selected: lucky
    repeats = {variant: {seed: run_confusions(rng, accuracy[variant]) for seed in variant_seeds}
               for variant, variant_seeds in seeds.items()}
    return best, repeats


def test_seed_runs_are_one_set_of_common_seeds_without_the_selected_trial():
    rng = np.random.default_rng(0)
    best, repeats = study(rng, {"good": [1, 2, 3], "bad": [1, 3], "other": []})
    runs, note = analysis.common_seeds(repeats, list(best))
    assert set(runs) == {"good", "bad"}  # "other" has no seed run
    assert all(np.array_equal(runs["good"][k], repeats["good"][s]) for k, s in enumerate([1, 3]))
    assert all(np.array_equal(runs["bad"][k], repeats["bad"][s]) for k, s in enumerate([1, 3]))
    assert "good seed 2" in note and "No finished seed run: other" in note
    columns = analysis.seed_columns(runs).set_index("key")
    for variant in ("good", "bad"):
        values = [scores(torch.from_numpy(repeats[variant][s].sum(axis=0)))["weighted_iou"] for s in (1, 3)]
        assert columns.loc[variant, "seeds"] == 2
        assert columns.loc[variant, "test_weighted_iou_seed_mean"] == pytest.approx(np.mean(values))
        assert columns.loc[variant, "test_weighted_iou_seed_std"] == pytest.approx(np.std(values, ddof=1))
    assert analysis.common_seeds({}, ["good"]) == ({}, "No finished seed run: good.")


def test_variant_verdicts_come_from_the_seed_runs_and_name_their_test():
    rng = np.random.default_rng(1)
    best, repeats = study(rng, {"good": [1, 2, 3, 4], "bad": [1, 2, 3, 4]})
    runs, note = analysis.common_seeds(repeats, list(best))
    names = {"good": "GOOD", "bad": "BAD"}
    tests = pd.concat([analysis.pairwise(best, names, seed=0),
                       analysis.pairwise(runs, names, seed=0, variant_level=True)], ignore_index=True)
    variant = tests[tests["unit"] == analysis.UNIT_VARIANT].set_index("metric")
    # The difference is the mean over the seed runs only: the selected trials (0.05 luckier) do not count.
    seed_means = analysis.seed_columns(runs).set_index("key")
    for metric in headline_metrics():  # the metrics the verdicts cover
        expected = seed_means.loc["good", f"test_{metric}_seed_mean"] - seed_means.loc["bad", f"test_{metric}_seed_mean"]
        assert variant.loc[metric, "difference"] == pytest.approx(expected)
    assert (variant["verdict"] == "GOOD better").all()
    comparison = comparison_frame(best).merge(analysis.seed_columns(runs), on="key", how="left")
    text = analysis.comparison_markdown(comparison, tests, note)
    assert "Paired t-tests over seeds: 4 fresh runs per variant" in text and "3 degree(s) of freedom" in text
    assert "the search's selected trial is not among them" in text
    assert "(n=4)" in text and "No verdicts about" not in text


@pytest.mark.parametrize("seeds,expected", [
    ({"good": [1], "bad": [1, 2]}, "1 seed run(s) per variant, and a test over seeds needs at least 2"),
    ({"good": [1, 2], "bad": []}, "only one variant has seed runs"),
    ({"good": [1], "bad": [2]}, "0 seed run(s) per variant"),
])
def test_too_few_seeds_is_said_in_words_instead_of_verdicts(seeds, expected):
    rng = np.random.default_rng(2)
    best, repeats = study(rng, seeds)
    runs, note = analysis.common_seeds(repeats, list(best))
    names = {"good": "GOOD", "bad": "BAD"}
    tests = analysis.pairwise(best, names, seed=0)  # write_report runs no variant-level test here
    comparison = comparison_frame(best).merge(analysis.seed_columns(runs), on="key", how="left")
    text = analysis.comparison_markdown(comparison, tests, note)
    assert f"No verdicts about {analysis.UNIT_VARIANT}: {expected}" in text
    assert analysis.UNIT_MODEL in text  # the per-model verdicts are still there
    assert analysis.too_few_seeds(comparison_frame(best), tests) == ""  # no seeds asked for: nothing to say


def test_the_chosen_weight_decay_is_a_column_only_when_the_study_searched_it():
    rng = np.random.default_rng(3)
    best, _ = study(rng, {"good": [], "bad": []})
    tests = analysis.pairwise(best, {"good": "GOOD", "bad": "BAD"}, seed=0)
    comparison = comparison_frame(best)
    header = analysis.comparison_markdown(comparison, tests).splitlines()[0]
    assert "best_lr" in header and "best_weight_decay" not in header
    searched = comparison.assign(best_weight_decay=[2e-5, 3e-4])
    header = analysis.comparison_markdown(searched, tests).splitlines()[0]
    assert "| best_lr | best_weight_decay | epochs |" in header
