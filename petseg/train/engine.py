"""Train one epoch and evaluate a segmentation model: the device and AMP choices, the training step and every
evaluation loop (a whole split's scores, per-image confusion matrices). No Ray here."""
from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data import IGNORE, SegmentationDataset
from ..errors import NonFiniteLossError
from ..metrics import ConfusionMatrix, confusion_matrix
from ..models.segmenter import map_features


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
    """bf16 autocast applies: asked for, and on a GPU or CPU that computes bf16 natively (a pre-Ampere GPU
    such as a V100 or T4 would emulate it, slower than fp32)."""
    if not enabled:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


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
    for inputs, target in loader:  # inputs: images, or cached features (named ones for a multi-output backbone)
        inputs = map_features(lambda tensor: tensor.to(device, non_blocking=True), inputs)
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
        total_loss += loss.item() * len(target)
        images += len(target)
    if images == 0:
        raise ValueError("the training loader yielded no batch (fewer images than one batch?)")
    return {"loss": total_loss / images}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int, amp: bool = True,
             ignore_index: int = IGNORE) -> dict:
    """Mean loss per scored pixel and the scores of one confusion matrix accumulated over the whole loader."""
    model.eval()
    confmat = ConfusionMatrix(num_classes, ignore_index, device)
    total_loss, pixels, images = 0.0, 0, 0
    for inputs, target in loader:  # inputs: images, or cached features (named ones for a multi-output backbone)
        inputs = map_features(lambda tensor: tensor.to(device, non_blocking=True), inputs)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(inputs)
        # Summed and divided once at the end, so void pixels weigh nothing, whichever batch they fall in.
        total_loss += F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum").item()
        pixels += int((target != ignore_index).sum())
        images += len(target)
        confmat.update(logits.argmax(dim=1), target)
    if images == 0:
        raise ValueError("the evaluation loader yielded no batch")
    if pixels == 0:
        raise ValueError(f"every pixel of the evaluation split is labelled {ignore_index} (ignored): nothing to score")
    return {"loss": total_loss / pixels, **confmat.compute(), "confusion_matrix": confmat.matrix.cpu()}


@torch.no_grad()
def per_image_confusions(model: nn.Module, dataset: SegmentationDataset, device: torch.device, batch_size: int,
                         original_size: bool = False) -> np.ndarray:
    """int64 [N, C, C] confusion matrix of each dataset item, in order (rows = ground truth; C: the dataset's
    classes; pixels labelled IGNORE are not scored).

    By default at the dataset's size (masks resized nearest, as in training). With original_size,
    each image's logits are upsampled bilinearly to its original size and scored on its full mask.
    """
    num_classes = dataset.num_classes
    if original_size and dataset.augment is not None:
        raise ValueError(f"original_size needs an unaugmented dataset (augment={dataset.augment!r}): "
                         "augmented copies have no original mask")
    model.eval()
    matrices = []
    for images, masks in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = images.to(device, non_blocking=True)
        if original_size:
            samples = dataset.samples[len(matrices):len(matrices) + len(images)]
            matrices += [_full_size_confusion(model, image, dataset.load_pair(s)[1], num_classes, device)
                         for image, s in zip(images, samples)]
        else:
            with autocast(device):
                predictions = model(images).argmax(dim=1)
            matrices += [confusion_matrix(p, m.to(device), num_classes, IGNORE) for p, m in zip(predictions, masks)]
    return torch.stack(matrices).cpu().numpy() if matrices else np.zeros((0, num_classes, num_classes), np.int64)


def _full_size_confusion(model, image: torch.Tensor, mask: np.ndarray, num_classes: int, device) -> torch.Tensor:
    truth = torch.from_numpy(mask).to(device)
    with autocast(device):
        prediction = model(image[None], size=tuple(truth.shape)).argmax(dim=1)[0]
    return confusion_matrix(prediction, truth, num_classes, IGNORE)
