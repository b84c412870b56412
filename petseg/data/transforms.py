"""The paper's augmentation of an (image, mask) pair, and the seeds of its fixed offline copies."""
from __future__ import annotations

import hashlib

from torchvision import tv_tensors
from torchvision.transforms import v2


def augmentation(mask_fill: int) -> v2.Compose:
    """The paper's augmentation of an (Image, Mask) pair; colour jitter and blur touch only the image.

    Rotation fills the corners of the mask with `mask_fill` (the pets' background class, VOC / ADE20K's ignore label).
    """
    return v2.Compose([
        v2.RandomRotation(90, interpolation=v2.InterpolationMode.BILINEAR,
                          fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}),
        v2.RandomHorizontalFlip(0.5),
        v2.ColorJitter(brightness=(0, 2), contrast=(0, 2), saturation=(0, 2), hue=0.1),
        v2.GaussianBlur(3, sigma=(0.1, 2.0)),
    ])


def offline_seed(seed: int, index: int) -> int:
    """The RNG seed of image index's fixed augmented copy: depends only on (seed, index)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: a valid torch seed


