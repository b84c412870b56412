"""What a study's variants really were, for every table and figure: labels never claim what did not happen.

A VOC / ADE20K variant that ran without its head file has a randomly initialised head, and a study
run with `pretrained: false` has random backbones and heads: their labels say "random init", not
"Pascal VOC" or "ImageNet".
"""
from __future__ import annotations

from ..models import VARIANTS

RANDOM = "random init"


def head_is_random(config, variant: str) -> bool:
    """Whether `variant`'s head started from random init in this study (config.search.head_weights resolved)."""
    if not config.search.pretrained:
        return True
    heads = config.search.head_weights if isinstance(config.search.head_weights, dict) else {}
    return VARIANTS[variant].head_dataset is not None and variant not in heads


def head_label(config, variant: str) -> str:
    """Where the head's starting weights came from: the paper's dataset name, or "random init"."""
    return RANDOM if head_is_random(config, variant) else VARIANTS[variant].head_pretraining


def backbone_label(config, variant: str) -> str:
    """The frozen backbone and where its weights came from ("... (random init)" without pretrained weights)."""
    backbone = VARIANTS[variant].backbone
    return backbone if config.search.pretrained else f"{backbone.split(' (')[0]} ({RANDOM})"


def model_name(config, variant: str) -> str:
    """The paper's name, marked when its head was not pretrained as the paper's was, e.g. "DenseASPP1 (random-init head)"."""
    name = VARIANTS[variant].paper_name
    return f"{name} (random-init head)" if head_is_random(config, variant) else name
