"""Pascal VOC 2012 (+SBD) and ADE20K scene parsing for pretraining segmentation heads: find the files,
map the labels to training ids (IGNORE = 255 is not scored), resize, normalise and augment.

    from petseg.data.voc_ade import voc_sbd_train_samples, voc_samples, VocAdeSegmentation
    train = VocAdeSegmentation(voc_sbd_train_samples("data/voc", "data/sbd"), 256, mean, std, augment="offline")
    val = VocAdeSegmentation(voc_samples("data/voc", "val"), 256, mean, std)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import SBDataset, VOCSegmentation
from torchvision.datasets.utils import download_and_extract_archive, download_url, verify_str_arg
from torchvision.datasets.voc import DATASET_YEAR_DICT

from ..errors import DatasetError
from .dataset import SegmentationDataset
from .files import load_image, open_decoded
from .normalisation import IMAGENET_MEAN, IMAGENET_STD
from .source import IGNORE, Classes, DatasetSource, Tree, register_source

NUM_CLASSES = {"voc": 21, "ade20k": 150}
CLASS_SPACE = {"voc": "voc", "sbd": "voc", "ade20k": "ade20k"}  # SBD uses VOC's 21 classes
ADE20K_SPLITS = ("training", "validation")
_ADE20K_DIR = "ADEChallengeData2016"
ADE20K_URL = f"http://data.csail.mit.edu/places/ADEchallenge/{_ADE20K_DIR}.zip"
_VOC_YEARS = tuple(str(year) for year in range(2007, 2013))
_SHOWN = 5  # how many offending names or values an error message lists
# ADE20K: 0 ("other") is ignored, class k is trained as k - 1 (values above 150 are rejected first).
_ADE20K_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
_ADE20K_TO_TRAIN[1:NUM_CLASSES["ade20k"] + 1] = np.arange(NUM_CLASSES["ade20k"])


@dataclass(frozen=True)
class SegSample:
    """One entry: image id, image path, label file path, and its kind ("voc", "sbd" or "ade20k")."""

    name: str
    image: Path
    labels: Path
    kind: str


def _shown(items: Sequence) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(str(item) for item in items[:_SHOWN]) + more


def _require_dirs(folders: Iterable[Path], fix: str) -> None:
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing; {fix}", folder)


def _listed_samples(images: Sequence[str], labels: Sequence[str], kind: str, fix: str) -> list[SegSample]:
    """Samples from torchvision's path lists, checking that every listed file exists."""
    samples = [SegSample(Path(image).stem, Path(image), Path(label), kind) for image, label in zip(images, labels)]
    missing = [path for s in samples for path in (s.image, s.labels) if not path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} listed file(s) are missing: {_shown(missing)}; {fix}", missing[0])
    return samples


def voc_samples(root: str | Path, image_set: str = "train", download: bool = False,
                year: str = "2012") -> list[SegSample]:
    """Samples of a Pascal VOC segmentation list ("train", "val", "trainval") via torchvision."""
    root = Path(root)
    info = DATASET_YEAR_DICT[verify_str_arg(year, "year", _VOC_YEARS)]
    base = root / info["base_dir"]
    fix = f"delete {base} and pass download=True, or extract {info['filename']} in {root} again"
    try:
        # torchvision re-extracts the 2 GB archive on every download=True call: only when missing.
        voc = VOCSegmentation(root, year=year, image_set=image_set, download=download and not base.is_dir())
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetError(f"{base} is missing: no Pascal VOC {year} tree under {root}. Pass download=True "
                           f"(needs network), or extract {info['filename']} in {root} so that {base} exists",
                           base) from err
    except FileNotFoundError as err:  # the image-set list
        raise DatasetError(f"{err.filename} is missing; {fix}", err.filename) from err
    _require_dirs([base / "JPEGImages", base / "SegmentationClass"], fix)
    return _listed_samples(voc.images, voc.masks, "voc", fix)


def sbd_samples(root: str | Path, image_set: str = "train", download: bool = False) -> list[SegSample]:
    """Samples of an SBD list ("train", "val", "train_noval") via torchvision's SBDataset."""
    root = Path(root)
    extract = f"extract benchmark.tgz and move benchmark_RELEASE/dataset/{{img,cls,train.txt,val.txt}} into {root}"
    archive_fix = f"delete {root / 'img'} and {root / 'cls'} and pass download=True, or {extract}"
    list_file = root / f"{image_set}.txt"
    # torchvision moves the archive's folders into root and fails if they are already there.
    fetch_archive = download and not (root / "cls").is_dir()
    if download and not fetch_archive and image_set == "train_noval" and not list_file.is_file():
        download_url(SBDataset.voc_train_url, str(root), SBDataset.voc_split_filename, SBDataset.voc_split_md5)
    try:
        sbd = SBDataset(root, image_set=image_set, mode="segmentation", download=fetch_archive)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetError(f"{root} is missing: no SBD tree there. Pass download=True (needs network), "
                           f"or {extract}", root) from err
    except FileNotFoundError as err:  # the image-set list
        fix = archive_fix
        if image_set == "train_noval":
            fix = (f"train_noval.txt is not in benchmark.tgz: download=True fetches it from "
                   f"{SBDataset.voc_train_url} (failing since 2024, torchvision issue 8471), or use "
                   "image_set='train' and drop the VOC val ids, as voc_sbd_train_samples does")
        raise DatasetError(f"{err.filename} is missing; {fix}", err.filename) from err
    _require_dirs([root / "img", root / "cls"], archive_fix)
    return _listed_samples(sbd.images, sbd.masks, "sbd", archive_fix)


