"""The folder dataset: its layout read and checked file by file, its split, and a 5-class study end to end
(search, Table 2 with one IoU column per class, figures, predict.py and evaluate.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from petseg.data import folder
from petseg.data.__main__ import main as check_data
from petseg.data.spec import DataSpec, datasets_from_spec, make_data_spec
from petseg.drawing import comparison_panel, palette_for
from petseg.errors import DatasetError
from petseg.synthetic.folder import FOLDER_CLASSES, write_folder

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(FOLDER_CLASSES)  # five: background, circle, square, stripe, blob


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A generated 5-class folder dataset in the documented layout (palette masks, an ignore band)."""
    return write_folder(tmp_path_factory.mktemp("folder") / "shapes", num_images=24, size=64, seed=0)


@pytest.mark.parametrize("text, message", [
    ("only\n", "names 1 classes"),
    ("a\n\nb\n", "line 2 is empty"),
    ("a\nb\na\n", "['a'] appear twice"),
    ("a\nb\nignore: 1\n", "is the index of class 'b'"),
    ("a\nb\nignore: 300\n", "give one line 'ignore: N'"),
    ("a\nb\nignore: 255\nignore: 254\n", "give one line 'ignore: N'"),
])
def test_a_malformed_classes_file_is_named_with_its_fault(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(DatasetError, match="classes.txt") as raised:
        folder.read_classes(tmp_path)
    assert message in str(raised.value)


def test_classes_file_gives_names_by_line_and_the_ignored_value(tmp_path):
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\nignore: 255\n\n")
    assert folder.read_classes(tmp_path) == folder.Classes(("sky", "road", "car"), 255)
    with pytest.raises(DatasetError, match="is missing"):
        folder.read_classes(tmp_path / "nowhere")


def test_the_checker_names_every_kind_of_bad_file(tmp_path, capsys):
    root = write_folder(tmp_path / "bad", num_images=12, size=32, seed=1)  # 6 usable pairs still split
    (root / "masks" / "shape_000.png").unlink()  # image without mask
    (root / "images" / "shape_001.png").unlink()  # mask without image
    mask = np.array(Image.open(root / "masks" / "shape_002.png"))
    mask[0, 0] = 7  # outside the 5 classes and not the ignored 255
    Image.fromarray(mask).save(root / "masks" / "shape_002.png")
    shorter = np.array(Image.open(root / "masks" / "shape_003.png"))[:-3]
    Image.fromarray(shorter).save(root / "masks" / "shape_003.png")  # 3 rows shorter than its image
    (root / "images" / "shape_004.jpg").write_bytes(b"not a jpeg")  # unreadable
    Image.new("RGB", (32, 32)).save(root / "masks" / "shape_005.png")  # colour mask, not class indices

    assert check_data(["--dataset", "folder", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "6 unusable file(s)" in out
    for line in (f"{root / 'images' / 'shape_000.jpg'}: image without mask",
                 f"{root / 'masks' / 'shape_001.png'}: mask without image",
                 f"{root / 'masks' / 'shape_002.png'}: mask values [7] are outside the classes 0..4",
                 f"{root / 'masks' / 'shape_003.png'}: mask is",
                 str(root / "images" / "shape_004.jpg"),
                 f"{root / 'masks' / 'shape_005.png'}: mask is mode RGB"):
        assert line in out, line
    assert "masks must match their images pixel for pixel" in out


def test_a_clean_folder_checks_and_splits_by_ratio_or_by_its_lists(shapes, tmp_path, capsys):
    assert check_data(["--dataset", "folder", "--root", str(shapes)]) == 0
    out = capsys.readouterr().out
    assert "split (seed 0): train 12, val 6, test 6" in out
    assert "5 classes, pixel shares: background" in out
    samples, problems = folder.find_samples(shapes)
    assert problems == []
    ratio = folder.make_split(shapes, samples, seed=3, ratio=(0.5, 0.25, 0.25))
    assert [len(ratio[p]) for p in folder.PARTS] == [12, 6, 6]
    assert sorted(sum((ratio[p] for p in folder.PARTS), [])) == sorted(s.name for s in samples)
    assert ratio != folder.make_split(shapes, samples, seed=4, ratio=(0.5, 0.25, 0.25))

    listed = tmp_path / "listed"
    write_folder(listed, num_images=6, size=32, seed=2)
    (listed / "splits").mkdir()
    for part, stems in (("train", "shape_000\nshape_001\nshape_002\n"), ("val", "shape_003\n"),
                        ("test", "shape_004\nshape_005\n")):
        (listed / "splits" / f"{part}.txt").write_text(stems)
    split = folder.make_split(listed, folder.find_samples(listed)[0], seed=0, ratio=(0.5, 0.25, 0.25))
    assert (split["train"], split["val"], split["test"]) == (["shape_000", "shape_001", "shape_002"], ["shape_003"],
                                                             ["shape_004", "shape_005"])
    (listed / "splits" / "val.txt").write_text("shape_000\n")
    with pytest.raises(DatasetError, match="in both train.txt and val.txt"):
        folder.make_split(listed, folder.find_samples(listed)[0], seed=0, ratio=(0.5, 0.25, 0.25))


def test_masks_read_as_class_ids_with_the_ignored_value_as_255(tmp_path):
    root = tmp_path / "ignore7"
    write_folder(root, num_images=2, size=32, seed=0)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\nignore: 7\n")
    path = root / "masks" / "shape_000.png"
    stored = np.array(Image.open(path))
    Image.fromarray(np.where(stored == 255, 7, stored).astype(np.uint8)).save(path)  # a plain "L" PNG now
    mask = folder.load_mask(path, folder.read_classes(root))
    assert ((mask == 255) == (stored == 255)).all() and (mask[stored != 255] == stored[stored != 255]).all()


def test_a_folder_spec_round_trips_and_serves_its_classes(shapes):
    spec = make_data_spec("folder", shapes, size=32, augment="none", seed=0)
    assert (spec.num_classes, spec.class_names, spec.ignore) == (5, tuple(CLASSES), 255)
    assert DataSpec.from_json(spec.to_json()) == spec
    datasets = datasets_from_spec(spec)
    assert [len(datasets[p]) for p in ("train", "val", "test")] == [12, 6, 6]
    image, mask = datasets["train"][0]
    assert image.shape == (3, 32, 32) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(5)) | {255}
    assert datasets["test"].class_names == tuple(CLASSES)


def test_the_palette_has_a_distinct_colour_per_class_and_for_ignored_pixels():
    for classes in (2, 3, 5, 21, 150):
        palette = palette_for(classes)
        assert palette.shape == (256, 3)
        assert len({tuple(row) for row in palette[:classes].tolist()} | {tuple(palette[255].tolist())}) == classes + 1
    panel = comparison_panel(Image.new("RGB", (64, 48), "white"), {"model": torch.arange(5).repeat_interleave(13)[
        :64].expand(48, 64)}, CLASSES)
    colours = {tuple(c) for c in np.array(panel).reshape(-1, 3).tolist()}
    assert {tuple(palette_for(5)[i].tolist()) for i in range(5)} <= colours  # each class in the legend


@pytest.fixture(scope="module")
def folder_study(shapes, tmp_path_factory):
    """A smoke study of two variants on the 5-class folder dataset, through compare.py."""
    folder_ = tmp_path_factory.mktemp("folder_study")
    config = folder_ / "config.yaml"
    config.write_text(f"results_dir: {folder_ / 'results'}\ncache_dir: {folder_ / 'cache'}\n")
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "compare.py"), "--preset", "smoke",
                          "--dataset", "folder", "--data-root", str(shapes), "--variants", "fcn_resnet50,denseaspp_voc",
                          "--name", "shapes", "--storage-path", str(folder_ / "ray"), "--config", str(config)],
                         capture_output=True, text=True, timeout=900, cwd=folder_)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder_ / "results" / "shapes", run


