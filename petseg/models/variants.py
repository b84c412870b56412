"""The registered variants: the paper's six (the default study) and opt-in torchvision variants.

Adding a variant is one entry here (or, outside petseg, one function returning a VariantSpec: see README).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, DenseNet161_Weights
from torchvision.models.segmentation import (DeepLabV3_MobileNet_V3_Large_Weights, DeepLabV3_ResNet50_Weights,
                                             DeepLabV3_ResNet101_Weights, FCN_ResNet50_Weights,
                                             FCN_ResNet101_Weights, LRASPP_MobileNet_V3_Large_Weights)

from .denseaspp import DenseASPPHead, DilatedDenseNet
from .registry import BackboneSpec, VariantSpec, register
from .torchvision_parts import (coco_head, deeplab_head, fcn_head, load_body, lraspp_head, mobilenet_body,
                                resnet_body)
from .weights import rename_legacy_densenet_keys


def load_densenet(backbone: DilatedDenseNet, state: dict[str, torch.Tensor]) -> None:
    """Load a torchvision DenseNet file's `features.*` tensors (old-style names renamed) into the backbone."""
    state = rename_legacy_densenet_keys(state)
    backbone.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                       if k.startswith("features.")})


def densenet(depth: int, weights: str) -> BackboneSpec:
    """A dilated DenseNet`depth` (output stride 8) with ImageNet weights at `weights`."""
    channels = {121: 1024, 161: 2208}[depth]
    return BackboneSpec(partial(DilatedDenseNet, depth), {"out": channels}, {"out": 8}, weights, load_densenet)


def denseaspp_head(rates: tuple[int, ...]):
    """A head factory of DenseASPP with `rates` (its pretrained head comes from a head file, not a URL)."""
    def head(channels: Mapping[str, int], num_classes: int, state: dict | None) -> nn.Module:
        return DenseASPPHead(channels["out"], num_classes, rates)

    return head


def resnet(depth: int, weights: str) -> BackboneSpec:
    """torchvision's dilated ResNet`depth` body (output stride 8) from the segmentation file at `weights`."""
    return BackboneSpec(partial(resnet_body, depth), {"out": 2048}, {"out": 8}, weights, load_body)


FCN_HEAD = coco_head(fcn_head, ("4",), aux_channels=1024)
DEEPLAB_HEAD = coco_head(deeplab_head, ("4",), aux_channels=1024)
ASPP = (3, 6, 12, 18, 24)
CUT_ASPP = (3, 6, 12)
DENSENET121 = DenseNet121_Weights.IMAGENET1K_V1.url
DENSENET161 = DenseNet161_Weights.IMAGENET1K_V1.url
FCN50 = FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url
DEEPLAB50 = DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url
FCN101 = FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url
DEEPLAB101 = DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url
DEEPLAB_MOBILE = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.url
LRASPP_MOBILE = LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.url

PAPER = [
    VariantSpec("fcn_resnet50", "FCN", "ResNet50", "torchvision, COCO", "resnet50_fcn_coco", "COCO",
                resnet(50, FCN50), FCN_HEAD, "torchvision", head_weights=FCN50, default=True),
    VariantSpec("deeplabv3_resnet50", "DeepLabV3", "ResNet50", "torchvision, COCO", "resnet50_deeplabv3_coco", "COCO",
                resnet(50, DEEPLAB50), DEEPLAB_HEAD, "torchvision", head_weights=DEEPLAB50, default=True),
    VariantSpec("denseaspp_voc", "DenseASPP1", "dilated DenseNet121", "ImageNet", "densenet121_imagenet",
                "Pascal VOC", densenet(121, DENSENET121), denseaspp_head(ASPP), "denseaspp", head_dataset="voc",
                align_corners=True, default=True),
    VariantSpec("denseaspp_ade20k", "DenseASPP2", "dilated DenseNet121", "ImageNet", "densenet121_imagenet",
                "ADE20K", densenet(121, DENSENET121), denseaspp_head(ASPP), "denseaspp", head_dataset="ade20k",
                align_corners=True, default=True),
    VariantSpec("cutdenseaspp_voc", "CutDenseASPP1", "dilated DenseNet161", "ImageNet", "densenet161_imagenet",
                "Pascal VOC", densenet(161, DENSENET161), denseaspp_head(CUT_ASPP), "denseaspp", head_dataset="voc",
                align_corners=True, default=True),
    VariantSpec("cutdenseaspp_ade20k", "CutDenseASPP2", "dilated DenseNet161", "ImageNet", "densenet161_imagenet",
                "ADE20K", densenet(161, DENSENET161), denseaspp_head(CUT_ASPP), "denseaspp",
                head_dataset="ade20k", align_corners=True, default=True),
]

# Opt-in (not in the default study): torchvision's other COCO-trained models, their heads trained as FCN's are.
OPT_IN = [
    VariantSpec("lraspp_mobilenet_v3_large", "LR-ASPP", "MobileNetV3-Large", "torchvision, COCO",
                "mobilenet_v3_large_lraspp_coco", "COCO",
                BackboneSpec(partial(mobilenet_body, {"low": -4, "high": -1}), {"low": 40, "high": 960},
                             {"low": 8, "high": 16}, LRASPP_MOBILE, load_body),
                coco_head(lraspp_head, ("low_classifier", "high_classifier")), "torchvision",
                head_weights=LRASPP_MOBILE),
    VariantSpec("deeplabv3_mobilenet_v3_large", "DeepLabV3-MobileNet", "MobileNetV3-Large", "torchvision, COCO",
                "mobilenet_v3_large_deeplabv3_coco", "COCO",
                BackboneSpec(partial(mobilenet_body, {"out": -1}), {"out": 960}, {"out": 16}, DEEPLAB_MOBILE,
                             load_body),
                coco_head(deeplab_head, ("4",), aux_channels=40), "torchvision", head_weights=DEEPLAB_MOBILE),
    VariantSpec("fcn_resnet101", "FCN-101", "ResNet101", "torchvision, COCO", "resnet101_fcn_coco", "COCO",
                resnet(101, FCN101), FCN_HEAD, "torchvision", head_weights=FCN101),
    VariantSpec("deeplabv3_resnet101", "DeepLabV3-101", "ResNet101", "torchvision, COCO", "resnet101_deeplabv3_coco",
                "COCO", resnet(101, DEEPLAB101), DEEPLAB_HEAD, "torchvision", head_weights=DEEPLAB101),
]

for _spec in PAPER + OPT_IN:
    register(_spec)
