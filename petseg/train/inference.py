"""Inference with a study's best checkpoints: load one, predict photos of any size (drawing is
petseg.drawing's). experiments/predict.py (your photos) and experiments/evaluate.py (a dataset split)
are thin CLIs over this module; the checkpoint format is petseg.models.checkpoints'.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from ..data import DataSpec, PetSegmentation, find_samples, load_image, resize_image, split_samples
from ..errors import CheckpointError, DatasetError
from ..models import VARIANTS, FrozenBackboneSegmenter, model_from_config
from ..models.checkpoints import load_best_checkpoint
from .engine import autocast

def load_best(path: str | Path, device: torch.device) -> tuple[FrozenBackboneSegmenter, dict]:
    """(model in eval mode on `device`, checkpoint dict) of a best checkpoint; checkpoint["data"] has size/mean/std."""
    checkpoint = load_best_checkpoint(path)
    with warnings.catch_warnings():
        # The random-init / missing-head warnings were shown when the study ran, and the saved head
        # replaces the whole head, so the head_weights file is not needed here.
        warnings.simplefilter("ignore")
        try:
            model = model_from_config({**checkpoint["config"], "variant": checkpoint["variant"]}, checkpoint["head"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: its head does not fit variant {checkpoint['variant']} ({err}); "
                                  "rebuild the checkpoint with experiments/report.py") from err
    return model.to(device).eval(), checkpoint


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


def checkpoint_dataset(checkpoint: dict, root: str | Path, split: str) -> PetSegmentation:
    """The checkpoint's `split` part of the dataset under `root`, resized and normalised as in training."""
    data = DataSpec.from_json(checkpoint["data"])
    samples = split_samples(find_samples(root), data.split, source="the checkpoint's split")[split]
    if not samples:
        raise DatasetError(f"{root}: the checkpoint's {split} split is empty; pick another split", root)
    return PetSegmentation(samples, data.size, data.mean, data.std)


def load_photo(path: str | Path) -> Image.Image:
    """A user's photo as RGB (petseg.data.load_image), turned upright by its EXIF orientation as viewers show it."""
    # Dataset images keep their stored pixels (the trimaps align to them); a phone photo must be upright.
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


@torch.no_grad()
def predict_photo(model: nn.Module, image: Image.Image, size: int, mean, std, device: torch.device) -> torch.Tensor:
    """Class ids [H, W] (int64, CPU) of an RGB photo at its own size: backbone at size x size, head logits upsampled."""
    model.eval()
    with autocast(device):
        logits = model(normalise(image, size, mean, std)[None].to(device), size=(image.height, image.width))
    return logits.argmax(dim=1)[0].cpu()