def test_a_folder_study_reports_one_iou_column_per_class(folder_study):
    results, run = folder_study
    table2 = pd.read_csv(results / "table2.csv")
    assert [c for c in table2.columns if c.startswith("IoU ")] == [f"IoU {name}" for name in CLASSES]
    assert table2[[f"IoU {name}" for name in CLASSES]].apply(lambda c: c.between(0, 1)).all().all()
    comparison = pd.read_csv(results / "comparison.csv")
    assert list(comparison["key"]) == ["fcn_resnet50", "denseaspp_voc"]
    # trainable parameters of a 5-class head, not the Pets study's 3 (DenseASPP's classifier: 2 more outputs)
    assert comparison.loc[comparison.key == "denseaspp_voc", "trainable_params"].item() == 2_220_675 + 2 * (1_344 + 1)
    report = (results / "report.md").read_text()
    assert "the dataset is a folder dataset (24 images, 5 classes), not Oxford-IIIT Pet" in report
    assert "Paper pixel acc." not in table2.columns
    assert (results / "figures" / "qualitative.png").is_file()


def test_predict_draws_the_five_class_colours_and_evaluate_scores_each_class(folder_study, shapes, tmp_path):
    results, _ = folder_study
    photo = shapes / "images" / "shape_000.jpg"
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "predict.py"), "--study", str(results),
                          "--output", str(tmp_path), str(photo)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    colours = {tuple(c) for c in np.array(Image.open(tmp_path / "shape_000.png").convert("RGB")).reshape(-1, 3).tolist()}
    assert {tuple(palette_for(5)[i].tolist()) for i in range(5)} <= colours
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "evaluate.py"), "--checkpoint",
                          str(results / "checkpoints" / "denseaspp_voc.pt"), "--data-root", str(shapes)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    per_class = [line for line in run.stdout.splitlines() if "IoU per class" in line]
    assert len(per_class) == 2 and all(all(f"{name} " in line for name in CLASSES) for line in per_class)
