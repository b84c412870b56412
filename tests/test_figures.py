"""Study figures: PNG files that open, have sane sizes, and grow with what they show; the labels drawn are the
names given, none overlaps another, and a trial of one epoch is drawn as a point."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from petseg.metrics import metric_names
from petseg.report import figures
from petseg.report.figures import learning_curves, lr_landscape, metric_bars, qualitative_grid

VARIANTS = ["fcn_resnet50", "denseaspp_voc", "cutdenseaspp_ade20k"]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # a truncated file fails here
        return image.size


def history(rng, epochs: int) -> pd.DataFrame:
    return pd.DataFrame({"epoch": np.arange(1, epochs + 1), "val_weighted_iou": np.sort(rng.uniform(0.3, 0.9, epochs))})


def test_learning_curves(tmp_path):
    rng = np.random.default_rng(0)
    histories = {v: [(f"{v}_{i}", history(rng, 2 + i)) for i in range(3)] for v in VARIANTS}
    best = {v: f"{v}_1" for v in VARIANTS}
    path = learning_curves(histories, best, tmp_path / "figs" / "curves.png")
    width, height = png_size(path)
    assert width > 400 and height > 200
    # Panels are laid out three to a row: four variants need a second row.
    histories["deeplabv3_resnet50"] = [("d_0", history(rng, 4))]
    taller = png_size(learning_curves(histories, best, tmp_path / "curves4.png"))
    assert taller[0] == width and taller[1] > height


def test_learning_curves_reject_a_best_trial_they_do_not_have(tmp_path):
    histories = {"fcn_resnet50": [("a", history(np.random.default_rng(1), 3))]}
    with pytest.raises(ValueError, match="fcn_resnet50: best trial 'b'"):
        learning_curves(histories, {"fcn_resnet50": "b"}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_lr_landscape(tmp_path):
    rng = np.random.default_rng(2)
    trials = pd.DataFrame({"variant": np.repeat(VARIANTS, 4), "lr": 10 ** rng.uniform(-5, -1, 12),
                           "best_val_weighted_iou": rng.uniform(0.2, 0.9, 12)})
    trials.loc[3, "best_val_weighted_iou"] = np.nan  # an errored trial has no score
    width, height = png_size(lr_landscape(trials, tmp_path / "lr.png"))
    assert width > 400 and height > 200
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        lr_landscape(trials.drop(columns="lr"), tmp_path / "bad.png")


def test_metric_bars(tmp_path):
    rows = pd.DataFrame({"variant": VARIANTS})
    for offset, metric in enumerate(metric_names()):
        rows[metric] = 0.9 - 0.1 * offset
        rows[f"{metric}_low"], rows[f"{metric}_high"] = rows[metric] - 0.02, rows[metric] + 0.03
    width, height = png_size(metric_bars(rows, tmp_path / "bars.png"))
    assert width > 400 and height > 200
    with pytest.raises(ValueError, match="mean_iou_high"):
        metric_bars(rows.drop(columns="mean_iou_high"), tmp_path / "bad.png")


def grid_size(tmp_path, n_images: int, n_variants: int) -> tuple[int, int]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 40, 40, generator=generator) for _ in range(n_images)]
    masks = [torch.randint(0, 3, (40, 40), generator=generator) for _ in range(n_images)]
    predictions = {v: masks[::-1] for v in VARIANTS[:n_variants]}
    path = tmp_path / f"grid_{n_images}x{n_variants}.png"
    return png_size(qualitative_grid(images, masks, predictions, path, mean=(0.5,) * 3, std=(0.2,) * 3))


def test_qualitative_grid_grows_by_one_cell_per_image_and_per_variant(tmp_path):
    one, two, three = (grid_size(tmp_path, 2, v) for v in (1, 2, 3))
    assert one[0] > 400 and one[1] > 200
    cell = two[0] - one[0]  # columns: image, ground truth, then one per variant
    assert cell > 100 and three[0] - two[0] == cell and one[1] == two[1] == three[1]
    taller = grid_size(tmp_path, 4, 1)
    assert taller[0] == one[0] and taller[1] - one[1] == 2 * cell


def test_qualitative_grid_needs_one_prediction_per_image(tmp_path):
    image, mask = torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="denseaspp_voc: 1 predictions for 2 images"):
        qualitative_grid([image, image], [mask, mask], {"denseaspp_voc": [mask]}, tmp_path / "g.png",
                         (0.5,) * 3, (0.2,) * 3)


# ---- the labels drawn, read back from each saved Figure's text artists ----

LONG = ["FCN (random weights: backbone and head)", "DeepLabV3 (random-init head)", "DenseASPP1 (random-init head)",
        "DenseASPP2 (random-init head, backbone unchecked)", "CutDenseASPP1 (random-init head)",
        "CutDenseASPP2 (random-init head)", "DenseASPP1 (Pascal VOC head, backbone unchecked)",
        "DeepLabV3 (COCO head on a random-init backbone)", "FCN", "DenseASPP2"]


@pytest.fixture
def drawn(monkeypatch):
    """Every Figure the figures functions save, once drawn (kept as their save step writes them)."""
    saved, save = [], figures._save

    def keep(figure, path):
        written = save(figure, path)
        saved.append(figure)
        return written

    monkeypatch.setattr(figures, "_save", keep)
    return saved


def one_line(text) -> str:
    return text.get_text().replace("\n", " ")


def assert_apart_and_inside(figure, texts) -> None:
    """No two of the drawn texts' boxes intersect, and each lies inside the figure."""
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in texts]
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes), 2):
        assert not box_a.overlaps(box_b), f"{a.get_text()!r} overlaps {b.get_text()!r}"
    width, height = figure.canvas.get_width_height()
    for text, box in zip(texts, boxes):
        assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, f"{text.get_text()!r} leaves the figure"


