"""Study figures as PNG files: learning curves, the learning-rate landscape, test metrics with CIs,
and a qualitative grid like the paper's Fig. 1.

Matplotlib's object API renders with the Agg canvas: no pyplot global state and no display needed.
Each function writes one PNG (creating its folder) and returns its path. Variants are named by the labels
passed in `names` (variant -> label, e.g. "DenseASPP1 (random-init head)"); titles and tick labels are wrapped
to the width of their panel, so none runs into its neighbour.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..data import CLASS_NAMES
from ..drawing import colourize, denormalize, palette_for
from ..models import VARIANTS
from ..metrics import REGISTRY, metric_names

DPI = 100
CELL_INCHES = 2.0  # one image of the qualitative grid
PANEL_INCHES = (4.2, 3.2)  # one learning-curve panel
BAR_GROUP_INCHES = 1.4  # one variant's bars
TITLE_POINTS = 10.0
TITLE_PAD_POINTS = 4.0
FILL = 0.85  # share of its panel's width a wrapped label may take: the rest keeps neighbours apart
MARKERS = "osD^vP*X"  # a shape per variant as well as a colour, readable in grayscale
BEST_STYLE = {"color": "C3", "linewidth": 2.5, "marker": "o", "zorder": 3}
# Markers too: a trial stopped after one epoch is a single point, which a line alone would not draw.
OTHER_STYLE = {"color": "0.65", "linewidth": 1.0, "alpha": 0.8, "marker": "o", "markersize": 4}


def variant_label(variant: str, names: dict[str, str] | None = None) -> str:
    """The label of a variant key: names[variant] when names are given (a missing one is an error, never a
    silent fallback), else the paper's name, else the key itself."""
    if names is not None:
        if variant not in names:
            raise ValueError(f"no label for variant {variant!r} in names (labels given for {sorted(names)}); "
                             "pass a label for every variant drawn, including those without a checkpoint")
        return names[variant]
    return VARIANTS[variant].paper_name if variant in VARIANTS else variant


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A Figure on an Agg canvas, so text can be measured before it is drawn."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _wrap(figure: Figure, text: str, inches: float, points: float = TITLE_POINTS) -> str:
    """`text` broken into lines, at spaces where the words allow, none wider than `inches` at `points`."""
    renderer, font = figure.canvas.get_renderer(), FontProperties(size=points)
    limit = inches * figure.dpi
    for chars in range(max(len(text), 1), 0, -1):
        lines = textwrap.wrap(text, chars, break_on_hyphens=False) or [text]
        if all(renderer.get_text_width_height_descent(line, font, ismath=False)[0] <= limit for line in lines):
            return "\n".join(lines)
    return "\n".join(text)  # not even one character fits: one per line


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

    histories: variant -> [(trial_id, frame with epoch and val_weighted_iou)]; best: variant -> trial_id (a
    variant with trials but no best one, e.g. no checkpoint, is drawn all the same, nothing highlighted).
    """
    if not histories:
        raise ValueError("learning_curves got no histories; pass variant -> [(trial_id, DataFrame)]")
    columns = min(3, len(histories))
    rows = math.ceil(len(histories) / columns)
    figure = _new_figure(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows)
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
        title = f"{variant_label(variant, names)} ({len(trials)} trial{'s' if len(trials) != 1 else ''})"
        ax.set_title(_wrap(figure, title, FILL * PANEL_INCHES[0]), fontsize=TITLE_POINTS)
        ax.set(xlabel="epoch", ylabel="val weighted mIoU")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if variant in best:
            ax.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def lr_landscape(trials: pd.DataFrame, path: str | Path, names: dict[str, str] | None = None) -> Path:
    """Each trial's best val weighted mIoU against its learning rate (log x), one colour and marker per variant."""
    _require_columns(trials, ("variant", "lr", "best_val_weighted_iou"), "trials")
    figure = _new_figure(9.0, 4.5)
    ax = figure.subplots()
    for index, (variant, group) in enumerate(trials.groupby("variant", sort=False)):
        ax.scatter(group["lr"], group["best_val_weighted_iou"], label=variant_label(variant, names),
                   marker=MARKERS[index % len(MARKERS)], s=40, alpha=0.85)
    ax.set_xscale("log")
    ax.set(xlabel="head learning rate", ylabel="best val weighted mIoU", title="Learning-rate search")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # outside: it never hides a trial
    return _save(figure, path)


