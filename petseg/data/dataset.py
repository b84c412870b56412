"""The segmentation dataset base: items resized and normalised, decoded once into a shared cache if asked,
augmented offline (fixed copies) or online; Pets and VOC / ADE20K extend it with their own files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ..disk import cached_arrays
from .files import fingerprint, resize_image, resize_mask
from .transforms import augmentation, offline_seed

AUGMENT_MODES = (None, "offline", "online")


class SegmentationDataset(torch.utils.data.Dataset):
    """(image float32 [3,S,S] normalised, mask int64 [S,S]) items, optionally augmented: the base that the
    Oxford-IIIT Pet and the VOC / ADE20K datasets extend with their own `load_pair` and `mask_fill`.

    augment=None: N items. "offline": 2N items, the last N one fixed augmented copy per image.
    "online": N items, freshly augmented on every access. Default mean/std: no normalisation.
    """

    mask_fill: int  # what rotation leaves in the mask's corners
    num_classes: int

    def __init__(self, samples: Sequence, size: int = 256, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), augment: str | None = None, seed: int = 0,
                 decoded_cache_dir: str | Path | None = None):
        if augment not in AUGMENT_MODES:
            raise ValueError(f"augment={augment!r}: use one of {AUGMENT_MODES}")
        self.samples = list(samples)
        self.size = size
        self.augment = augment
        self.seed = seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augmentation = augmentation(self.mask_fill)  # the transforms applied, as configured
        # With a cache dir, images are decoded and resized once into shared uint8 files.
        self.decoded_cache_dir = decoded_cache_dir
        self._decoded = None

    def __len__(self) -> int:
        return 2 * len(self.samples) if self.augment == "offline" else len(self.samples)

    @property
    def names(self) -> list[str]:
        """One name per item; an offline copy is "<name>.aug<seed>" (distinct, e.g. as a cache key)."""
        copies = [f"{s.name}.aug{self.seed}" for s in self.samples] if self.augment == "offline" else []
        return [s.name for s in self.samples] + copies

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per class id; datasets with named classes override it (the class index otherwise)."""
        return tuple(str(index) for index in range(self.num_classes))

    def load_pair(self, sample) -> tuple[Image.Image, np.ndarray]:
        """A sample's RGB image and its class-id mask at full size; each dataset reads its own format."""
        raise NotImplementedError

    def _resized_arrays(self, sample) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.load_pair(sample)
        return np.array(resize_image(image, self.size)), np.array(resize_mask(mask, self.size))

    def _decoded_arrays(self) -> dict[str, np.ndarray] | None:
        if self._decoded is None:
            count, size = len(self.samples), self.size
            key = fingerprint(self.samples, ["decoded", [s.name for s in self.samples], size], with_trimaps=True)

            def fill(arrays):
                for index, sample in enumerate(self.samples):
                    arrays["images"][index], arrays["masks"][index] = self._resized_arrays(sample)

            specs = {"images": ((count, size, size, 3), np.uint8), "masks": ((count, size, size), np.uint8)}
            self._decoded = cached_arrays(Path(self.decoded_cache_dir) / "decoded" / key, specs, fill,
                                          {"items": count, "size": size})
        return self._decoded

    def _load_resized(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        arrays = self._decoded_arrays() if self.decoded_cache_dir is not None else None
        if arrays is None:  # no cache asked for, or no disk room for one
            image, mask = self._resized_arrays(self.samples[index])
        else:
            image, mask = np.array(arrays["images"][index]), np.array(arrays["masks"][index])
        pixels = torch.from_numpy(image).permute(2, 0, 1)
        return tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(mask))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        count = len(self.samples)
        # Resizing first makes the augmentation run on small tensors.
        image, mask = self._load_resized(index % count)
        if self.augment == "online":
            image, mask = self.augmentation(image, mask)
        elif self.augment == "offline" and index >= count:
            # A private RNG keeps the copy the same whatever the worker or access order.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(offline_seed(self.seed, index - count))
                image, mask = self.augmentation(image, mask)
        pixels = image.as_subclass(torch.Tensor).float() / 255.0
        return (pixels - self.mean) / self.std, mask.as_subclass(torch.Tensor).long()
