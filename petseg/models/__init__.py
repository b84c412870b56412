"""Variant registry and model builders (DESIGN.md, Variants)."""
from .build import WEIGHTS, build_model, count_parameters, parameter_counts
from .registry import VARIANTS, VariantSpec, get_variant, list_variants
from .segmenter import FrozenBackboneSegmenter
from .weights import (HeadWeightsError, LoadReport, WeightsUnavailableError, find_head_weights, hub_checkpoint_path,
                      save_hashed_checkpoint, weights_cache_dir)

__all__ = [
    "VARIANTS", "VariantSpec", "WEIGHTS", "FrozenBackboneSegmenter", "HeadWeightsError", "LoadReport",
    "WeightsUnavailableError", "build_model", "count_parameters", "find_head_weights", "get_variant",
    "hub_checkpoint_path", "list_variants", "parameter_counts", "save_hashed_checkpoint", "weights_cache_dir",
]
