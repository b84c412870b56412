"""Pascal VOC (+SBD) and ADE20K readers, label mapping and the pretraining dataset, on generated trees."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import SBDataset, VOCSegmentation

from petseg.synthetic.__main__ import main as synthetic_main
from petseg.data import ade20k as ade20k_module
from petseg.synthetic import seg as synthetic_seg
from petseg.data import DatasetError
from petseg.data.ade20k import ADE20K_CLASSES, ade20k_samples
from petseg.data.pretraining import VocAdeSegmentation, SegSample, load_labels
from petseg.data.source import IGNORE
from petseg.data.voc import sbd_samples, voc_samples, voc_sbd_train_samples
from petseg.drawing import voc_palette
from petseg.synthetic import voc_image_id, write_ade20k, write_sbd, write_voc

NUM_IMAGES, SIZE = 8, 40
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Generated VOC, SBD and ADE20K trees (8 images each, ~40 px); do not modify."""
    root = tmp_path_factory.mktemp("segdata")
    return {"voc": write_voc(root / "voc", NUM_IMAGES, SIZE, seed=0),
            "sbd": write_sbd(root / "sbd", NUM_IMAGES, SIZE, seed=0),
            "ade20k": write_ade20k(root / "ade", NUM_IMAGES, SIZE, seed=0)}


@pytest.fixture
def copy_of(trees, tmp_path):
    """A private copy of one generated tree that a test may damage."""
    def copy(kind):
        return shutil.copytree(trees[kind], tmp_path / kind)
    return copy


def _voc_base(root):
    return root / "VOCdevkit" / "VOC2012"


def _save_png(path, values, palette=False):
    image = Image.fromarray(np.asarray(values, dtype=np.uint8))
    if palette:
        image.putpalette(voc_palette())
    image.save(path)


# --- the generated trees are what torchvision reads ---------------------------------------

def test_torchvision_reads_generated_voc(trees):
    train = VOCSegmentation(trees["voc"], year="2012", image_set="train")
    val = VOCSegmentation(trees["voc"], year="2012", image_set="val")
    assert len(train) + len(val) == NUM_IMAGES
    values = set()
    for image, target in list(train) + list(val):
        assert target.mode == "P" and target.getpalette()[:3 * 256] == voc_palette()
        assert image.size == target.size
        values |= set(np.unique(np.asarray(target)).tolist())
    assert 0 in values and IGNORE in values  # background and the void outline band
    assert values - {0, IGNORE} <= set(synthetic_seg.VOC_OBJECT_CLASSES)


def test_torchvision_reads_generated_sbd_in_both_modes(trees):
    segmentation = SBDataset(trees["sbd"], image_set="train", mode="segmentation")
    boundaries = SBDataset(trees["sbd"], image_set="train", mode="boundaries")
    assert len(segmentation) == len(boundaries) > 0
    image, target = segmentation[0]
    _, edges = boundaries[0]
    labels = np.asarray(target)
    assert image.size == target.size and edges.shape == (20, *labels.shape)
    assert IGNORE not in labels  # SBD has no void band
    for label in np.setdiff1d(np.unique(labels), [0]):
        assert edges[label - 1].any() and not edges[label - 1][labels != label].any()
    noval = SBDataset(trees["sbd"], image_set="train_noval", mode="segmentation")
    voc_val = {s.name for s in voc_samples(trees["voc"], "val")}
    assert {s.name for s in sbd_samples(trees["sbd"], "train_noval")}.isdisjoint(voc_val)
    assert 0 < len(noval) < len(segmentation)


def test_shared_ids_have_the_same_photo_and_objects_in_voc_and_sbd(trees):
    voc = {s.name: s for s in voc_samples(trees["voc"], "trainval")}
    shared = [s for s in sbd_samples(trees["sbd"], "train") + sbd_samples(trees["sbd"], "val") if s.name in voc]
    assert shared
    for sbd in shared:
        voc_labels, sbd_labels = load_labels(voc[sbd.name]), load_labels(sbd)
        known = voc_labels != IGNORE
        np.testing.assert_array_equal(voc_labels[known], sbd_labels[known])


# --- finding files ------------------------------------------------------------------------

