"""Prediction time measured as a benchmark would: the same conditions for every model.

The test images are decoded, resized, normalised and moved to the device before any clock starts;
each model first predicts a few untimed warm-up batches (kernel selection, allocator growth, lazy
initialisation); then every model predicts the whole split several times, the order rotated each
round so no model is always first or last, with CUDA synchronised around each timed pass. A model's
time is the median of its passes.
"""
from __future__ import annotations

import functools
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .engine import amp_enabled, autocast


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "flags", ...); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's word for it)."""
    return cpu_fields().get("model name") or platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def precision(device: torch.device, amp: bool = True) -> str:
    """The compute precision petseg predicts in on `device`: "bf16 autocast" or "fp32"."""
    return "bf16 autocast" if amp_enabled(device, amp) else "fp32"


def images_on_device(dataset, device: torch.device) -> torch.Tensor:
    """Every item's normalised image stacked [N, 3, S, S] on `device`: decoding stays out of the clock."""
    return torch.stack([dataset[index][0] for index in range(len(dataset))]).to(device)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_all(model: nn.Module, images: torch.Tensor, batch_size: int, amp: bool = True) -> None:
    """Class ids of every image, batch by batch, as the test-set scoring computes them."""
    model.eval()
    for start in range(0, len(images), batch_size):
        with autocast(images.device, amp):
            model(images[start:start + batch_size]).argmax(dim=1)


def time_predictions(models: dict[str, nn.Module], images: torch.Tensor, batch_size: int, repeats: int = 3,
                     warmup_batches: int = 2, amp: bool = True,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """name -> {seconds (median over repeats of predicting all images), seconds_min, seconds_max,
    ms_per_image, images, repeats}; every model warmed up, then timed in rotating order.

    clock: seconds as a float, read just before and just after each timed pass (a test passes a fake one).
    """
    if repeats < 1 or warmup_batches < 0:
        raise ValueError(f"repeats={repeats}, warmup_batches={warmup_batches}: need repeats >= 1, warm-up >= 0")
    if len(images) == 0:
        raise ValueError("no test images to time predictions on")
    device = images.device
    names = list(models)
    for model in models.values():
        predict_all(model, images[:warmup_batches * batch_size], batch_size, amp)
    passes: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            _synchronise(device)
            started = clock()
            predict_all(models[name], images, batch_size, amp)
            _synchronise(device)
            passes[name].append(clock() - started)
    return {name: {"seconds": statistics.median(times), "seconds_min": min(times), "seconds_max": max(times),
                   "ms_per_image": 1000 * statistics.median(times) / len(images), "images": len(images),
                   "repeats": repeats}
            for name, times in passes.items()}
