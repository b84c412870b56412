"""Variant registry, model builders, pretrained weights and checkpoint formats."""
from ..errors import HeadWeightsError, WeightsUnavailableError
from .build import WEIGHTS, build_model, build_seeded_model, count_parameters, model_from_config, parameter_counts
from .registry import VARIANTS, VariantSpec, get_variant, list_variants
from .segmenter import FrozenBackboneSegmenter
from .weights import LoadReport, find_head_weights, hub_checkpoint_path, weights_cache_dir

__all__ = [
    "VARIANTS", "VariantSpec", "WEIGHTS", "FrozenBackboneSegmenter", "HeadWeightsError", "LoadReport",
    "WeightsUnavailableError", "build_model", "build_seeded_model", "count_parameters", "find_head_weights",
    "get_variant", "hub_checkpoint_path", "list_variants", "model_from_config", "parameter_counts",
    "weights_cache_dir",
]