def titles(figure):
    return [ax.title for ax in figure.axes if ax.get_visible() and ax.get_title()]


@pytest.mark.parametrize("count", [1, 3, 8, 10])
def test_qualitative_titles_are_the_names_given_and_never_overlap(tmp_path, drawn, count):
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 24, 24, generator=generator) for _ in range(2)]
    masks = [torch.randint(0, 3, (24, 24), generator=generator) for _ in range(2)]
    names = {f"variant_{i}": LONG[i] for i in range(count)}
    qualitative_grid(images, masks, {v: masks for v in names}, tmp_path / "q.png", (0.5,) * 3, (0.2,) * 3, names)
    figure, = drawn
    drawn_titles = titles(figure)
    assert [one_line(t) for t in drawn_titles] == ["image", "ground truth", *names.values()]
    assert_apart_and_inside(figure, drawn_titles)


def test_a_label_with_a_word_wider_than_its_column_is_broken_inside_the_word(tmp_path, drawn):
    image, mask = torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)
    names = {"a": "W" * 40, "b": "M" * 40}
    qualitative_grid([image], [mask], {"a": [mask], "b": [mask]}, tmp_path / "q.png", (0.5,) * 3, (0.2,) * 3, names)
    figure, = drawn
    assert [t.get_text().replace("\n", "") for t in titles(figure)][2:] == list(names.values())
    assert_apart_and_inside(figure, titles(figure))


def test_learning_curves_name_every_variant_and_draw_a_one_epoch_trial(tmp_path, drawn):
    rng = np.random.default_rng(3)
    keys = ["fcn_resnet50", "denseaspp_voc", "cutdenseaspp_ade20k", "deeplabv3_resnet50"]
    names = dict(zip(keys, LONG))
    # Each variant: a trial stopped after one epoch beside one that ran four; the last variant never produced a
    # checkpoint, so it has no best trial, and is labelled all the same.
    histories = {v: [(f"{v}_short", history(rng, 1)), (f"{v}_long", history(rng, 4))] for v in keys}
    best = {v: f"{v}_long" for v in keys[:-1]}
    learning_curves(histories, best, tmp_path / "curves.png", names)
    figure, = drawn
    drawn_titles = titles(figure)
    assert [one_line(t) for t in drawn_titles] == [f"{names[v]} (2 trials)" for v in keys]
    assert_apart_and_inside(figure, drawn_titles)
    for ax in figure.axes[:len(keys)]:
        short = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
        assert len(short) == 1, "the one-epoch trial is drawn once"
        point, = short
        assert point.get_visible() and point.get_marker() not in ("None", "", " ", None)
        assert point.get_markersize() > 0


def test_learning_curves_say_trial_for_one(tmp_path, drawn):
    learning_curves({"fcn_resnet50": [("a", history(np.random.default_rng(4), 2))]}, {}, tmp_path / "c.png")
    assert one_line(titles(drawn[0])[0]) == "FCN (1 trial)"


def test_lr_landscape_legend_names_every_variant_given(tmp_path, drawn):
    rng = np.random.default_rng(5)
    keys = ["fcn_resnet50", "denseaspp_voc", "cutdenseaspp_ade20k"]  # say the last never made a checkpoint
    names = dict(zip(keys, LONG))
    trials = pd.DataFrame({"variant": np.repeat(keys, 3), "lr": 10 ** rng.uniform(-5, -1, 9),
                           "best_val_weighted_iou": rng.uniform(0.2, 0.9, 9)})
    lr_landscape(trials, tmp_path / "lr.png", names)
    legend, = [child for child in drawn[0].axes[0].get_children() if type(child).__name__ == "Legend"]
    assert [text.get_text() for text in legend.get_texts()] == list(names.values())


def test_a_variant_drawn_without_a_label_is_refused(tmp_path):
    trials = pd.DataFrame({"variant": ["fcn_resnet50", "denseaspp_voc"], "lr": [1e-3, 1e-4],
                           "best_val_weighted_iou": [0.5, 0.6]})
    with pytest.raises(ValueError, match="no label for variant 'denseaspp_voc'"):
        lr_landscape(trials, tmp_path / "lr.png", {"fcn_resnet50": "FCN (random-init head)"})
    histories = {"denseaspp_voc": [("a", history(np.random.default_rng(6), 2))]}
    with pytest.raises(ValueError, match="no label for variant 'denseaspp_voc'"):
        learning_curves(histories, {}, tmp_path / "c.png", {"fcn_resnet50": "FCN"})


def test_metric_bars_tick_labels_are_the_names_given_and_never_overlap(tmp_path, drawn):
    names = {f"variant_{i}": LONG[i] for i in range(8)}
    rows = pd.DataFrame({"variant": list(names)})
    for metric in metric_names():
        rows[metric], rows[f"{metric}_low"], rows[f"{metric}_high"] = 0.7, 0.65, 0.75
    metric_bars(rows, tmp_path / "bars.png", names)
    figure, = drawn
    ticks = figure.axes[0].get_xticklabels()
    assert [one_line(t) for t in ticks] == list(names.values())
    assert_apart_and_inside(figure, ticks)
