"""Colour class maps and build image | ground truth | prediction strips."""
from __future__ import annotations

import torch

# pet, background, border: distinct under common colour-vision deficiencies.
PALETTE = torch.tensor([[230, 97, 1], [40, 40, 40], [253, 219, 96]], dtype=torch.uint8)


def colourize(mask: torch.Tensor, palette: torch.Tensor = PALETTE) -> torch.Tensor:
    """[H, W] class ids -> [3, H, W] uint8 colours (`palette`: [classes, 3] uint8, one row per id)."""
    return palette.to(mask.device)[mask.long()].permute(2, 0, 1)


def denormalize(image: torch.Tensor, mean, std) -> torch.Tensor:
    """A normalised [3, H, W] float image back to uint8 for display."""
    mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def strip(image: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor, mean, std,
          palette: torch.Tensor = PALETTE) -> torch.Tensor:
    """One [3, H, 3W] uint8 panel: the image, its ground truth and the prediction, side by side."""
    return torch.cat([denormalize(image, mean, std), colourize(target, palette), colourize(prediction, palette)],
                     dim=2)
