"""The optimiser recipes a registry entry names: the optimiser its head trains with, poly decay on top."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """DenseASPP heads: Adam, weight decay 1e-5 (the DenseASPP paper)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=1e-5)


def _sgd(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """torchvision heads: SGD, momentum 0.9, weight decay 1e-4 (torchvision's segmentation references)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)


# name -> (trainable parameters, lr) -> optimiser; each name has its own lr_range in a study config.
RECIPES: dict[str, Callable[[list[nn.Parameter], float], torch.optim.Optimizer]] = {
    "denseaspp": _adam, "torchvision": _sgd}
