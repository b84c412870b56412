"""Test-only fault: trials of $PETSEG_TEST_OOM_VARIANT raise a (simulated) out-of-memory error.

On PYTHONPATH, Python imports this at start-up in the driver and in every Ray worker, so the
trainable's training call is swapped before any trial runs; the error comes from inside the trial,
where its own errors are counted and retried.
"""
import functools
import os

if os.environ.get("PETSEG_TEST_OOM_VARIANT"):
    import torch

    import petseg.tune.trainable

    real_fit = petseg.tune.trainable.fit

    @functools.wraps(real_fit)
    def fit(spec, *args, **kwargs):
        if spec.variant == os.environ["PETSEG_TEST_OOM_VARIANT"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated by the test)")
        return real_fit(spec, *args, **kwargs)

    petseg.tune.trainable.fit = fit
