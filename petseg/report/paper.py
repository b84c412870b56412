"""The seed study's published figures, read beside petseg's only where a row was run as the paper's was.

A row is comparable when the study used the real Oxford-IIIT Pet with the paper's split sizes, the
paper's image size and pretrained backbones, and (VOC / ADE20K variants) a loaded head file. The
paper's prediction times are shown beside ours but never subtracted: its hardware and timing
protocol are unknown.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd

from ..models import VARIANTS
from .labels import Provenance

RESULTS_FILE = Path(__file__).with_name("paper_results.json")
# comparison column -> the published figure it is read against (and differenced with)
DIFFERENCED = {"test_pixel_accuracy": "pixel_accuracy", "test_weighted_iou": "weighted_iou",
               "trainable_params": "trainable_params"}
SHOWN_ONLY = ("prediction_time_s",)  # beside ours, never differenced


@functools.cache
def _published() -> dict:
    return json.loads(RESULTS_FILE.read_text())


def source() -> str:
    """Where the published figures come from, as the data file names it."""
    return _published()["source"]


def study_differences(config, data) -> list[str]:
    """What in the whole study differs from the paper's setup (data, image size, backbones), one phrase each;
    empty when none does. `data` is the study's DataSpec."""
    setup = _published()["setup"]
    parts = {part: len(data.split[part]) for part in ("train", "val", "test")} if data.split else {}
    images = sum(parts.values())
    reasons = []
    if data.kind != "pets":
        reasons.append(f"the dataset is a {data.kind} dataset ({images:,} images, {data.num_classes} classes), "
                       "not Oxford-IIIT Pet")
    elif data.synthetic or config.search.synthetic_images:
        reasons.append(f"the dataset is generated ({images:,} images), not the real Oxford-IIIT Pet")
    elif images != setup["images"]:
        reasons.append(f"the dataset has {images:,} images, not the real Oxford-IIIT Pet's {setup['images']:,}")
    elif (parts["train"] != setup["train"] or parts["val"] + parts["test"] != setup["val_and_test"]
          or abs(parts["val"] - parts["test"]) > 1):
        reasons.append(f"the split is {parts['train']:,} / {parts['val']:,} / {parts['test']:,} (train / val / test), "
                       f"not the paper's {setup['train']:,} / half of {setup['val_and_test']:,} each")
    if data.size != setup["image_size"]:
        reasons.append(f"images are {data.size} px, not the paper's {setup['image_size']}")
    if not config.search.pretrained:
        reasons.append("backbones are random init (`pretrained: false`), not pretrained")
    return reasons


def row_difference(p: Provenance) -> str | None:
    """What in one variant's row differs from the paper beyond the study's setup: a VOC / ADE20K head that was
    not loaded from a head file, or a variant the paper did not study; None when nothing does."""
    if p.variant not in _published()["variants"]:
        return "the paper did not study this variant"
    spec = VARIANTS[p.variant]
    if spec.head_dataset is not None and p.head_file is None:
        return f"its head is random init, not pretrained on {spec.head_pretraining} (no head file)"
    return None


def beside_paper(comparison: pd.DataFrame, comparable: set[str]) -> pd.DataFrame:
    """`comparison` with paper_<figure> (and diff_<figure> = petseg - paper, prediction time excepted) for the
    rows whose key is in `comparable`, empty for the others; without a comparable row, unchanged."""
    if not comparable & set(comparison["key"]):
        return comparison
    published = pd.DataFrame.from_dict(_published()["variants"], orient="index")
    out = comparison.copy()
    shown = out["key"].where(out["key"].isin(comparable))
    for column, figure in DIFFERENCED.items():
        out[f"paper_{figure}"] = shown.map(published[figure])
        if figure == "trainable_params":  # counts stay whole numbers beside the empty cells
            out[f"paper_{figure}"] = out[f"paper_{figure}"].astype("Int64")
        out[f"diff_{figure}"] = out[column] - out[f"paper_{figure}"]
    for figure in SHOWN_ONLY:
        out[f"paper_{figure}"] = shown.map(published[figure])
    return out


def comparable_rows(config, data, provenances: dict, names: dict[str, str]) -> tuple[set[str], list[str]]:
    """(keys of the variants comparable with the paper, one report.md paragraph per reason the others are not,
    and one saying what the paper columns mean when there are any)."""
    differences = study_differences(config, data)
    if differences:
        return set(), [f"Not beside the paper's published figures: {'; '.join(differences)}."]
    rows = {variant: row_difference(p) for variant, p in provenances.items()}
    lines = [f"{names[variant]} is not beside the paper: {reason}." for variant, reason in rows.items() if reason]
    comparable = {variant for variant, reason in rows.items() if reason is None}
    if comparable:
        lines.append(f"Beside the paper: the `paper_*` columns are the published figures ({source()}); `diff_*` = "
                     "petseg - paper. The paper's prediction time stands beside ours with no difference taken: its "
                     "hardware, batch size and timing protocol are unknown.")
    return comparable, lines
