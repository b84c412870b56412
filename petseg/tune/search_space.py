"""How each variant's learning rate is searched: the sampler and how many of its trials are random.

Kept free of Ray (and Optuna) so `petseg.tune.config` can describe the plan for `--dry-run` before Ray
is imported. The choice is measured by experiments/search_benchmark.py (results/search_benchmark.md).
"""
from __future__ import annotations

SAMPLERS = {"gp": "Optuna GP", "tpe": "Optuna TPE", "random": "random"}  # config `sampler` -> its name
DEFAULT_SAMPLER = "gp"
# From one result the GP only probes an edge of the range; from two it follows the slope. More random
# trials found no better rates at budgets 8 or 20, only later, so the start stays at two.
STARTUP = 2


def startup_trials(num_samples: int, sampler: str = DEFAULT_SAMPLER) -> int:
    """Random trials before the model takes over: two, or the whole budget when it is smaller (or random search)."""
    if num_samples < 1:
        raise ValueError(f"num_samples (learning rates tried per variant) must be at least 1, got {num_samples}")
    return num_samples if sampler == "random" else min(num_samples, STARTUP)


def sampler_plan(num_samples: int, sampler: str = DEFAULT_SAMPLER) -> tuple[str, int]:
    """The sampler's name and how many of the `num_samples` trials per variant it draws at random.

    Startup counts finished trials: trials started side by side before that many have finished are random too.
    """
    return SAMPLERS[sampler], startup_trials(num_samples, sampler)
