"""The variant registry: each entry says in one place what a variant is built from, how its head trains and how
tables name it. The paper's six and the opt-in torchvision variants are registered by petseg.models.variants;
a user's own variant is one function returning a VariantSpec (petseg.models.sources)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .recipes import RECIPES


@dataclass(frozen=True)
class BackboneSpec:
    """A frozen backbone: its architecture, the named outputs it returns, and its pretrained weights.

    One output: the module returns that tensor. Several (e.g. LR-ASPP's "low" and "high"): a dict by name.
    """

    factory: Callable[[], nn.Module]  # the architecture with random init (weights are loaded after)
    channels: Mapping[str, int]  # output name -> channels
    strides: Mapping[str, int]  # output name -> output stride (input size / feature-map size)
    weights: str | None = None  # URL of the pretrained file
    # Copies the pretrained file's tensors into the module (None: the module's strict load_state_dict).
    load: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None


@dataclass(frozen=True)
class VariantSpec:
    """A registry entry: backbone, head, weights, optimiser recipe, labels, cache sharing and study membership."""

    key: str
    paper_name: str
    backbone_name: str  # "ResNet50": the architecture alone, as a random-init label shows it
    backbone_weights: str  # "torchvision, COCO": where the pretrained backbone comes from
    backbone_id: str  # variants with the same id share identical frozen backbone weights (and feature caches)
    head_pretraining: str
    encoder: BackboneSpec
    # (backbone channels by output, classes, pretrained head tensors or None) -> the head. With tensors it builds
    # the head as the file has it, loads them and gives it a new classifier for the classes.
    head: Callable[[Mapping[str, int], int, dict[str, torch.Tensor] | None], nn.Module]
    recipe: str  # optimiser recipe and lr_range key: "denseaspp" (Adam) or "torchvision" (SGD)
    head_weights: str | None = None  # URL of the pretrained head's file (may be the backbone's)
    head_dataset: str | None = None  # "voc" / "ade20k": the head checkpoint file this variant expects
    align_corners: bool = False  # how its reference upsamples the logits
    default: bool = False  # in the default study (the paper's six)
    source: str | None = field(default=None, compare=False)  # "module:function" of a user's variant

    @property
    def backbone(self) -> str:
        """The backbone as tables print it, e.g. "ResNet50 (torchvision, COCO)"."""
        return f"{self.backbone_name} ({self.backbone_weights})"

    @property
    def weights(self) -> tuple[str, ...]:
        """Every pretrained file the variant reads (backbone, then head if another file)."""
        return tuple(dict.fromkeys(url for url in (self.encoder.weights, self.head_weights) if url))


VARIANTS: dict[str, VariantSpec] = {}


def register(spec: VariantSpec) -> VariantSpec:
    """Add `spec` to the registry (the same spec, or its source's again, replaces it); a key another variant holds
    or an unknown recipe raises ValueError."""
    if not isinstance(spec, VariantSpec):
        raise ValueError(f"a variant must be a petseg.models.VariantSpec, got {type(spec).__name__}")
    if spec.recipe not in RECIPES:
        raise ValueError(f"{spec.key}: unknown optimiser recipe {spec.recipe!r}; use one of {', '.join(RECIPES)}")
    known = VARIANTS.get(spec.key)
    # A user's function builds a new spec (new closures) each time its source is read: the same source may re-register.
    if known is not None and known != spec and (spec.source is None or known.source != spec.source):
        raise ValueError(f"variant {spec.key!r} is already registered (from {known.source or 'petseg'}); "
                         "give yours another key")
    VARIANTS[spec.key] = spec
    return spec


def get_variant(key: str) -> VariantSpec:
    """Return the spec of a registry key; an unknown key raises KeyError listing the valid ones."""
    try:
        return VARIANTS[key]
    except KeyError:
        raise KeyError(
            f"unknown variant {key!r}; valid variants: {', '.join(VARIANTS)}"
        ) from None


def list_variants(filter: str = "") -> list[str]:
    """Registry keys containing `filter` (all keys when empty), in registration order (the paper's six first)."""
    return [key for key in VARIANTS if filter in key]


def default_variants() -> list[str]:
    """The default study's variants: the paper's six, in the paper's order."""
    return [key for key, spec in VARIANTS.items() if spec.default]
