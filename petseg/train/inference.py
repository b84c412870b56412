"""Inference with a study's best checkpoints: load one, predict photos of any size (drawing is
petseg.drawing's). experiments/predict.py (your photos) and experiments/evaluate.py (a dataset split)
are thin CLIs over this module; the checkpoint format is petseg.models.checkpoints'.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from ..data import DataSpec, get_source, load_image, resize_image
from ..data.dataset import SegmentationDataset
from ..data.spec import default_class_names
from ..errors import CheckpointError, DatasetError
from ..models import VARIANTS, FrozenBackboneSegmenter, model_from_config
from ..models.checkpoints import load_best_checkpoint
from .engine import autocast

# predict_photo's masks have at most this many pixels, the photo's aspect ratio kept: its float logits and
# uint8 masks then take ~100 MB whatever the photo's size, and panels are drawn smaller still.
MAX_MASK_PIXELS = 4_000_000


def load_best(path: str | Path, device: torch.device) -> tuple[FrozenBackboneSegmenter, dict]:
    """(model in eval mode on `device`, checkpoint dict) of a best checkpoint; checkpoint["data"] has size/mean/std."""
    checkpoint = load_best_checkpoint(path)
    with warnings.catch_warnings():
        # The random-init and missing-head warnings were shown when the study ran. The saved head replaces
        # the whole head, so no head_weights file is read.
        warnings.simplefilter("ignore")
        model = model_from_config({**checkpoint["config"], "variant": checkpoint["variant"], "head_weights": {}},
                                  num_classes=len(checkpoint_classes(checkpoint)))
    mismatch = _head_mismatch(model.head.state_dict(), checkpoint["head"])
    if mismatch:
        raise CheckpointError(f"{path}: its head does not fit variant {checkpoint['variant']}: {mismatch}; restore "
                              "the file the study wrote or rebuild it with experiments/report.py")
    model.head.load_state_dict(checkpoint["head"])
    return model.to(device).eval(), checkpoint


def _head_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """How a saved head state differs from the one the model has (missing, unexpected, reshaped tensors), or ''."""
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    reshaped = [f"{key} is {list(saved[key].shape)}, needs {list(value.shape)}" for key, value in expected.items()
                if key in saved and saved[key].shape != value.shape]
    found = (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
    return "; ".join(f"{what}: {_first(names)}" for what, names in found if names)


def _first(names: list[str], shown: int = 3) -> str:
    """The first `shown` names, then how many more there are."""
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def study_checkpoints(study: str | Path, variants: list[str] | None = None) -> list[Path]:
    """A study's best checkpoints (`<study>/checkpoints/*.pt`), only `variants` if given, in the paper's order."""
    folder = Path(study) / "checkpoints"
    found = {path.stem: path for path in sorted(folder.glob("*.pt"))}
    if not found:
        raise CheckpointError(f"{folder}: no checkpoints (*.pt); pass a finished study's results/<name> or "
                              "rebuild it with experiments/report.py")
    missing = sorted(set(variants or []) - found.keys())
    if missing:
        raise CheckpointError(f"{folder}: no checkpoint for {', '.join(missing)}; it has {', '.join(found)}")
    wanted = variants or list(found)
    order = {key: index for index, key in enumerate(VARIANTS)}
    return [found[key] for key in sorted(wanted, key=lambda key: order.get(key, len(order)))]


def checkpoint_classes(checkpoint: dict) -> tuple[str, ...]:
    """The class names a best checkpoint predicts, index = class id (Pets' three for checkpoints saved before
    studies named their classes)."""
    data = checkpoint["data"]
    names = data.get("class_names")
    return tuple(names) if names else default_class_names(data.get("kind", "pets"), data.get("num_classes", 3))


def checkpoint_dataset(checkpoint: dict, root: str | Path, split: str) -> SegmentationDataset:
    """The checkpoint's `split` part of the dataset under `root`, as its saved spec's source reads it, resized and
    normalised as in training."""
    # Only the keys load_best_checkpoint checks are required, so a spec saved without the rest still works; the
    # training run's caches, generator and download do not apply here.
    data = DataSpec.from_json({"augment": "none", "seed": 0, **checkpoint["data"], "root": str(root),
                               "class_names": checkpoint_classes(checkpoint), "decoded_cache_dir": None,
                               "synthetic": None, "download": False, "verify_data": False})
    source = get_source(data.kind)
    samples = source.part_samples(data, "the checkpoint's split")[split]
    if not samples:
        raise DatasetError(f"{root}: the checkpoint's {split} split is empty; pick another split", root)
    return source.dataset(data, samples, None)


def load_photo(path: str | Path) -> Image.Image:
    """A user's photo as RGB (petseg.data.load_image), turned upright by its EXIF orientation as viewers show it."""
    # Dataset images keep their stored pixels (the trimaps align to them); a phone photo must be upright.
    with warnings.catch_warnings():
        # Pillow warns from 89 megapixels, which camera photos reach; predict_photo's memory does not grow with
        # them, and Pillow's DecompressionBombError (from 179 megapixels) still refuses larger ones.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return ImageOps.exif_transpose(load_image(path))


def normalise(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """An RGB photo resized to size x size (bilinear) and normalised as in training: float [3, size, size]."""
    pixels = torch.from_numpy(np.array(resize_image(image, size))).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


@torch.no_grad()
def warm_up(model: nn.Module, size: int, device: torch.device) -> None:
    """One untimed forward pass, so later timings exclude one-off setup (kernel selection, allocations)."""
    model.eval()
    with autocast(device):
        model(torch.zeros(1, 3, size, size, device=device))


def mask_size(height: int, width: int, max_pixels: int = MAX_MASK_PIXELS) -> tuple[int, int]:
    """(H, W) of a photo's mask: the photo's own size, or the largest one of its aspect ratio within max_pixels."""
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    rows = min(max(1, math.floor(height * scale)), max_pixels)
    # A photo one pixel wide (or high) after scaling keeps that pixel; the budget still bounds the other side.
    return rows, max(1, min(math.floor(width * scale), max_pixels // rows))


@torch.no_grad()
def predict_photo(model: nn.Module, image: Image.Image, size: int, mean, std, device: torch.device,
                  max_pixels: int = MAX_MASK_PIXELS) -> torch.Tensor:
    """Class ids [H, W] (uint8, CPU) of an RGB photo: backbone at size x size, head logits upsampled once to the
    photo's size, or to mask_size's smaller one for a photo over max_pixels (petseg.drawing resizes it to draw)."""
    model.eval()
    with autocast(device):
        logits = model(normalise(image, size, mean, std)[None].to(device),
                       size=mask_size(image.height, image.width, max_pixels))
    # uint8 holds any class id (at most 256 classes) in an eighth of argmax's int64.
    return logits.argmax(dim=1)[0].to(torch.uint8).cpu()