def test_voc_samples_pair_images_and_masks(trees):
    samples = voc_samples(trees["voc"], "train")
    listed = (_voc_base(trees["voc"]) / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert [s.name for s in samples] == listed
    for sample in samples:
        assert sample.kind == "voc" and sample.image.is_file() and sample.labels.is_file()
        assert sample.image.stem == sample.labels.stem == sample.name


def test_ade20k_samples_pair_by_stem(trees):
    training = ade20k_samples(trees["ade20k"], "training")
    validation = ade20k_samples(trees["ade20k"], "validation")
    assert len(training) + len(validation) == NUM_IMAGES and validation
    for sample in training + validation:
        assert sample.kind == "ade20k" and sample.image.stem == sample.labels.stem == sample.name
        assert sample.image.suffix == ".jpg" and sample.labels.suffix == ".png"


def test_voc_sbd_train_set_excludes_voc_val_and_prefers_voc_masks(trees):
    samples = voc_sbd_train_samples(trees["voc"], trees["sbd"])
    names = [s.name for s in samples]
    voc_train = {s.name for s in voc_samples(trees["voc"], "train")}
    voc_val = {s.name for s in voc_samples(trees["voc"], "val")}
    sbd_all = {s.name for split in ("train", "val") for s in sbd_samples(trees["sbd"], split)}
    assert len(names) == len(set(names))
    assert set(names) == (voc_train | sbd_all) - voc_val
    assert voc_val & sbd_all  # the generated SBD does hold VOC val ids, so the exclusion is exercised
    for sample in samples:
        assert sample.kind == ("voc" if sample.name in voc_train else "sbd")
    noval = voc_sbd_train_samples(trees["voc"], trees["sbd"], sbd_image_sets=("train_noval",))
    assert {s.name for s in noval} < set(names) and not {s.name for s in noval} & voc_val


# --- wrong or missing layouts -------------------------------------------------------------

def test_missing_voc_tree_says_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        voc_samples(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "VOCdevkit" / "VOC2012") in message
    assert "download=True" in message and "VOCtrainval_11-May-2012.tar" in message


@pytest.mark.parametrize("folder", ["JPEGImages", "SegmentationClass"])
def test_missing_voc_folder_is_named(copy_of, folder):
    root = copy_of("voc")
    shutil.rmtree(_voc_base(root) / folder)
    with pytest.raises(DatasetError, match=str(_voc_base(root) / folder)):
        voc_samples(root)


def test_missing_voc_list_and_listed_image_are_named(copy_of):
    root = copy_of("voc")
    sample = voc_samples(root, "val")[0]
    sample.image.unlink()
    with pytest.raises(DatasetError, match=str(sample.image)):
        voc_samples(root, "val")
    (_voc_base(root) / "ImageSets" / "Segmentation" / "train.txt").unlink()
    with pytest.raises(DatasetError, match="train.txt is missing"):
        voc_samples(root, "train")


def test_download_is_skipped_when_the_voc_tree_exists(trees, monkeypatch):
    # torchvision would re-extract the 2 GB archive on every call with download=True.
    def no_network(*args, **kwargs):
        raise AssertionError("download attempted")
    monkeypatch.setattr("torchvision.datasets.voc.download_and_extract_archive", no_network)
    assert len(voc_samples(trees["voc"], "train", download=True)) == NUM_IMAGES // 2


def test_missing_sbd_parts_are_named(copy_of, tmp_path):
    with pytest.raises(DatasetError, match="download=True"):
        sbd_samples(tmp_path / "absent")
    root = copy_of("sbd")
    (root / "train_noval.txt").unlink()
    with pytest.raises(DatasetError, match="train_noval.txt is missing.*8471"):
        sbd_samples(root, "train_noval")
    shutil.rmtree(root / "cls")
    with pytest.raises(DatasetError, match=str(root / "cls")):
        sbd_samples(root, "train")


@pytest.mark.parametrize("folder", ["images/validation", "annotations/validation"])
def test_missing_ade20k_folder_is_named(copy_of, folder):
    root = copy_of("ade20k")
    shutil.rmtree(root / "ADEChallengeData2016" / folder)
    with pytest.raises(DatasetError, match=str(root / "ADEChallengeData2016" / folder)):
        ade20k_samples(root, "validation")


def test_ade20k_missing_tree_and_unpaired_file(copy_of, tmp_path):
    with pytest.raises(DatasetError, match="ADEChallengeData2016.zip"):
        ade20k_samples(tmp_path / "absent")
    root = copy_of("ade20k")
    orphan = ade20k_samples(root, "training")[0].labels
    orphan.with_name("ADE_train_99999999.png").write_bytes(orphan.read_bytes())
    with pytest.raises(DatasetError, match="ADE_train_99999999.png"):
        ade20k_samples(root, "training")


def test_ade20k_download_fetches_the_challenge_zip_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root):
        calls.append(url)
        write_ade20k(root, 2, 16, seed=1)
    monkeypatch.setattr(ade20k_module, "download_and_extract_archive", fake_download)
    assert len(ade20k_samples(tmp_path, "training", download=True)) == 1
    assert calls == [ade20k_module.ADE20K_URL]
    ade20k_samples(tmp_path, "training", download=True)
    assert len(calls) == 1  # present now: not fetched again