def voc_sbd_train_samples(voc_root: str | Path, sbd_root: str | Path,
                          sbd_image_sets: Sequence[str] = ("train", "val")) -> list[SegSample]:
    """VOC train + SBD lists minus every VOC val id, VOC masks first; the default is the usual 10,582."""
    voc = voc_samples(voc_root, "train")
    held_out = {s.name for s in voc_samples(voc_root, "val")}
    by_name = {s.name: s for image_set in sbd_image_sets for s in sbd_samples(sbd_root, image_set)}
    by_name.update({s.name: s for s in voc})  # VOC's own masks win where both have the image
    return [by_name[name] for name in sorted(by_name.keys() - held_out)]


def ade20k_samples(root: str | Path, split: str = "training", download: bool = False) -> list[SegSample]:
    """Samples of ADE20K scene parsing (<root>/ADEChallengeData2016), image and annotation paired by stem."""
    split = verify_str_arg(split, "split", ADE20K_SPLITS)
    root = Path(root)
    base = root / _ADE20K_DIR
    if download and not base.is_dir():
        download_and_extract_archive(ADE20K_URL, str(root))
    images_dir, labels_dir = base / "images" / split, base / "annotations" / split
    _require_dirs([base], f"pass download=True (needs network), or extract {_ADE20K_DIR}.zip in {root} "
                          f"so that {base} exists")
    _require_dirs([images_dir, labels_dir], f"extract {_ADE20K_DIR}.zip in {root} again")
    images = {path.stem: path for path in images_dir.glob("*.jpg")}
    labels = {path.stem: path for path in labels_dir.glob("*.png")}
    unpaired = sorted([images[n] for n in images.keys() - labels.keys()]
                      + [labels[n] for n in labels.keys() - images.keys()])
    if unpaired:
        raise DatasetError(f"{len(unpaired)} file(s) have no image/annotation partner: {_shown(unpaired)}; "
                           "restore the partner from the archive or delete them", unpaired[0])
    if not images:
        raise DatasetError(f"{images_dir} has no .jpg images; extract the archive there again", images_dir)
    return [SegSample(name, images[name], labels[name], "ade20k") for name in sorted(images)]


def _label_png(path: Path) -> np.ndarray:
    image = open_decoded(path, "labels")
    if image.mode not in ("P", "L"):
        raise DatasetError(f"{path}: label image has mode {image.mode}; expected an 8-bit palette or grayscale "
                           "PNG of class ids. Restore it from the dataset archive", path)
    return np.asarray(image)


def _sbd_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:  # the structure torchvision's SBDataset reads
        values = np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError, MatReadError) as err:
        raise DatasetError(f"{path}: cannot read GTcls.Segmentation ({err!r}); restore it from benchmark.tgz",
                           path) from err
    if values.ndim != 2 or values.dtype.kind not in "ui":
        raise DatasetError(f"{path}: GTcls.Segmentation is {values.dtype} {values.shape}; expected a 2-D "
                           "integer class map. Restore it from benchmark.tgz", path)
    return values


def _check_values(path: Path, values: np.ndarray, valid: np.ndarray, meaning: str) -> None:
    bad = np.setdiff1d(np.unique(values), valid)
    if bad.size:
        raise DatasetError(f"{path}: label values {_shown(bad.tolist())} outside {meaning}; restore it from "
                           "the dataset archive or remove it", path)


_VOC_VALID = np.append(np.arange(NUM_CLASSES["voc"]), IGNORE)


def load_labels(sample: SegSample) -> np.ndarray:
    """Training ids uint8 [H, W]: VOC/SBD 0..20 (255 kept), ADE20K k -> k-1 with 0 ("other") -> 255."""
    if sample.kind == "ade20k":
        values = _label_png(sample.labels)
        _check_values(sample.labels, values, np.arange(NUM_CLASSES["ade20k"] + 1), "0 (other) .. 150")
        return _ADE20K_TO_TRAIN[values]
    values = _sbd_mat(sample.labels) if sample.kind == "sbd" else _label_png(sample.labels)
    _check_values(sample.labels, values, _VOC_VALID, "0..20 and 255 (void)")
    return values.astype(np.uint8)


def load_pair(sample: SegSample) -> tuple[Image.Image, np.ndarray]:
    """A sample's RGB image and training-id labels, checking that their sizes agree."""
    image, labels = load_image(sample.image), load_labels(sample)
    if image.size != (labels.shape[1], labels.shape[0]):
        raise DatasetError(f"{sample.labels}: labels are {labels.shape[1]}x{labels.shape[0]} but the image "
                           f"{sample.image} is {image.size[0]}x{image.size[1]}; restore both from the "
                           "dataset archive or remove them", sample.labels)
    return image, labels


