"""A plugin the architecture test names with --plugins: a dataset, a variant and a metric of its own, each one
registration, none known to petseg. Every process of the study (driver, Ray workers, report) imports it."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from petseg.data import DatasetSource, Pair, load_image, register_source
from petseg.errors import DatasetError
from petseg.metrics import Metric, register_metric
from petseg.models import BackboneSpec, VariantSpec, register

TILE_CLASSES = ("sky", "sea", "sand", "rock")
COLOURS = np.array([[110, 170, 230], [20, 70, 140], [220, 200, 150], [90, 80, 70]])


class Tiles(DatasetSource):
    """DIR/<name>.png photos with their class ids as a NumPy array DIR/<name>.npy; DIR/tiles.txt lists the names."""

    name = "tiles"
    class_names = TILE_CLASSES
    marker = "tiles.txt"

    def find(self, root, download=False):
        """The names tiles.txt lists, each a photo and its array."""
        listing = Path(root) / self.marker
        if not listing.is_file():
            raise DatasetError(f"{listing} is missing: not a tiles dataset", listing)
        names = listing.read_text().split()
        return [Pair(n, Path(root) / f"{n}.png", Path(root) / f"{n}.npy") for n in names], []

    def load_pair(self, sample, classes):
        """The photo and its class ids."""
        return load_image(sample.image), np.load(sample.labels).astype(np.uint8)

    def generate(self, root, num_images, size, seed):
        """Horizontal bands of the four classes at random heights, coloured with noise; the listing last."""
        rng = np.random.default_rng(seed)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        names = [f"tile_{i:03d}" for i in range(num_images)]
        for name in names:
            edges = np.sort(rng.integers(1, size, size=3))
            mask = np.searchsorted(edges, np.arange(size), side="right")[:, None].repeat(size, axis=1)
            pixels = COLOURS[mask] + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{name}.png")
            np.save(root / f"{name}.npy", mask.astype(np.uint8))
        (root / self.marker).write_text("\n".join(names) + "\n")


class TwoLevels(nn.Module):
    """A random-init backbone with a low-level (stride 4) and a high-level (stride 8) output."""

    def __init__(self):
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, images):
        low = self.low(images)
        return {"low": low, "high": self.high(low)}


class TwoLevelHead(nn.Module):
    """Classifies the high level, upsampled onto the low level's grid, beside the low level."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.classify = nn.Conv2d(channels["low"] + channels["high"], num_classes, 1)

    def forward(self, features):
        high = nn.functional.interpolate(features["high"], size=features["low"].shape[-2:], mode="bilinear")
        return self.classify(torch.cat([features["low"], high], dim=1))


register_source(Tiles())
register(VariantSpec(key="two_level", paper_name="TwoLevel", backbone_name="TwoLevelConv",
                     backbone_weights="random init", backbone_id="two_level_random", head_pretraining="none",
                     encoder=BackboneSpec(TwoLevels, channels={"low": 8, "high": 16}, strides={"low": 4, "high": 8}),
                     head=lambda channels, num_classes, state: TwoLevelHead(channels, num_classes),
                     recipe="torchvision"))
# A headline metric: it joins the paired tests and their Holm family, and the report says so.
register_metric(Metric("sky_recall", "sky recall", lambda s: s["true_positive"][:, 0] / s["gt_pixels"][:, 0],
                       headline=True))
