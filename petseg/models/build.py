"""build_model: any registry variant with its pretrained weights, frozen backbone and new classifier."""
from __future__ import annotations

import hashlib
import os
import warnings

import torch
import torchvision
from torch import nn
from torchvision.models import DenseNet121_Weights, DenseNet161_Weights
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, FCN_ResNet50_Weights

from .denseaspp import DenseASPPHead, DilatedDenseNet
from .registry import VariantSpec, get_variant
from .segmenter import FrozenBackboneSegmenter
from .checkpoints import split_head_checkpoint
from .weights import check_head_backbone, load_head, load_state_dict_file, rename_legacy_densenet_keys

WEIGHTS = {
    "fcn_resnet50": FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    "deeplabv3_resnet50": DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    "densenet121": DenseNet121_Weights.IMAGENET1K_V1,
    "densenet161": DenseNet161_Weights.IMAGENET1K_V1,
}


class LayerOut(nn.Module):
    """Wraps torchvision's IntermediateLayerGetter so the backbone returns the 'out' tensor only."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.body.return_layers = {"layer4": "out"}  # the aux output feeds a classifier we drop

    def forward(self, x):
        """Feature maps of the last ResNet stage at output stride 8."""
        return self.body(x)["out"]


def _torchvision_model(spec: VariantSpec, num_classes: int, pretrained: bool) -> FrozenBackboneSegmenter:
    builder = getattr(torchvision.models.segmentation, spec.arch)
    if pretrained:
        model = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        model.load_state_dict(load_state_dict_file(WEIGHTS[spec.arch].url))
        last = model.classifier[-1]
        model.classifier[-1] = nn.Conv2d(last.in_channels, num_classes, kernel_size=1)
    else:
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    return FrozenBackboneSegmenter(LayerOut(model.backbone), model.classifier)


def _denseaspp_model(spec: VariantSpec, num_classes: int, pretrained: bool, head_weights) -> FrozenBackboneSegmenter:
    backbone = DilatedDenseNet(int(spec.arch.removeprefix("densenet")))
    head = DenseASPPHead(backbone.out_channels, num_classes, spec.rates)
    if head_weights is not None:  # read first: an unusable head file is named even before any download
        file_backbone, tensors, others = split_head_checkpoint(load_state_dict_file(head_weights))
        report = load_head(head, tensors, str(head_weights))
    if pretrained:
        state = rename_legacy_densenet_keys(load_state_dict_file(WEIGHTS[spec.arch].url))
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        backbone.features.load_state_dict(features)
    if head_weights is not None:
        report.not_head = len(file_backbone) + others
        ours = f"{WEIGHTS[spec.arch].url.rsplit('/', 1)[-1]} (ImageNet)" if pretrained else "random init"
        check_head_backbone(backbone.features, file_backbone, report, ours)
        print(report)
    elif pretrained:
        warnings.warn(
            f"{spec.key}: no head_weights given, so its head starts from random init rather than "
            f"{spec.head_pretraining}; pass head_weights=PATH_OR_URL of a {spec.head_pretraining} checkpoint",
            stacklevel=3,
        )
    model = FrozenBackboneSegmenter(backbone, head, align_corners=True)
    model.head_load = report if head_weights is not None else None
    return model


def build_model(key: str, num_classes: int = 3, pretrained: bool = True,
                head_weights: str | os.PathLike | None = None) -> FrozenBackboneSegmenter:
    """Build variant `key` with a frozen backbone (`.backbone`) and a trainable head (`.head`)."""
    spec = get_variant(key)
    if head_weights is not None and spec.family != "denseaspp":
        raise ValueError(f"{key}: head_weights apply to the DenseASPP variants only; its head comes from COCO")
    if not pretrained:
        randomised = ("the backbone is randomly initialised (the head is loaded from head_weights)"
                      if head_weights is not None else "backbone and head are randomly initialised")
        warnings.warn(f"{key}: pretrained=False, so {randomised}", stacklevel=2)
    if spec.family == "torchvision":
        return _torchvision_model(spec, num_classes, pretrained)
    return _denseaspp_model(spec, num_classes, pretrained, head_weights)


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
    """The model a saved trial config describes (variant, pretrained, seed, head_weights), built as the trial
    built it. With `head` (a saved head state), that replaces the head and no head file is read."""
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