def class_space(samples: Sequence[SegSample]) -> str:
    """The one label space ("voc" or "ade20k") the samples share; mixing spaces is a ValueError."""
    spaces = sorted({CLASS_SPACE[s.kind] for s in samples})
    if len(spaces) != 1:
        raise ValueError(f"samples must all be VOC/SBD or all ADE20K; got label spaces {spaces or 'none'}")
    return spaces[0]


class VocAdeSegmentation(SegmentationDataset):
    """VOC / SBD / ADE20K items: (image float32 [3,S,S] normalised, labels int64 [S,S]), 255 ignored.

    Rotation fills the labels' corners with IGNORE rather than a class.
    """

    mask_fill = IGNORE

    def __init__(self, samples: Sequence[SegSample], size: int, mean: Sequence[float], std: Sequence[float],
                 augment: str | None = None, seed: int = 0, decoded_cache_dir: str | Path | None = None):
        super().__init__(samples, size, mean, std, augment=augment, seed=seed, decoded_cache_dir=decoded_cache_dir)
        self.num_classes = NUM_CLASSES[class_space(self.samples)]

    def load_pair(self, sample: SegSample) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and training-id labels."""
        return load_pair(sample)


class PretrainingSource(DatasetSource):
    """A set that pretrains heads: fixed train / val lists, stored in the spec as plain strings so every trial
    trains on exactly the files the driver listed, and normalised with ImageNet's statistics."""

    study = False
    downloads = True

    def __init__(self, name: str, marker: str, root_help: str):
        self.name, self.marker, self.root_help = name, marker, root_help
        self.class_names = tuple(str(i) for i in range(NUM_CLASSES[name]))  # the report shows no per-class names

    def listed(self, spec) -> dict[str, list[SegSample]]:
        """part -> the samples of the spec's trees."""
        raise NotImplementedError

    def prepare(self, spec, cache_dir, split_ratio):
        """The spec with its train / val sample lists and ImageNet's statistics."""
        samples = {part: [[s.name, str(s.image), str(s.labels), s.kind] for s in listed]
                   for part, listed in self.listed(spec).items()}
        return dataclasses.replace(spec, samples=samples, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def part_samples(self, spec, source="split") -> dict[str, list[SegSample]]:
        """part -> the samples the spec lists."""
        return {part: [SegSample(name, Path(image), Path(labels), kind) for name, image, labels, kind in listed]
                for part, listed in spec.samples.items()}

    def dataset(self, spec, samples: Sequence[SegSample], augment: str | None) -> VocAdeSegmentation:
        """One part's VocAdeSegmentation (IGNORE not scored)."""
        return VocAdeSegmentation(samples, size=spec.size, mean=spec.mean, std=spec.std, augment=augment,
                                  seed=spec.seed, decoded_cache_dir=spec.decoded_cache_dir)

    def load_pair(self, sample: SegSample, classes: Classes) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and training-id labels."""
        return load_pair(sample)


class VocSource(PretrainingSource):
    """Pascal VOC 2012: VOC train (+ SBD minus VOC val when the spec has an SBD root) / VOC val."""

    joins_sbd = True

    def trees(self, spec) -> list[Tree]:
        """VOC's tree, and SBD's when the spec joins it."""
        from ..synthetic import write_sbd, write_voc

        trees = [Tree(Path(spec.root), self.marker, lambda root: voc_samples(root, "train", download=True),
                      write_voc)]
        if spec.sbd_root:
            trees.append(Tree(Path(spec.sbd_root), "val.txt", lambda root: sbd_samples(root, "train", download=True),
                              write_sbd))
        return trees

    def listed(self, spec) -> dict[str, list[SegSample]]:
        """VOC train (+ SBD minus VOC val) / VOC val."""
        train = voc_sbd_train_samples(spec.root, spec.sbd_root) if spec.sbd_root else voc_samples(spec.root, "train")
        return {"train": train, "val": voc_samples(spec.root, "val")}


class Ade20kSource(PretrainingSource):
    """ADE20K scene parsing: its training / validation splits."""

    def download(self, root: Path) -> None:
        """Fetch ADE20K's archive."""
        ade20k_samples(root, download=True)

    def generate(self, root: Path, num_images: int, size: int, seed: int) -> None:
        """Write a generated ADE20K tree."""
        from ..synthetic import write_ade20k

        write_ade20k(root, num_images, size, seed)

    def listed(self, spec) -> dict[str, list[SegSample]]:
        """ADE20K training / validation."""
        return {"train": ade20k_samples(spec.root, "training"), "val": ade20k_samples(spec.root, "validation")}


register_source(VocSource("voc", "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
                          "the folder holding VOCdevkit/ (add --download to fetch it)"))
register_source(Ade20kSource("ade20k", f"{_ADE20K_DIR}/annotations/validation",
                             f"the folder holding {_ADE20K_DIR}/ (add --download to fetch it)"))
