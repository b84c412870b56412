"""Variant registry, model builders, pretrained weights and checkpoint formats."""
from ..errors import HeadWeightsError, WeightsUnavailableError
from . import variants  # noqa: F401  (registers the built-in variants)
from .build import build_model, build_seeded_model, count_parameters, model_from_config, parameter_counts
from .registry import VARIANTS, BackboneSpec, VariantSpec, default_variants, get_variant, list_variants, register
from .segmenter import FrozenBackboneSegmenter
from .sources import register_sources, resolve_variants
from .weights import LoadReport, find_head_weights, hub_checkpoint_path, weights_cache_dir

__all__ = [
    "VARIANTS", "BackboneSpec", "VariantSpec", "FrozenBackboneSegmenter", "HeadWeightsError", "LoadReport",
    "WeightsUnavailableError", "build_model", "build_seeded_model", "count_parameters", "default_variants",
    "find_head_weights", "get_variant", "hub_checkpoint_path", "list_variants", "model_from_config",
    "parameter_counts", "register", "register_sources", "resolve_variants", "weights_cache_dir",
]
