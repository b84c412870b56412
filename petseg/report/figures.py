"""Study figures as PNG files: learning curves, the learning-rate landscape, test metrics with CIs,
and a qualitative grid like the paper's Fig. 1.

Matplotlib's object API renders with the Agg canvas: no pyplot global state and no display needed.
Each function writes one PNG (creating its folder) and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..data import CLASS_NAMES
from ..drawing import PALETTE, colourize, denormalize
from ..models import VARIANTS
from .stats import METRICS

DPI = 100
CELL_INCHES = 2.0  # one image of the qualitative grid
METRIC_LABELS = {"pixel_accuracy": "pixel accuracy", "mean_iou": "mIoU", "weighted_iou": "weighted mIoU"}
MARKERS = "osD^vP*X"  # a shape per variant as well as a colour, readable in grayscale
BEST_STYLE = {"color": "C3", "linewidth": 2.5, "marker": "o", "zorder": 3}
OTHER_STYLE = {"color": "0.65", "linewidth": 1.0, "alpha": 0.8}


def paper_name(variant: str, names: dict[str, str] | None = None) -> str:
    """The label of a variant key: names[variant] if given (e.g. "DenseASPP1 (random-init head)"), else the
    paper's name, else the key itself."""
    if names and variant in names:
        return names[variant]
    return VARIANTS[variant].paper_name if variant in VARIANTS else variant


def _require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def learning_curves(histories: dict[str, list[tuple[str, pd.DataFrame]]], best: dict[str, str],
                    path: str | Path, names: dict[str, str] | None = None) -> Path:
    """One panel per variant: val weighted mIoU per epoch of every trial, its best trial highlighted.

    histories: variant -> [(trial_id, frame with epoch and val_weighted_iou)]; best: variant -> trial_id.
    """
    if not histories:
        raise ValueError("learning_curves got no histories; pass variant -> [(trial_id, DataFrame)]")
    columns = min(3, len(histories))
    rows = math.ceil(len(histories) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax in axes[len(histories):]:
        ax.set_visible(False)
    for ax, (variant, trials) in zip(axes, histories.items()):
        ids = [trial_id for trial_id, _ in trials]
        if variant in best and best[variant] not in ids:
            raise ValueError(f"{variant}: best trial {best[variant]!r} is not among its trials {ids}")
        for trial_id, frame in trials:
            _require_columns(frame, ("epoch", "val_weighted_iou"), f"{variant} trial {trial_id}")
            is_best = trial_id == best.get(variant)
            ax.plot(frame["epoch"], frame["val_weighted_iou"], label=f"best ({trial_id})" if is_best else None,
                    **(BEST_STYLE if is_best else OTHER_STYLE))
        ax.set(title=f"{paper_name(variant, names)} ({len(trials)} trials)", xlabel="epoch", ylabel="val weighted mIoU")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if variant in best:
            ax.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def lr_landscape(trials: pd.DataFrame, path: str | Path, names: dict[str, str] | None = None) -> Path:
    """Each trial's best val weighted mIoU against its learning rate (log x), one colour and marker per variant."""
    _require_columns(trials, ("variant", "lr", "best_val_weighted_iou"), "trials")
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for index, (variant, group) in enumerate(trials.groupby("variant", sort=False)):
        ax.scatter(group["lr"], group["best_val_weighted_iou"], label=paper_name(variant, names),
                   marker=MARKERS[index % len(MARKERS)], s=40, alpha=0.85)
    ax.set_xscale("log")
    ax.set(xlabel="head learning rate", ylabel="best val weighted mIoU", title="Learning-rate search")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    return _save(figure, path)


def metric_bars(rows: pd.DataFrame, path: str | Path, names: dict[str, str] | None = None) -> Path:
    """Test pixel accuracy, mIoU and weighted mIoU per variant as grouped bars with CI error bars.

    rows: one per variant with `variant` and, per metric, `<metric>`, `<metric>_low`, `<metric>_high`.
    """
    _require_columns(rows, ["variant", *(f"{m}{end}" for m in METRICS for end in ("", "_low", "_high"))], "rows")
    figure = Figure(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.5), layout="constrained")
    ax = figure.subplots()
    positions, width = np.arange(len(rows)), 0.8 / len(METRICS)
    for index, metric in enumerate(METRICS):
        values = rows[metric].to_numpy(dtype=float)
        # A percentile interval can exclude its point in degenerate cases; matplotlib rejects negative errors.
        errors = np.clip([values - rows[f"{metric}_low"].to_numpy(dtype=float),
                          rows[f"{metric}_high"].to_numpy(dtype=float) - values], 0, None)
        ax.bar(positions + (index - (len(METRICS) - 1) / 2) * width, values, width, yerr=errors, capsize=3,
               label=METRIC_LABELS[metric])
    ax.set_xticks(positions, [paper_name(v, names) for v in rows["variant"]], rotation=20, ha="right")
    ax.set(ylabel="test score (95% CI)", ylim=(0, 1.1), title="Test metrics")
    ax.legend(loc="upper center", ncols=len(METRICS), fontsize="small")
    return _save(figure, path)


def qualitative_grid(images, truths, predictions: dict[str, list], path: str | Path, mean, std,
                     names: dict[str, str] | None = None) -> Path:
    """Rows = images; columns = image, ground truth, then each variant's prediction, coloured (paper Fig. 1).

    images: normalised [3, H, W] tensors (as a PetSegmentation gives them, undone with mean/std);
    truths and each variant's predictions: [H, W] class-id masks, one per image.
    """
    if len(images) == 0 or len(truths) != len(images):
        raise ValueError(f"qualitative_grid got {len(images)} images and {len(truths)} ground truths; "
                         "pass at least one image and one ground truth per image")
    for variant, masks in predictions.items():
        if len(masks) != len(images):
            raise ValueError(f"{variant}: {len(masks)} predictions for {len(images)} images; give one per image")
    columns = [("image", [denormalize(torch.as_tensor(i), mean, std) for i in images]),
               ("ground truth", [colourize(torch.as_tensor(t)) for t in truths])]
    columns += [(paper_name(v, names), [colourize(torch.as_tensor(m)) for m in masks]) for v, masks in predictions.items()]
    legend_inches = 0.4
    figure = Figure(figsize=(CELL_INCHES * len(columns), CELL_INCHES * len(images) + legend_inches),
                    layout="constrained")
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for column, (title, panels) in enumerate(columns):
        axes[0, column].set_title(title)
        for row, panel in enumerate(panels):
            axes[row, column].imshow(panel.permute(1, 2, 0).cpu().numpy())
            axes[row, column].set_axis_off()
    handles = [Patch(color=(PALETTE[i] / 255).tolist(), label=name) for i, name in enumerate(CLASS_NAMES)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(CLASS_NAMES))
    return _save(figure, path)
