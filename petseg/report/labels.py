"""What a study's variants really were, for every table, figure and script: labels never claim what did not happen.

Every label is computed from a variant's Provenance (pretrained backbone or not, which head file was
loaded, whether that file's backbone was checked), which a study config and a best checkpoint's saved
config both hold. A VOC / ADE20K variant that ran without its head file has a random-init head; with
`pretrained: false` the backbone is random too, and a head file, if any, was loaded onto it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models import VARIANTS

RANDOM = "random init"
UNCHECKED = "backbone unchecked"


@dataclass(frozen=True)
class Provenance:
    """Where a variant's weights came from in one study or checkpoint."""

    variant: str
    pretrained: bool  # the backbone (and FCN / DeepLabV3's COCO head) had its published weights
    head_file: str | None  # the head file loaded into a VOC / ADE20K head, or None
    backbone_checked: bool  # that file carried its backbone and it matched this model's

    @property
    def head_random(self) -> bool:
        """Whether the head started from random init."""
        if VARIANTS[self.variant].head_dataset is not None:
            return self.head_file is None
        return not self.pretrained


def _provenance(variant: str, pretrained: bool, head_weights, checked: dict | None) -> Provenance:
    heads = head_weights if isinstance(head_weights, dict) else {}
    head_file = str(heads[variant]) if variant in heads and VARIANTS[variant].head_dataset is not None else None
    return Provenance(variant, bool(pretrained), head_file, bool((checked or {}).get(variant, False)))


def study_provenance(config, variant: str) -> Provenance:
    """`variant`'s provenance in a study (a StudyConfig with head_weights resolved and head files checked)."""
    search = config.search
    return _provenance(variant, search.pretrained, search.head_weights, search.head_backbone_checked)


def checkpoint_provenance(checkpoint: dict) -> Provenance:
    """The provenance a best checkpoint's saved trial config records (a file without the backbone-check record
    reads as unchecked)."""
    config = checkpoint["config"]
    return _provenance(checkpoint["variant"], config["pretrained"], config.get("head_weights"),
                       config.get("head_backbone_checked"))


def head_label(p: Provenance) -> str:
    """Where the head's starting weights came from, e.g. "Pascal VOC", "Pascal VOC (backbone unchecked)",
    "random init", or a file's head on a random-init backbone."""
    if p.head_random:
        return RANDOM
    label = VARIANTS[p.variant].head_pretraining
    if p.head_file is not None and not p.pretrained:
        label = f"{label}, loaded from {Path(p.head_file).name} onto a random-init backbone"
    return label if p.head_file is None or p.backbone_checked else f"{label} ({UNCHECKED})"


def backbone_label(p: Provenance) -> str:
    """The frozen backbone and where its weights came from ("... (random init)" without pretrained weights)."""
    spec = VARIANTS[p.variant]
    return spec.backbone if p.pretrained else f"{spec.backbone_name} ({RANDOM})"


def model_name(p: Provenance) -> str:
    """The paper's name, marked with what was not as in the paper: "FCN (random weights)" (backbone and head),
    "DenseASPP1 (random-init head)", "DenseASPP1 (random-init backbone)", "... (head's backbone unchecked)"."""
    notes = []
    if not p.pretrained:
        notes.append("random weights" if p.head_random else "random-init backbone")
    elif p.head_random:
        notes.append("random-init head")
    if p.head_file is not None and not p.backbone_checked:
        notes.append(f"head's {UNCHECKED}")
    name = VARIANTS[p.variant].paper_name
    return f"{name} ({'; '.join(notes)})" if notes else name
