"""The seed study's published figures, to read petseg's reproduction beside them."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd

RESULTS_FILE = Path(__file__).with_name("paper_results.json")
# comparison column -> the published figure it is read against
COMPARED = {"test_pixel_accuracy": "pixel_accuracy", "test_weighted_iou": "weighted_iou",
            "prediction_time_s": "prediction_time_s", "trainable_params": "trainable_params"}


@functools.cache
def _published() -> dict:
    return json.loads(RESULTS_FILE.read_text())


def source() -> str:
    """Where the published figures come from, as the data file names it."""
    return _published()["source"]


def beside_paper(comparison: pd.DataFrame) -> pd.DataFrame:
    """`comparison` with paper_<figure> and diff_<figure> (petseg - paper) columns for each published figure."""
    published = pd.DataFrame.from_dict(_published()["variants"], orient="index")
    out = comparison.copy()
    for column, figure in COMPARED.items():
        out[f"paper_{figure}"] = out["key"].map(published[figure])
        out[f"diff_{figure}"] = out[column] - out[f"paper_{figure}"]
    return out
