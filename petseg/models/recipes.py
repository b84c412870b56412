"""The optimiser recipes a registry entry names: the optimiser its head trains with, poly decay on top."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _adam(params: list[nn.Parameter], lr: float, weight_decay: float = 1e-5) -> torch.optim.Optimizer:
    """DenseASPP heads: Adam, weight decay 1e-5 (the DenseASPP paper) unless a study searches it."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _sgd(params: list[nn.Parameter], lr: float, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """torchvision heads: SGD, momentum 0.9, weight decay 1e-4 (torchvision's segmentation references) unless a
    study searches it."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


# name -> (trainable parameters, lr, any other searched value by keyword) -> optimiser; each name has its own
# lr_range (and weight_decay_range, when searched) in a study config.
RECIPES: dict[str, Callable[..., torch.optim.Optimizer]] = {"denseaspp": _adam, "torchvision": _sgd}
