"""How each variant's learning rate is searched: the sampler and the fewest of its trials drawn at random.

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


def random_start(num_samples: int, sampler: str = DEFAULT_SAMPLER) -> str:
    """How many of a variant's `num_samples` trials are random, in words: all, or a minimum that trials run at
    once raise (the start-up counts finished trials; each trial records how its lr was chosen)."""
    random_trials = startup_trials(num_samples, sampler)
    if random_trials == num_samples:
        return f"all {num_samples} trials random"
    return (f"at least {random_trials} of {num_samples} trials random and more when a variant's trials run at once, "
            f"as the start-up lasts until {random_trials} have finished")
