"""What the head-pretraining sets share (Pascal VOC with SBD in voc.py, ADE20K in ade20k.py): samples with the
kind of their label file, each kind's label reader, checked file lists, the dataset of their items (255 ignored)
and the source base that stores a spec's train / val lists as plain strings.

    from petseg.data.voc import voc_sbd_train_samples, voc_samples
    from petseg.data.pretraining import VocAdeSegmentation
    train = VocAdeSegmentation(voc_sbd_train_samples("data/voc", "data/sbd"), 256, mean, std, augment="offline")
    val = VocAdeSegmentation(voc_samples("data/voc", "val"), 256, mean, std)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .dataset import SegmentationDataset
from .files import load_image, open_decoded
from .normalisation import IMAGENET_MEAN, IMAGENET_STD
from .source import IGNORE, Classes, DatasetSource

_SHOWN = 5  # how many offending names or values an error message lists


@dataclass(frozen=True)
class SegSample:
    """One entry: image id, image path, label file path, and its kind ("voc", "sbd" or "ade20k")."""

    name: str
    image: Path
    labels: Path
    kind: str


@dataclass(frozen=True)
class LabelKind:
    """How one kind of label file is read: the label space it is in (SBD's is VOC's), that space's class count,
    and the reader returning training ids uint8 [H, W] (IGNORE not scored)."""

    space: str
    num_classes: int
    read: Callable[[SegSample], np.ndarray]


LABEL_KINDS: dict[str, LabelKind] = {}  # sample kind -> how it is read; each dataset's module adds its own


def shown(items: Sequence) -> str:
    """The first few items for an error message, and how many more there are."""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(str(item) for item in items[:_SHOWN]) + more


def require_dirs(folders: Iterable[Path], fix: str) -> None:
    """A DatasetError naming the first missing folder and `fix`, the way out."""
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing; {fix}", folder)


def listed_samples(images: Sequence[str], labels: Sequence[str], kind: str, fix: str) -> list[SegSample]:
    """Samples from torchvision's path lists, checking that every listed file exists."""
    samples = [SegSample(Path(image).stem, Path(image), Path(label), kind) for image, label in zip(images, labels)]
    missing = [path for s in samples for path in (s.image, s.labels) if not path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} listed file(s) are missing: {shown(missing)}; {fix}", missing[0])
    return samples


def label_png(path: Path) -> np.ndarray:
    """A label PNG's values; a file that is not an 8-bit palette or grayscale image is named."""
    image = open_decoded(path, "labels")
    if image.mode not in ("P", "L"):
        raise DatasetError(f"{path}: label image has mode {image.mode}; expected an 8-bit palette or grayscale "
                           "PNG of class ids. Restore it from the dataset archive", path)
    return np.asarray(image)


def check_values(path: Path, values: np.ndarray, valid: np.ndarray, meaning: str) -> None:
    """A DatasetError naming the file when its labels hold values outside `valid` (`meaning` says them)."""
    bad = np.setdiff1d(np.unique(values), valid)
    if bad.size:
        raise DatasetError(f"{path}: label values {shown(bad.tolist())} outside {meaning}; restore it from "
                           "the dataset archive or remove it", path)


def load_labels(sample: SegSample) -> np.ndarray:
    """Training ids uint8 [H, W] of a sample, as its kind's reader makes them (VOC/SBD 0..20, ADE20K k -> k-1)."""
    return LABEL_KINDS[sample.kind].read(sample)


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
    spaces = sorted({LABEL_KINDS[s.kind].space for s in samples})
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
        space = class_space(self.samples)
        self.num_classes = next(kind.num_classes for kind in LABEL_KINDS.values() if kind.space == space)

    def load_pair(self, sample: SegSample) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and training-id labels."""
        return load_pair(sample)


class PretrainingSource(DatasetSource):
    """A set that pretrains heads: fixed train / val lists, stored in the spec as plain strings so every trial
    trains on exactly the files the driver listed, and normalised with ImageNet's statistics."""

    study = False
    downloads = True

    def __init__(self, name: str, marker: str, root_help: str, num_classes: int):
        self.name, self.marker, self.root_help = name, marker, root_help
        self.class_names = tuple(str(i) for i in range(num_classes))  # the report shows no per-class names

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


