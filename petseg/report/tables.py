"""Comparison tables as CSV, Markdown and LaTeX (booktabs), including the paper's Table 1 and Table 2."""
from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import REGISTRY
from ..train.trial_spec import SEARCHED

TABLE1 = {"model": "Model", "backbone": "Backbone (frozen)", "head_pretraining": "Head pretraining",
          "trainable_params": "Trainable params", "total_params": "Total params",
          "paper_trainable_params": "Paper trainable params", "diff_trainable_params": "Diff trainable params"}
PAPER_TABLE2 = {"model": "Model", "test_pixel_accuracy": "Pixel acc.", "paper_pixel_accuracy": "Paper pixel acc.",
                "diff_pixel_accuracy": "Diff pixel acc.", "test_weighted_iou": "Weighted mIoU",
                "paper_weighted_iou": "Paper weighted mIoU", "diff_weighted_iou": "Diff weighted mIoU",
                "prediction_time_s": "Prediction, test set (s)",
                "paper_prediction_time_s": "Paper prediction, test set (s; hardware and protocol unknown)"}


def table2_columns() -> dict[str, str]:
    """Table 2's columns -> labels: the paper's (model, pixel accuracy, weighted mIoU, prediction time) first, then
    every other registered metric (plugins' too); the per-class IoUs follow (class_iou_columns)."""
    return {**PAPER_TABLE2, **{f"test_{name}": metric.label for name, metric in REGISTRY.items()
                               if f"test_{name}" not in PAPER_TABLE2}}


CLASS_IOU = "test_iou_"  # + a class name: that class's test IoU (stats.summarize's iou_<class>, test_ prefixed)
# How each row of Table 2 was obtained: where it was timed, how it was trained, and what its search spent.
RUN_DETAILS = {"model": "Model", "device": "Device", "batch_size": "Batch", "precision": "Precision",
               "prediction_ms_per_image": "Prediction (ms/image)", 
               # "Best lr", and one column per other value a study searched (shown where it did)
               **{f"best_{name}": f"Best {name.replace('_', ' ')}" for name in SEARCHED}, "epochs": "Epochs",
               "trials": "Trials", "trial_epochs": "Trial-epochs", "gpu_hours": "GPU-hours",
               "cpu_core_hours": "CPU-core-hours", "epochs_cut_by_asha": "Epochs cut by ASHA",
               "epochs_cut_by_early_stopping": "Epochs cut by early stopping",
               "epochs_lost_to_errors": "Epochs lost to errors", "epochs_planned": "Epochs planned"}


def cell(value) -> str:
    """A table cell: floats to 4 decimal places (small ones in scientific form), whole numbers with thousands
    separators, missing values empty."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        if math.isnan(value):
            return ""
        return f"{value:.3g}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `frame`."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def latex_table(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table of `frame` (needs \\usepackage{booktabs})."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_latex_escape(str(c)) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(cell(v)) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def with_interval(frame: pd.DataFrame, metric: str) -> pd.Series:
    """'0.9123 [0.9050, 0.9190]' strings of a metric and its 95% interval columns."""
    return frame.apply(lambda r: f"{cell(r[metric])} [{cell(r[metric + '_low'])}, {cell(r[metric + '_high'])}]",
                       axis=1)


def write_table(frame: pd.DataFrame, folder: Path, stem: str, caption: str) -> str:
    """Write <stem>.csv, .md and .tex in `folder`; return the Markdown."""
    frame.to_csv(folder / f"{stem}.csv", index=False)
    markdown = markdown_table(frame)
    (folder / f"{stem}.md").write_text(markdown)
    (folder / f"{stem}.tex").write_text(latex_table(frame, caption))
    return markdown


def paper_tables(comparison: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Table 1 (architecture) and Table 2 (results, its columns first; beside the published figures
    where the comparison has them), renamed for reading."""
    table1 = comparison[[c for c in TABLE1 if c in comparison]].rename(columns=TABLE1)
    per_class = {column: f"IoU {column.removeprefix(CLASS_IOU)}" for column in class_iou_columns(comparison)}
    columns = table2_columns()
    table2 = comparison[[c for c in columns if c in comparison] + list(per_class)].rename(columns={**columns, **per_class})
    return table1, table2


def class_iou_columns(comparison: pd.DataFrame) -> list[str]:
    """The comparison's per-class test IoU columns, in class order (one per class of the study's dataset)."""
    return [column for column in comparison.columns if column.startswith(CLASS_IOU)]


def run_details_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """How each row of Table 2 was obtained (timing device, batch, precision, lr, epochs, compute, epochs not
    run), renamed for reading."""
    return comparison[[c for c in RUN_DETAILS if c in comparison]].rename(columns=RUN_DETAILS)
