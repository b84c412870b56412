"""Write a tiny generated folder dataset in the documented layout (images/, masks/ as palette PNGs, classes.txt
with an ignore line), so tests and smoke runs take the folder dataset's real code path.

    python -m petseg.synthetic --kind folder --root data/shapes --num-images 24 --size 64 --seed 0
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..drawing import voc_palette
from .pets import background_colour, pet_mask, texture
from .seg import class_colour

FOLDER_CLASSES = ("background", "circle", "square", "stripe", "blob")
IGNORE_BAND = 1  # pixels: each blob's outline is marked "ignore", as hand-labelled masks often mark edges


def _render(rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB [H, W, 3] uint8, mask [H, W] uint8) pair: a textured background with one shape per object class."""
    shape = (int(size * rng.uniform(0.8, 1.2)), int(size * rng.uniform(0.8, 1.2)))
    image = texture(rng, shape, background_colour)
    mask = np.zeros(shape, np.uint8)
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    for label in rng.permutation(np.arange(1, num_classes))[: rng.integers(1, num_classes)]:
        cy, cx = rng.uniform(0.2, 0.8) * shape[0], rng.uniform(0.2, 0.8) * shape[1]
        radius = rng.uniform(0.12, 0.25) * min(shape)
        kind = label % 4
        if kind == 1:
            region = (rows - cy) ** 2 + (cols - cx) ** 2 < radius ** 2
        elif kind == 2:
            region = (abs(rows - cy) < radius) & (abs(cols - cx) < radius)
        elif kind == 3:
            region = (abs(rows - cy) < radius / 3) & (abs(cols - cx) < 2 * radius)
        else:
            region = pet_mask(rng, shape)
        image[region] = texture(rng, shape, class_colour(int(label)))[region]
        mask[region] = label
    edges = np.zeros(shape, bool)
    edges[:-IGNORE_BAND] |= mask[:-IGNORE_BAND] != mask[IGNORE_BAND:]
    edges[:, :-IGNORE_BAND] |= mask[:, :-IGNORE_BAND] != mask[:, IGNORE_BAND:]
    mask[edges] = 255
    return image.clip(0, 255).astype(np.uint8), mask


def write_folder(root: str | Path, num_images: int = 24, size: int = 64, seed: int = 0,
                 num_classes: int = len(FOLDER_CLASSES)) -> Path:
    """Write num_images pairs (JPEG and PNG images, palette masks) and classes.txt (written last) under root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        image, mask = _render(rng, size, num_classes)
        suffix = ".jpg" if index % 2 == 0 else ".png"  # both kinds of image file, as real folders mix them
        Image.fromarray(image).save(root / "images" / f"shape_{index:03d}{suffix}", quality=95)
        labels = Image.fromarray(mask)
        labels.putpalette(voc_palette())  # an 8-bit image with a palette becomes a palette PNG, indices kept
        labels.save(root / "masks" / f"shape_{index:03d}.png")
    names = FOLDER_CLASSES[:num_classes] if num_classes <= len(FOLDER_CLASSES) else [
        f"class_{i}" for i in range(num_classes)]
    (root / "classes.txt").write_text("\n".join([*names, "ignore: 255"]) + "\n")
    return root