# --- label mapping ------------------------------------------------------------------------

def _sample_with_labels(tmp_path, kind, values):
    image = tmp_path / "x.jpg"
    Image.new("RGB", (values.shape[1], values.shape[0])).save(image)
    labels = tmp_path / "x.png"
    _save_png(labels, values, palette=kind == "voc")
    return SegSample("x", image, labels, kind)


def test_voc_labels_are_palette_indices_with_255_kept(tmp_path):
    values = np.array([[0, 1, 20], [255, 15, 0]], dtype=np.uint8)
    labels = load_labels(_sample_with_labels(tmp_path, "voc", values))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, values)


def test_sbd_labels_match_torchvision(trees):
    sample = sbd_samples(trees["sbd"], "val")[0]
    _, target = SBDataset(trees["sbd"], image_set="val", mode="segmentation")[0]
    np.testing.assert_array_equal(load_labels(sample), np.asarray(target))


def test_ade20k_labels_shift_down_and_other_is_ignored(tmp_path):
    values = np.array([[0, 1, 2], [150, 75, 0]], dtype=np.uint8)
    labels = load_labels(_sample_with_labels(tmp_path, "ade20k", values))
    np.testing.assert_array_equal(labels, [[IGNORE, 0, 1], [149, 74, IGNORE]])
    assert labels.dtype == np.uint8


@pytest.mark.parametrize("kind, bad", [("voc", 21), ("voc", 254), ("ade20k", 151)])
def test_out_of_range_label_names_the_file_and_value(tmp_path, kind, bad):
    sample = _sample_with_labels(tmp_path, kind, np.array([[0, bad], [1, 1]]))
    with pytest.raises(DatasetError, match=rf"{sample.labels}: label values {bad} outside"):
        load_labels(sample)


def test_rgb_label_image_is_rejected(tmp_path):
    sample = _sample_with_labels(tmp_path, "voc", np.zeros((2, 2)))
    Image.new("RGB", (2, 2)).save(sample.labels)
    with pytest.raises(DatasetError, match="mode RGB"):
        load_labels(sample)


# --- the dataset --------------------------------------------------------------------------

def test_segmentation_set_items_are_normalised_tensors(trees):
    samples = ade20k_samples(trees["ade20k"], "training")
    dataset = VocAdeSegmentation(samples, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert len(dataset) == len(samples) and dataset.num_classes == ADE20K_CLASSES
    image, labels = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert labels.shape == (32, 32) and labels.dtype == torch.int64
    assert -2.0 <= image.min() and image.max() <= 2.0  # (x - 0.5) / 0.25 for x in [0, 1]
    values = set(labels.unique().tolist())
    assert IGNORE in values and values - {IGNORE} <= set(range(150))


def test_offline_copies_are_fixed_by_seed(trees):
    samples = voc_sbd_train_samples(trees["voc"], trees["sbd"])[:3]
    first, again = (VocAdeSegmentation(samples, 24, *NO_NORMALISATION, augment="offline", seed=1) for _ in range(2))
    other = VocAdeSegmentation(samples, 24, *NO_NORMALISATION, augment="offline", seed=2)
    assert len(first) == 6 and first.names[3:] == [f"{s.name}.aug1" for s in samples]
    for index in range(3, 6):
        torch.testing.assert_close(first[index], again[index])
    assert not all(torch.equal(first[i][0], other[i][0]) for i in range(3, 6))
    torch.testing.assert_close(first[0], other[0])  # originals are untouched


def test_rotation_fills_the_labels_with_ignore(tmp_path):
    sample = _sample_with_labels(tmp_path, "voc", np.full((40, 40), 7))
    for seed in range(3):
        dataset = VocAdeSegmentation([sample], 32, *NO_NORMALISATION, augment="offline", seed=seed)
        original, copy = dataset[0][1], dataset[1][1]
        assert (original == 7).all()
        assert set(copy.unique().tolist()) == {7, IGNORE}
        assert (copy[[0, 0, -1, -1], [0, -1, 0, -1]] == IGNORE).all()


def test_mixing_voc_and_ade20k_is_refused(trees):
    with pytest.raises(ValueError, match="label spaces"):
        VocAdeSegmentation(voc_samples(trees["voc"])[:1] + ade20k_samples(trees["ade20k"])[:1], 32, *NO_NORMALISATION)


def test_cli_writes_the_chosen_kind(tmp_path, capsys):
    assert synthetic_main(["--kind", "sbd", "--root", str(tmp_path), "--num-images", "2", "--size", "16"]) == 0
    assert "2 sbd images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cls").iterdir()) == sorted(f"{voc_image_id(i)}.mat" for i in (1, 2))
