"""Inference with a study's best checkpoints: load one, predict photos of any size, draw overlays.

experiments/predict.py (your photos) and experiments/evaluate.py (a dataset split) are thin CLIs
over this module. A best checkpoint is `results/<name>/checkpoints/<variant>.pt`, written by
petseg.analysis: the variant, its best head, the study config and the data spec (size, mean, std).
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from torch import nn

from .data import (CLASS_NAMES, DatasetError, PetSegmentation, find_samples, load_image, resize_image,
                   split_samples)
from .engine import autocast
from .models import VARIANTS, FrozenBackboneSegmenter
from .training import build_seeded_model
from .visual import PALETTE, colourize

CHECKPOINT_KEYS = ("variant", "lr", "epoch", "head", "config", "data")
# torch.load's failures on a file that is not a readable checkpoint.
_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)


class CheckpointError(ValueError):
    """A checkpoint is missing or is not a petseg best checkpoint; the message names the file."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a best checkpoint (weights_only) and check it has what inference needs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass results/<name>/checkpoints/<variant>.pt "
                              "of a finished study")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err}); rebuild it with "
                              "experiments/report.py") from err
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a petseg best checkpoint (missing {missing}); use a file from "
                              "results/<name>/checkpoints/ or rebuild it with experiments/report.py")
    if checkpoint["variant"] not in VARIANTS:
        raise CheckpointError(f"{path}: unknown variant {checkpoint['variant']!r}; this petseg knows "
                              f"{', '.join(VARIANTS)}")
    return checkpoint


def load_best(path: str | Path, device: torch.device) -> tuple[FrozenBackboneSegmenter, dict]:
    """(model in eval mode on `device`, checkpoint dict) of a best checkpoint; checkpoint["data"] has size/mean/std."""
    checkpoint = load_checkpoint(path)
    config = checkpoint["config"]
    with warnings.catch_warnings():
        # The random-init / missing-head warnings were shown when the study ran, and the saved head
        # replaces the whole head below, so the head_weights file is not needed here.
        warnings.simplefilter("ignore")
        model = build_seeded_model(checkpoint["variant"], config["pretrained"], config["seed"])
    try:
        model.head.load_state_dict(checkpoint["head"])
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
    data = checkpoint["data"]
    samples = split_samples(find_samples(root), data["split"], source="the checkpoint's split")[split]
    if not samples:
        raise DatasetError(f"{root}: the checkpoint's {split} split is empty; pick another split", root)
    return PetSegmentation(samples, data["size"], data["mean"], data["std"])


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


def logits_at(model: FrozenBackboneSegmenter, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float32 logits [N, C, H, W] of `images` at `size`: the head's output upsampled once, as the variant's
    reference upsamples it (align_corners per family), rather than resized again from the input size."""
    return model.decode(model.features(images), size).float()


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
        logits = logits_at(model, normalise(image, size, mean, std)[None].to(device), (image.height, image.width))
    return logits.argmax(dim=1)[0].cpu()


def overlay(image: Image.Image, mask: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """The photo blended with its mask's class colours (petseg.visual.PALETTE), `alpha` of colour."""
    colours = Image.fromarray(colourize(mask).permute(1, 2, 0).numpy())
    return Image.blend(image.convert("RGB"), colours, alpha)


def display_height(height: int, low: int = 256, high: int = 1024) -> int:
    """Height a panel is shown at: small photos enlarged so captions fit, huge ones shrunk to keep files small."""
    return min(max(height, low), high)


def _captioned(panel: Image.Image, caption: str, band: int) -> Image.Image:
    """The panel under a white band holding its caption."""
    out = Image.new("RGB", (panel.width, panel.height + band), "white")
    out.paste(panel, (0, band))
    font = ImageFont.load_default(size=band * 2 // 3)
    ImageDraw.Draw(out).text((band // 4, band // 6), caption, fill="black", font=font)
    return out


def _legend(width: int, band: int) -> Image.Image:
    """A white band with one coloured square and name per class."""
    out = Image.new("RGB", (width, band), "white")
    draw, font, step = ImageDraw.Draw(out), ImageFont.load_default(size=band * 2 // 3), band * 6
    for index, name in enumerate(CLASS_NAMES):
        left = band // 4 + index * step
        draw.rectangle((left, band // 6, left + band * 2 // 3, band * 5 // 6), fill=tuple(PALETTE[index].tolist()))
        draw.text((left + band, band // 6), name, fill="black", font=font)
    return out


def comparison_panel(image: Image.Image, masks: dict[str, torch.Tensor], alpha: float = 0.5) -> Image.Image:
    """The photo, then one captioned overlay per entry of `masks` (caption -> mask), side by side, with a legend."""
    height = display_height(image.height)
    width = max(1, round(image.width * height / image.height))
    band = max(16, height // 12)
    gap = band // 3  # white space between panels, so neighbouring overlays do not merge
    panels = [("photo", image.convert("RGB"))]
    panels += [(caption, overlay(image, mask, alpha)) for caption, mask in masks.items()]
    shown = [_captioned(panel.resize((width, height), Image.Resampling.BILINEAR), caption, band)
             for caption, panel in panels]
    out = Image.new("RGB", ((width + gap) * len(shown) - gap, height + 2 * band), "white")
    for index, panel in enumerate(shown):
        out.paste(panel, (index * (width + gap), 0))
    out.paste(_legend(out.width, band), (0, height + band))
    return out
