"""Variant registry and model builders (DESIGN.md, Variants)."""
from .build import WEIGHTS, build_model, count_parameters, parameter_counts
from .registry import VARIANTS, VariantSpec, get_variant, list_variants
from .segmenter import FrozenBackboneSegmenter
from .weights import LoadReport, WeightsUnavailableError, hub_checkpoint_path

__all__ = [
    "VARIANTS", "VariantSpec", "WEIGHTS", "FrozenBackboneSegmenter", "LoadReport",
    "WeightsUnavailableError", "build_model", "count_parameters", "get_variant", "hub_checkpoint_path",
    "list_variants", "parameter_counts",
]
