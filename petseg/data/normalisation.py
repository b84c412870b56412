"""Per-channel normalisation statistics: measured on a training set once (cached), or ImageNet's."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..disk import cached_json
from ..errors import DatasetError
from .files import fingerprint, load_image, resize_image

# The backbones learnt ImageNet's statistics, and the public DenseASPP / torchvision recipes normalise
# VOC and ADE20K with them; a 10k-20k image pass to measure each set's own would change little.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _mean_std(samples: Sequence, size: int) -> dict:
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for sample in samples:
        image = resize_image(load_image(sample.image), size)
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "images": len(samples), "size": size}


def compute_mean_std(samples: Sequence, size: int, cache_dir: str | Path | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units of the images resized to size; cached in cache_dir."""
    if not samples:
        raise DatasetError("no training samples to compute the normalisation from; check the split")
    key = fingerprint(samples, ["mean_std", size], with_trimaps=False)
    stats = cached_json(cache_dir, f"mean_std-{key}.json", lambda: _mean_std(samples, size))
    return tuple(stats["mean"]), tuple(stats["std"])
