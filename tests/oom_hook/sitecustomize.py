"""Test-only fault: trials of $PETSEG_TEST_OOM_VARIANT raise a (simulated) out-of-memory error.

On PYTHONPATH, Python imports this at start-up in the driver and in every Ray worker, so the
study's own trainable is swapped before Ray unpickles it by reference.
"""
import functools
import os

if os.environ.get("PETSEG_TEST_OOM_VARIANT"):
    import torch

    import petseg.tune.trainable

    real_train_variant = petseg.tune.trainable.train_variant

    @functools.wraps(real_train_variant)
    def train_variant(config, data, **bound):
        if config["variant"] == os.environ["PETSEG_TEST_OOM_VARIANT"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated by the test)")
        return real_train_variant(config, data, **bound)

    petseg.tune.trainable.train_variant = train_variant
