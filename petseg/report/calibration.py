"""Null simulations of petseg's paired tests: how often each calls two equally good models (or variants)
different, and how often it finds a real difference, with simulated per-image confusions.

A simulated run's per-pixel accuracy on image i is
    accuracy (+ delta for A under the alternative) + image_i + variant_i + seed shift + run noise_i,
clipped to [0, 1]: images differ in difficulty (shared by every model), each variant has its own strengths
and weaknesses per image (the same in every seed; under the null A's and B's are drawn alike, so they are
equal on images like these but not on this test set), each seed shifts a run's accuracy as a whole (the
seed-to-seed spread) and each run has its own per-image noise. An image's ground-truth pixels of the three
classes have random shares; a wrong pixel goes to either other class. The tests are the shipped ones
(stats.paired_variant_tests, stats.paired_tests), run on many simulations at once.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..errors import PetsegError
from . import stats
from .tables import markdown_table

CLASS_SHARES = (3.0, 6.0, 1.0)  # Dirichlet weights of pet, background, border pixels per image
PIXELS = 4096  # per image; only the images' relative sizes matter, and these are all equal
TOLERANCE = 2.5  # a rate is "within Monte Carlo error" when at most level + TOLERANCE standard errors


class CalibrationError(PetsegError):
    """A calibration setting that cannot be simulated."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What the simulated study looks like; the standard deviations are of per-pixel accuracy."""
    images: int = 60
    accuracy: float = 0.85
    image_sd: float = 0.06
    variant_image_sd: float = 0.03
    seed_sd: float = 0.03
    run_image_sd: float = 0.03
    delta: float = 0.03  # A's true advantage under the alternative

    def check(self) -> None:
        """Raise CalibrationError naming the first setting that makes no simulation."""
        if self.images < 2:
            raise CalibrationError(f"images={self.images}: a paired test over images needs at least 2")
        if not 0 < self.accuracy < 1:
            raise CalibrationError(f"accuracy={self.accuracy}: must lie strictly between 0 and 1, e.g. 0.85")
        for name in ("image_sd", "variant_image_sd", "seed_sd", "run_image_sd"):
            if not getattr(self, name) >= 0:
                raise CalibrationError(f"{name}={getattr(self, name)}: a standard deviation must be 0 or more")


