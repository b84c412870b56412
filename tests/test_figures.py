"""Study figures: PNG files that open, have sane sizes, and grow with what they show."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

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
    for offset, metric in enumerate(("pixel_accuracy", "mean_iou", "weighted_iou")):
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
