"""The six study variants: registry keys, paper names and what each is built from."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    """What a variant is: its paper name, backbone, head and where the head's weights come from."""

    key: str
    paper_name: str
    family: str  # "torchvision" (FCN / DeepLabV3) or "denseaspp"; decides the optimiser recipe
    arch: str  # torchvision builder or DenseNet depth the backbone comes from
    backbone: str
    backbone_id: str  # variants with the same id share identical frozen backbone weights
    head_pretraining: str
    head_dataset: str | None = None  # "voc" / "ade20k": the head checkpoint this variant expects
    rates: tuple[int, ...] = ()


VARIANTS: dict[str, VariantSpec] = {
    spec.key: spec
    for spec in (
        VariantSpec(
            "fcn_resnet50", "FCN", "torchvision", "fcn_resnet50",
            "ResNet50 (torchvision, COCO)", "resnet50_fcn_coco", "COCO",
        ),
        VariantSpec(
            "deeplabv3_resnet50", "DeepLabV3", "torchvision", "deeplabv3_resnet50",
            "ResNet50 (torchvision, COCO)", "resnet50_deeplabv3_coco", "COCO",
        ),
        VariantSpec(
            "denseaspp_voc", "DenseASPP1", "denseaspp", "densenet121",
            "dilated DenseNet121 (ImageNet)", "densenet121_imagenet", "Pascal VOC",
            head_dataset="voc", rates=(3, 6, 12, 18, 24),
        ),
        VariantSpec(
            "denseaspp_ade20k", "DenseASPP2", "denseaspp", "densenet121",
            "dilated DenseNet121 (ImageNet)", "densenet121_imagenet", "ADE20K",
            head_dataset="ade20k", rates=(3, 6, 12, 18, 24),
        ),
        VariantSpec(
            "cutdenseaspp_voc", "CutDenseASPP1", "denseaspp", "densenet161",
            "dilated DenseNet161 (ImageNet)", "densenet161_imagenet", "Pascal VOC",
            head_dataset="voc", rates=(3, 6, 12),
        ),
        VariantSpec(
            "cutdenseaspp_ade20k", "CutDenseASPP2", "denseaspp", "densenet161",
            "dilated DenseNet161 (ImageNet)", "densenet161_imagenet", "ADE20K",
            head_dataset="ade20k", rates=(3, 6, 12),
        ),
    )
}


def get_variant(key: str) -> VariantSpec:
    """Return the spec of a registry key; an unknown key raises KeyError listing the valid ones."""
    try:
        return VARIANTS[key]
    except KeyError:
        raise KeyError(
            f"unknown variant {key!r}; valid variants: {', '.join(VARIANTS)}"
        ) from None


def list_variants(filter: str = "") -> list[str]:
    """Registry keys containing `filter` (all keys when empty), in the paper's order."""
    return [key for key in VARIANTS if filter in key]
