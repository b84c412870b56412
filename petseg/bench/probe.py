"""Repeated timing of one step on a device: the median of timed calls after warm-up ones, the FLOPs PyTorch
counts in it, a training step with the live backbone against one on cached features, and a matmul reference."""
from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepProbe:
    """One variant's live-backbone training step against its head-only step on cached features."""

    variant: str
    live_ms: float
    cached_ms: float
    ratio: float  # live seconds over cached seconds: the per-step limit of the feature cache
    live_flop: int
    cached_flop: int


def median_seconds(step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median wall seconds of `repeats` calls of `step` after `warmup` untimed ones (CUDA synchronised).

    clock: seconds as a float, read just before and just after each timed call (a test passes a fake one)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats}, warmup={warmup}: need repeats >= 1 and warmup >= 0")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = clock()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(clock() - started)
    return statistics.median(times)


def flops_of(step: Callable[[], object]) -> int:
    """FLOPs PyTorch's FlopCounterMode counts over one call of `step` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def step_probe(variant: str, lr: float, batch_size: int, size: int, repeats: int, device: torch.device,
               amp: bool = False) -> StepProbe:
    """One training step with the live backbone and one head-only step on cached features, timed and counted.

    Both are petseg's own training step (train_one_epoch over one batch: forward, loss, backward, the
    variant's optimiser step), same batch and size, fp32 unless `amp`; the cached features are
    stored in fp16 and read back as float32, as the feature cache does.
    """
    from ..models import build_seeded_model
    from ..models.segmenter import map_features
    from ..train.engine import train_one_epoch
    from ..train.features import HeadOnly
    from ..train.training import make_optimizer
    from ..train.trial_spec import Searched

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    target = torch.randint(0, 3, (batch_size, size, size), generator=generator).to(device)
    features = map_features(lambda tensor: tensor.half().float(), model.features(images))
    optimizer, _ = make_optimizer(model, variant, Searched(lr), total_steps=1000)
    head = HeadOnly(model, size)
    live = lambda: train_one_epoch(model, [(images, target)], optimizer, device, amp=amp)  # noqa: E731
    cached = lambda: train_one_epoch(head, [(features, target)], optimizer, device, amp=amp)  # noqa: E731
    live_s = median_seconds(live, device, repeats)
    cached_s = median_seconds(cached, device, repeats)
    return StepProbe(variant, 1000 * live_s, 1000 * cached_s, live_s / cached_s, flops_of(live), flops_of(cached))


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of a large matrix product on `device` in `dtype` (the probes' precision): a reference rate,
    not the device's peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, device, repeats=5, warmup=1)
