"""Train one epoch and evaluate a segmentation model on a loader; no Ray here."""
from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import confusion_matrix, scores
from .segdata import IGNORE  # void pixels (VOC outlines, ADE20K "other"); pets have none


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run cannot continue meaningfully."""


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_enabled(device: torch.device, enabled: bool = True) -> bool:
    """bf16 autocast applies: asked for, and on CUDA or a CPU with native bf16."""
    return enabled and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast (no loss scaling needed) where amp_enabled, else nothing."""
    if amp_enabled(device, enabled):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                    scheduler=None, amp: bool = True, ignore_index: int = IGNORE) -> dict:
    """One pass over `loader` with cross-entropy (pixels labelled `ignore_index` not scored); mean loss per image."""
    model.train()
    total_loss, images = 0.0, 0
    for inputs, target in loader:
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if not (target != ignore_index).any():
            continue  # nothing to learn from (an all-void ADE20K batch); its loss would be 0/0
        with autocast(device, amp):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"loss became {loss.item()} after {images} images of this epoch; "
                                     "lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(inputs)
        images += len(inputs)
    if images == 0:
        raise ValueError("the training loader yielded no batch (fewer images than one batch?)")
    return {"loss": total_loss / images}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int, amp: bool = True,
             ignore_index: int = IGNORE) -> dict:
    """Mean loss per scored pixel and the scores of one confusion matrix accumulated over the whole loader."""
    model.eval()
    confmat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    total_loss, pixels, images = 0.0, 0, 0
    for inputs, target in loader:
        inputs = inputs.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(inputs)
        # Summed and divided once at the end, so void pixels weigh nothing, whichever batch they fall in.
        total_loss += F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum").item()
        pixels += int((target != ignore_index).sum())
        images += len(inputs)
        confmat += confusion_matrix(logits.argmax(dim=1), target, num_classes, ignore_index)
    if images == 0:
        raise ValueError("the evaluation loader yielded no batch")
    if pixels == 0:
        raise ValueError(f"every pixel of the evaluation split is labelled {ignore_index} (ignored): nothing to score")
    return {"loss": total_loss / pixels, **scores(confmat.cpu()), "confusion_matrix": confmat.cpu()}
