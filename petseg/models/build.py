"""build_model: any registry variant as its entry says, with its pretrained weights, frozen backbone and new
classifier; parameter counts; the model a saved trial config describes."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .registry import get_variant
from .segmenter import FrozenBackboneSegmenter
from .checkpoints import split_head_checkpoint
from .sources import load_extensions
from .weights import check_head_backbone, load_head, load_state_dict_file


class LayerOut(nn.Module):
    """Wraps torchvision's IntermediateLayerGetter so the backbone returns the 'out' tensor only."""

    # The ResNet variants' backbone: its module path and code are part of their feature-cache keys
    # (petseg.train.description), so moving or editing this class would re-key every cache built so far.

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.body.return_layers = {"layer4": "out"}  # the aux output feeds a classifier we drop

    def forward(self, x):
        """Feature maps of the last ResNet stage at output stride 8."""
        return self.body(x)["out"]


def build_model(key: str, num_classes: int = 3, pretrained: bool = True,
                head_weights: str | os.PathLike | None = None) -> FrozenBackboneSegmenter:
    """Build variant `key` with a frozen backbone (`.backbone`) and a trainable head (`.head`)."""
    spec = get_variant(key)
    if head_weights is not None and spec.head_dataset is None:
        raise ValueError(f"{key}: head_weights apply to the variants whose head is pretrained by petseg "
                         f"(VOC / ADE20K); its head comes from {spec.head_pretraining}")
    if not pretrained:
        randomised = ("the backbone is randomly initialised (the head is loaded from head_weights)"
                      if head_weights is not None else "backbone and head are randomly initialised")
        warnings.warn(f"{key}: pretrained=False, so {randomised}", stacklevel=2)
    files = {}  # one read of a file that holds both backbone and head (torchvision's COCO models)

    def read(url: str) -> dict[str, torch.Tensor]:
        if url not in files:
            files[url] = load_state_dict_file(url)
        return files[url]

    # Built first, loaded after: the random draws are the same with or without weights, and a head file is read
    # (and an unusable one named) before any download.
    backbone = spec.encoder.factory()
    head = spec.head(spec.encoder.channels, num_classes,
                     read(spec.head_weights) if pretrained and spec.head_weights else None)
    if head_weights is not None:
        file_backbone, tensors, others = split_head_checkpoint(load_state_dict_file(head_weights))
        report = load_head(head, tensors, str(head_weights))
    if pretrained and spec.encoder.weights:
        (spec.encoder.load or nn.Module.load_state_dict)(backbone, read(spec.encoder.weights))
    if head_weights is not None:
        report.not_head = len(file_backbone) + others
        ours = (f"{Path(spec.encoder.weights).name} ({spec.backbone_weights})"
                if pretrained and spec.encoder.weights else "random init")
        # Head files keep the public DenseASPP layout: their backbone is the DenseNet `features`.
        check_head_backbone(backbone.features, file_backbone, report, ours)
        print(report)
    elif pretrained and spec.head_dataset is not None:
        warnings.warn(
            f"{spec.key}: no head_weights given, so its head starts from random init rather than "
            f"{spec.head_pretraining}; pass head_weights=PATH_OR_URL of a {spec.head_pretraining} checkpoint",
            stacklevel=2,
        )
    model = FrozenBackboneSegmenter(backbone, head, align_corners=spec.align_corners)
    model.head_load = report if head_weights is not None else None
    return model


def build_seeded_model(variant: str, pretrained: bool, seed: int, head_weights=None,
                       num_classes: int = 3) -> FrozenBackboneSegmenter:
    """build_model under a fixed seed, so random-init parts are identical wherever it is rebuilt.

    The seed is drawn from (seed, the variant's backbone id): variants that share a backbone get the same
    random backbone, and different backbones differ (FCN's and DeepLabV3's ResNet50s as in the real study).
    """
    backbone = get_variant(variant).backbone_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{backbone}".encode()).digest()[:8], "little") >> 1)
        return build_model(variant, num_classes, pretrained=pretrained, head_weights=head_weights)


def model_from_config(config: dict, head: dict | None = None, num_classes: int = 3) -> FrozenBackboneSegmenter:
    """The model a saved trial config describes (variant, pretrained, seed, head_weights, and where user variants
    come from), built as the trial built it. With `head` (a saved head state), that replaces the head and no head
    file is read."""
    load_extensions(config)
    variant = config["variant"]
    head_file = None if head is not None else config.get("head_weights", {}).get(variant)
    model = build_seeded_model(variant, config["pretrained"], config["seed"], head_file, num_classes)
    if head is not None:
        model.head.load_state_dict(head)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of `model`."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def parameter_counts(key: str, num_classes: int = 3) -> tuple[int, int]:
    """(trainable, total) parameters of variant `key` for `num_classes`, counted on the meta device (no weights,
    no memory)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return count_parameters(build_model(key, num_classes, pretrained=False))
