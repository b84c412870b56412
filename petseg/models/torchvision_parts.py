"""torchvision's segmentation models as registry parts: frozen ResNet / MobileNetV3 bodies and COCO-trained heads.

Each part is built exactly as torchvision's own builder builds it (same modules, same order of random draws),
so a variant equals torchvision's model given the same weights.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead

from .build import LayerOut

COCO_CLASSES = 21  # torchvision's COCO_WITH_VOC_LABELS heads predict the 20 VOC classes and background


class LevelOutputs(nn.Module):
    """torchvision's IntermediateLayerGetter returning the levels a head reads: one tensor, or a dict of several."""

    def __init__(self, body: IntermediateLayerGetter):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The named levels' feature maps (the tensor itself when there is one level)."""
        levels = self.body(x)
        return next(iter(levels.values())) if len(levels) == 1 else dict(levels)


def resnet_body(depth: int) -> nn.Module:
    """ResNet`depth` at output stride 8 (the last two stages dilate), returning layer4, as torchvision's FCN and
    DeepLabV3 build it."""
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, replace_stride_with_dilation=[False, True, True])
    return LayerOut(IntermediateLayerGetter(resnet, return_layers={"layer4": "out"}))


def mobilenet_body(levels: Mapping[str, int]) -> nn.Module:
    """Dilated MobileNetV3-Large returning `levels` (name -> stage, counted from the end as torchvision does:
    -1 is C5 at output stride 16, -4 is C2 at 8)."""
    features = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).features
    # torchvision's stages: the first block, each block that lowers the resolution (_is_cn), the last block.
    stages = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    return LevelOutputs(IntermediateLayerGetter(features, {str(stages[stage]): name for name, stage in levels.items()}))


def load_body(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the `backbone.*` tensors of a torchvision segmentation file into the body (all of them, strictly)."""
    backbone.body.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})


def fcn_head(channels: Mapping[str, int], num_classes: int) -> nn.Module:
    """torchvision's FCN head on the "out" level."""
    return FCNHead(channels["out"], num_classes)


def deeplab_head(channels: Mapping[str, int], num_classes: int) -> nn.Module:
    """torchvision's DeepLabV3 head (ASPP) on the "out" level."""
    return DeepLabHead(channels["out"], num_classes)


def lraspp_head(channels: Mapping[str, int], num_classes: int) -> nn.Module:
    """torchvision's LR-ASPP head, reading the "low" and "high" levels."""
    return LRASPPHead(channels["low"], channels["high"], num_classes, inter_channels=128)


def coco_head(build: Callable[[Mapping[str, int], int], nn.Module], classifiers: tuple[str, ...],
              aux_channels: int | None = None):
    """A head factory for a registry entry: `build` with random init, or from a COCO file's tensors.

    From the file: the head is built as the file holds it (21 classes, and the auxiliary FCN head torchvision
    trained beside it on `aux_channels`, dropped after loading), loaded strictly, and its `classifiers` (the
    last 1x1 convs, by name) are replaced by new ones for `num_classes`.
    """
    def head(channels: Mapping[str, int], num_classes: int, state: dict[str, torch.Tensor] | None) -> nn.Module:
        if state is None:
            return build(channels, num_classes)
        coco = nn.Module()
        if aux_channels is not None:  # built before the main head, as torchvision does: the same random draws
            coco.aux_classifier = FCNHead(aux_channels, COCO_CLASSES)
        coco.classifier = build(channels, COCO_CLASSES)
        coco.load_state_dict({k: v for k, v in state.items() if not k.startswith("backbone.")})
        for name in classifiers:
            last = getattr(coco.classifier, name)
            setattr(coco.classifier, name, nn.Conv2d(last.in_channels, num_classes, kernel_size=1))
        return coco.classifier

    return head