def simulate_runs(scenario: Scenario, sims: int, seeds: int, delta: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-image confusions of variants A and B, [sims, seeds, images, 3, 3] each; A is `delta` better."""
    images = scenario.images
    shares = rng.dirichlet(CLASS_SHARES, size=(sims, images))  # the same test images for A and B
    difficulty = rng.normal(0, scenario.image_sd, size=(sims, 1, images))

    def accuracy(shift: float) -> np.ndarray:
        variant = rng.normal(0, scenario.variant_image_sd, size=(sims, 1, images))
        seed = rng.normal(0, scenario.seed_sd, size=(sims, seeds, 1))
        noise = rng.normal(0, scenario.run_image_sd, size=(sims, seeds, images))
        return np.clip(scenario.accuracy + shift + difficulty + variant + seed + noise, 0, 1)

    def confusions(right: np.ndarray) -> np.ndarray:
        truth = PIXELS * shares[:, None, :, :, None]  # ground-truth pixels per class (rows)
        eye = np.eye(3)
        return truth * (right[..., None, None] * eye + (1 - right[..., None, None]) / 2 * (1 - eye))

    return confusions(accuracy(delta)), confusions(accuracy(0.0))


def rejection_rate(scenario: Scenario, test: str, seeds: int, delta: float, sims: int, n_resamples: int,
                   metric: str, level: float, seed: int, chunk: int = 100) -> float:
    """Share of `sims` simulations in which `test` ("variant" or "model") calls A and B different."""
    if test not in ("variant", "model"):
        raise CalibrationError(f"test={test!r}: use 'variant' (paired_variant_test) or 'model' (paired_test)")
    rng = np.random.default_rng(seed)
    rejected = 0
    for start in range(0, sims, chunk):
        size = min(chunk, sims - start)
        # The bootstrap's own stream: seeded with the simulation's seed, its draws would mirror the data's.
        resampling = int(rng.integers(2**63))
        if test == "variant":
            runs_a, runs_b = simulate_runs(scenario, size, seeds, delta, rng)
            result = stats.paired_variant_tests(runs_a, runs_b, metric, n_resamples, resampling, level)
        else:
            # Two trained models equal in truth: no seed shift sets one above the other.
            runs_a, runs_b = simulate_runs(dataclasses.replace(scenario, seed_sd=0.0), size, 1, delta, rng)
            result = stats.paired_tests(runs_a[:, 0], runs_b[:, 0], metric, n_resamples, resampling, level)
        rejected += int(np.count_nonzero(result["verdict"] != "not distinguishable"))
    return rejected / sims


def calibrate(scenario: Scenario, seed_counts=(2, 3, 5, 10), sims: int = 1000, n_resamples: int = 200,
              metric: str = "weighted_iou", level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """False-positive rate (with its Monte Carlo standard error) and power of both shipped tests.

    One row per test and seed count: the variant-level test at each N in `seed_counts`, then the
    per-model test (one run per variant). `within` says whether the false-positive rate is at most
    alpha + TOLERANCE standard errors of a rate equal to alpha.
    """
    scenario.check()
    if sims < 1 or n_resamples < 2:
        raise CalibrationError(f"sims={sims}, n_resamples={n_resamples}: need at least 1 simulation and 2 resamples")
    if not seed_counts or min(seed_counts) < stats.VARIANT_MIN_SEEDS:
        raise CalibrationError(f"seed counts {list(seed_counts)}: the variant-level test needs at least "
                               f"{stats.VARIANT_MIN_SEEDS} seeds per variant")
    alpha = 1 - level
    bound = alpha + TOLERANCE * math.sqrt(alpha * (1 - alpha) / sims)
    rows = []
    for test, counts in (("variant", seed_counts), ("model", (1,))):
        for seeds in counts:
            common = dict(scenario=scenario, test=test, seeds=seeds, sims=sims, n_resamples=n_resamples,
                          metric=metric, level=level)
            fpr = rejection_rate(delta=0.0, seed=seed, **common)
            power = rejection_rate(delta=scenario.delta, seed=seed + 1, **common)
            rows.append({"test": test, "seeds": seeds, "false_positive_rate": fpr,
                         "fpr_se": math.sqrt(fpr * (1 - fpr) / sims), "power": power, "bound": bound,
                         "within": fpr <= bound})
    return pd.DataFrame(rows)


def calibration_markdown(table: pd.DataFrame, scenario: Scenario, sims: int, n_resamples: int, metric: str,
                         level: float, command: str, machine: str, seconds: float, cpu_seconds: float) -> str:
    """results/calibration.md: what was simulated, how, on what, and each test's rates."""
    shown = pd.DataFrame({
        "test": table["test"].map({"variant": "this variant (paired_variant_test)",
                                   "model": "this trained model (paired_test)"}),
        "seeds per variant": table["seeds"],
        "false-positive rate": [f"{rate:.4f} ± {se:.4f}" for rate, se in zip(table["false_positive_rate"],
                                                                             table["fpr_se"])],
        f"at most {table['bound'].iloc[0]:.4f}": table["within"].map({True: "yes", False: "NO"}),
        f"power at +{scenario.delta:g}": [f"{power:.3f}" for power in table["power"]],
    })
    alpha = 1 - level
    return "\n".join([
        "# Calibration of the paired tests", "",
        f"`{command}` on {machine}: {seconds:.0f} s wall, {cpu_seconds:.0f} s of CPU time.", "",
        f"{sims} simulations per row and hypothesis; {n_resamples} bootstrap resamples per test (a study's report "
        f"uses {stats.REPORT_RESAMPLES:,}: fewer only add noise to a test's image variance). "
        f"Metric: {metric}; level {level:g}, so a calibrated test calls equal variants different at most "
        f"{alpha:g} of the time. ± is the Monte Carlo standard error of the rate; the bound is {alpha:g} + "
        f"{TOLERANCE:g} standard errors of a rate of {alpha:g}.", "",
        f"Simulated: {scenario.images} test images shared by both variants; per-pixel accuracy {scenario.accuracy:g}, "
        f"image difficulty SD {scenario.image_sd:g} (shared), each variant's own per-image SD "
        f"{scenario.variant_image_sd:g}, seed-to-seed SD {scenario.seed_sd:g}, each run's per-image noise SD "
        f"{scenario.run_image_sd:g}; three classes with Dirichlet{CLASS_SHARES} pixel shares per image (see "
        "petseg/report/calibration.py). Null: both variants drawn alike. Alternative: variant A's accuracy "
        f"+{scenario.delta:g}. The per-model test compares one run of each, without a seed shift (two trained "
        "models equally good on images like these).", "",
        markdown_table(shown), "",
    ])