def metric_bars(rows: pd.DataFrame, path: str | Path, names: dict[str, str] | None = None) -> Path:
    """Every registered metric's test score per variant as grouped bars with CI error bars.

    rows: one per variant with `variant` and, per metric, `<metric>`, `<metric>_low`, `<metric>_high`.
    """
    metrics_shown = metric_names()
    _require_columns(rows, ["variant", *(f"{m}{end}" for m in metrics_shown for end in ("", "_low", "_high"))], "rows")
    figure = _new_figure(max(6.0, BAR_GROUP_INCHES * len(rows) + 2), 4.5)
    ax = figure.subplots()
    positions, width = np.arange(len(rows)), 0.8 / len(metrics_shown)
    for index, metric in enumerate(metrics_shown):
        values = rows[metric].to_numpy(dtype=float)
        # A percentile interval can exclude its point in degenerate cases; matplotlib rejects negative errors.
        errors = np.clip([values - rows[f"{metric}_low"].to_numpy(dtype=float),
                          rows[f"{metric}_high"].to_numpy(dtype=float) - values], 0, None)
        ax.bar(positions + (index - (len(metrics_shown) - 1) / 2) * width, values, width, yerr=errors, capsize=3,
               label=REGISTRY[metric].label)
    ax.set_xticks(positions, [_wrap(figure, variant_label(v, names), FILL * BAR_GROUP_INCHES) for v in rows["variant"]],
                  fontsize=TITLE_POINTS)
    ax.set(ylabel="test score (95% CI)", ylim=(0, 1.1), title="Test metrics")
    ax.legend(loc="upper center", ncols=len(metrics_shown), fontsize="small")
    return _save(figure, path)


def qualitative_grid(images, truths, predictions: dict[str, list], path: str | Path, mean, std,
                     names: dict[str, str] | None = None, class_names=CLASS_NAMES) -> Path:
    """Rows = images; columns = image, ground truth, then each variant's prediction, coloured (paper Fig. 1),
    with a legend of `class_names` in palette_for's colours.

    images: normalised [3, H, W] tensors (as a PetSegmentation gives them, undone with mean/std);
    truths and each variant's predictions: [H, W] class-id masks, one per image.
    """
    if len(images) == 0 or len(truths) != len(images):
        raise ValueError(f"qualitative_grid got {len(images)} images and {len(truths)} ground truths; "
                         "pass at least one image and one ground truth per image")
    for variant, masks in predictions.items():
        if len(masks) != len(images):
            raise ValueError(f"{variant}: {len(masks)} predictions for {len(images)} images; give one per image")
    palette = palette_for(len(class_names))
    columns = [("image", [denormalize(torch.as_tensor(i), mean, std) for i in images]),
               ("ground truth", [colourize(torch.as_tensor(t), palette) for t in truths])]
    columns += [(variant_label(v, names), [colourize(torch.as_tensor(m), palette) for m in masks])
                for v, masks in predictions.items()]
    # The legend's rows hold 6 classes each; gap: space between images, as a share of one.
    legend_inches, gap = 0.3 * -(-len(class_names) // 6) + 0.1, 0.05
    figure = _new_figure(CELL_INCHES * len(columns), CELL_INCHES * len(images) + legend_inches, layout=None)
    titles = [_wrap(figure, title, FILL * CELL_INCHES) for title, _ in columns]
    # A band for the longest wrapped title (and its pad) above the images, so they keep their size; laid out
    # by hand because the constrained layout under-reserves multi-line titles over fixed-aspect images.
    lines = max(title.count("\n") + 1 for title in titles)
    band = (lines * 1.2 * TITLE_POINTS + 2 * TITLE_PAD_POINTS) / 72
    height = figure.get_figheight() + band
    figure.set_figheight(height)
    axes = figure.subplots(len(images), len(columns), squeeze=False, gridspec_kw={
        "left": 0, "right": 1, "bottom": legend_inches / height, "top": 1 - band / height,
        "wspace": gap, "hspace": gap})
    for column, (title, (_, panels)) in enumerate(zip(titles, columns)):
        axes[0, column].set_title(title, fontsize=TITLE_POINTS, pad=TITLE_PAD_POINTS)
        for row, panel in enumerate(panels):
            axes[row, column].imshow(panel.permute(1, 2, 0).cpu().numpy())
            axes[row, column].set_axis_off()
    handles = [Patch(color=(palette[i] / 255).tolist(), label=name) for i, name in enumerate(class_names)]
    figure.legend(handles=handles, loc="lower center", ncols=min(len(class_names), 6), frameon=False)
    return _save(figure, path)
