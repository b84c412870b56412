"""The disk a study's trial checkpoints take on its storage path, from each variant's head size.

A running trial keeps one checkpoint: its head, the optimizer's momentum (one more head) and its best head so far;
an ended trial's is compacted to its two heads (tune.trial_checkpoints.CompactEnded). Logs, results and TensorBoard
files come on top (README, Disk).
"""
from __future__ import annotations

from ..models import parameter_counts
from ..node_cache import format_size
from .config import StudyConfig

FLOAT_BYTES = 4


def head_bytes(variant: str) -> int:
    """Bytes of one fp32 copy of `variant`'s trainable head."""
    return parameter_counts(variant)[0] * FLOAT_BYTES


def checkpoint_estimate(config: StudyConfig) -> tuple[int, int]:
    """(bytes once every trial has ended, bytes each trial running at once adds at most) of the study's trial
    checkpoints, its seed repeats included."""
    trials = config.search.num_samples + config.search.seeds
    ended = sum(2 * head_bytes(variant) * trials for variant in config.search.variants)
    return ended, max(head_bytes(variant) for variant in config.search.variants)


def describe_estimate(config: StudyConfig) -> str:
    """One line for --dry-run: the checkpoints' disk at the end and what running trials add."""
    ended, per_running = checkpoint_estimate(config)
    return (f"trial checkpoints on the storage path: {format_size(ended)} once every trial has ended (best and last "
            f"head of each), plus up to {format_size(per_running)} per trial running at once (its optimizer state)")
