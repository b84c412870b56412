"""Datasets as sources behind one small protocol, and the registry that finds them by name.

A source says how to read one dataset layout: where its samples are, its classes, how its samples are split
into parts, how its items are made, and how its files are checked. Everything else (the data spec, the checker
CLI, the cache plan, inference from a checkpoint) asks the registry, so adding a dataset is one module that
calls `register_source` when imported; the module may live outside petseg. A simple source sets `name` and
`class_names` and writes `find` and `load_pair`; the defaults split its samples by a seed and check every pair.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..disk import cached_json
from ..errors import DatasetError
from .dataset import SegmentationDataset
from .files import fingerprint, load_image, open_decoded
from .normalisation import compute_mean_std

if TYPE_CHECKING:
    from .spec import DataSpec

IGNORE = 255  # the mask value no score counts; what every source's items hold for unscored pixels
STUDY_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Classes:
    """A dataset's class names (index = class id) and the mask value on disk that is not scored, if any."""

    names: tuple[str, ...]
    ignore: int | None = None


@dataclass(frozen=True)
class Pair:
    """One sample: its name, image file and mask file."""

    name: str
    image: Path
    labels: Path


@dataclass(frozen=True)
class Tree:
    """One folder a spec reads: its root, the file it has once complete, and how to download or generate it."""

    root: Path
    marker: str
    download: Callable[[Path], object] | None = None
    generate: Callable[..., object] | None = None  # (root, num_images, size, seed)


@dataclass(frozen=True)
class Check:
    """What the checker prints for a tree: its split, class names, class pixel counts, problems, usable pairs."""

    split: dict
    names: tuple[str, ...]
    counts: np.ndarray
    problems: list[tuple[str, str]]
    usable: int


class DatasetSource:
    """One dataset layout. Subclasses set `name` and write `find` and `load_pair` (and `class_names`, or
    `classes` when the tree names them); every other member has a default that suits a plain study dataset."""

    name: str  # the --dataset value, and DataSpec.kind
    study: bool = True  # compared by a study (train / val / test); False: a set that pretrains heads (train / val)
    class_names: tuple[str, ...] = ()  # fixed class names; sources whose tree names them override classes()
    ignore: int | None = None  # a mask value on disk that is not scored; load_pair reads it as IGNORE
    mask_fill: int = IGNORE  # what rotation leaves in the mask's corners
    marker: str | None = None  # a file a complete tree has (None: the root itself); trees are generated or
    # downloaded where it is missing
    downloads: bool = False  # whether --download can fetch the tree
    root_help: str = "the folder holding the dataset"  # what --data-root names, for messages
    joins_sbd: bool = False  # whether an SBD tree (--sbd-root, DataSpec.sbd_root) joins its training set

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts its datasets come in."""
        return STUDY_PARTS if self.study else ("train", "val")

    def classes(self, root: str | Path | None) -> Classes:
        """Its classes (the tree under `root` may name them)."""
        return Classes(tuple(self.class_names), self.ignore)

    def class_count(self, root: str | Path | None, generated: bool) -> int:
        """How many classes it has before its data is prepared (--dry-run); `generated`: the tree is not yet
        written."""
        return len(self.classes(root).names)

    def find(self, root: Path, download: bool = False) -> tuple[Sequence, list[tuple[str, str]]]:
        """Every sample under root (each has .name, .image and .labels), and (file, message) for each file that
        cannot make a sample; a tree that is not there raises DatasetError naming what is missing."""
        raise NotImplementedError(f"dataset source {self.name!r} does not say where its samples are (find)")

    def load_pair(self, sample, classes: Classes) -> tuple[Image.Image, np.ndarray]:
        """A sample's RGB image and its mask of class ids [H, W] uint8 (IGNORE where not scored), at full size."""
        raise NotImplementedError(f"dataset source {self.name!r} does not say how to read a sample (load_pair)")

    def load_mask(self, sample, classes: Classes) -> np.ndarray:
        """A sample's class ids alone (the checker's pixel counts)."""
        return self.load_pair(sample, classes)[1]

    def download(self, root: Path) -> None:
        """Fetch the tree into root (sources with `downloads` write this)."""
        raise DatasetError(f"--download: dataset {self.name!r} cannot be downloaded; place it under {root}", root)

    def generate(self, root: Path, num_images: int, size: int, seed: int) -> None:
        """Write a generated stand-in tree under root (for tests and smoke runs)."""
        raise DatasetError(f"dataset {self.name!r} has no generator; pass --data-root with {self.root_help}", root)

    def trees(self, spec: DataSpec) -> list[Tree]:
        """Every tree the spec reads (one, unless a source joins several)."""
        return [Tree(Path(spec.root), self.marker or "", self.download, self.generate)]

    def split(self, root: Path, samples: Sequence, seed: int, ratio: Sequence[float]) -> dict:
        """The names of each part: the sorted names shuffled by seed and cut by ratio (train, val, test)."""
        return ratio_split(root, [s.name for s in samples], seed, ratio)

    def select(self, samples: Sequence, split: dict, source: str | Path = "split") -> dict[str, list]:
        """part -> samples of a split's names; a name the tree lacks is a DatasetError naming `source`."""
        by_name = {s.name: s for s in samples}
        unknown = sorted({n for part in self.parts for n in split[part]} - by_name.keys())
        if unknown:
            raise DatasetError(f"{source}: {len(unknown)} names are not in the dataset (e.g. {unknown[:3]}); it was "
                               "made for another dataset tree", source)
        return {part: [by_name[n] for n in split[part]] for part in self.parts}

    def scan(self, samples: Sequence, classes: Classes, cache_dir: str | Path | None = None) -> list[tuple[str, str]]:
        """(file, message) for each sample that cannot be used: unreadable, sizes that differ, mask values outside
        the classes. Cached in cache_dir by the files' fingerprint."""
        key = fingerprint(samples, [f"{self.name}-scan", list(classes.names), classes.ignore], with_trimaps=True)
        scanned = cached_json(cache_dir, f"scan-{key}.json", lambda: {"problems": [
            [str(err.path), str(err)] for err in (self._problem(s, classes) for s in samples) if err]})
        return [tuple(p) for p in scanned["problems"]]

    def _problem(self, sample, classes: Classes) -> DatasetError | None:
        try:
            image, mask = self.load_pair(sample, classes)
        except DatasetError as err:
            return err
        if image.size != (mask.shape[1], mask.shape[0]):
            return DatasetError(f"{sample.labels}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                f"{sample.image} is {image.size[0]}x{image.size[1]}; masks must match their images "
                                "pixel for pixel", sample.labels)
        bad = np.setdiff1d(np.unique(mask), [*range(len(classes.names)), IGNORE])
        if bad.size:
            return DatasetError(f"{sample.labels}: mask values {bad[:10].tolist()} are outside the classes "
                                f"0..{len(classes.names) - 1} (and {IGNORE}, not scored); fix the mask or the "
                                "classes", sample.labels)
        return None

    def pixel_counts(self, samples: Sequence, classes: Classes) -> np.ndarray:
        """Pixels of each class over the samples' masks, at full size (unscored pixels left out)."""
        counts = np.zeros(len(classes.names), dtype=np.int64)
        for sample in samples:
            mask = self.load_mask(sample, classes)
            counts += np.bincount(mask[mask != IGNORE].ravel(), minlength=len(classes.names))[:len(classes.names)]
        return counts

    def prepare(self, spec: DataSpec, cache_dir: str | Path | None, split_ratio: Sequence[float]) -> DataSpec:
        """The spec with its classes, split and training statistics, once every file is checked."""
        root = Path(spec.root)
        classes = self.classes(root)
        found, problems = self.find(root, spec.download)
        split = self.split(root, found, spec.seed, split_ratio)
        parts = self.select(found, split)
        problems = list(problems) + self.scan([s for part in parts.values() for s in part], classes, cache_dir)
        raise_problems(problems, spec)
        mean, std = compute_mean_std(parts["train"], spec.size, cache_dir)
        return dataclasses.replace(spec, split=split, mean=tuple(mean), std=tuple(std), num_classes=len(classes.names),
                                   class_names=tuple(classes.names), ignore=classes.ignore)

    def part_samples(self, spec: DataSpec, source: str | Path = "split") -> dict[str, list]:
        """part -> the samples the spec lists, read again from its root (in any process)."""
        return self.select(self.find(Path(spec.root))[0], spec.split, source)

    def dataset(self, spec: DataSpec, samples: Sequence, augment: str | None) -> SegmentationDataset:
        """One part's dataset, resized and normalised as the spec says."""
        return SourceDataset(self, spec.classes, samples, size=spec.size, mean=spec.mean, std=spec.std,
                             augment=augment, seed=spec.seed, decoded_cache_dir=spec.decoded_cache_dir)

    def check(self, root: Path, seed: int, ratio: Sequence[float], download: bool = False) -> Check:
        """Every file of the tree checked, for `python -m petseg.data`: the usable pairs' split and class pixel
        counts, and every problem (a split the usable pairs cannot fill is one more)."""
        classes = self.classes(root)
        samples, problems = self.find(root, download)
        problems = list(problems) + self.scan(samples, classes)
        bad = {path for path, _ in problems}
        good = [s for s in samples if str(s.labels) not in bad and str(s.image) not in bad]
        try:
            split = self.split(root, good, seed, ratio)
        except DatasetError as err:
            split = {}
            problems.append((str(err.path), str(err)))
        return Check(split, classes.names, self.pixel_counts(good, classes), problems, len(good))

    def image_counts(self, root: str | Path | None, generated: int, seed: int, ratio: Sequence[float]
                     ) -> tuple[int, int]:
        """(train, val) images before the data is prepared (the cache plan): `generated` images cut by ratio, or
        the tree's own split where it can be read now (0, 0 otherwise: its problems are named at the start)."""
        if generated:
            val, test = round(generated * ratio[1]), round(generated * ratio[2])
            return generated - val - test, val
        root = Path(root or ".").expanduser()
        try:
            split = self.split(root, self.find(root)[0], seed, ratio)
        except DatasetError:
            return 0, 0
        return len(split["train"]), len(split["val"])


class SourceDataset(SegmentationDataset):
    """A source's items: its `load_pair` resized, normalised and augmented as every petseg dataset is."""

    def __init__(self, source: DatasetSource, classes: Classes, samples: Sequence, **kwargs):
        self.source, self.classes = source, classes
        self.mask_fill = source.mask_fill
        self.num_classes = len(classes.names)
        super().__init__(samples, **kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The source's class names, index = class id."""
        return tuple(self.classes.names)

    def load_pair(self, sample) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and class ids, as its source reads them."""
        return self.source.load_pair(sample, self.classes)


def ratio_split(root: str | Path, names: Sequence[str], seed: int, ratio: Sequence[float], fix: str = "") -> dict:
    """The sorted names shuffled by seed and cut by ratio (train, val, test); a part left empty raises
    DatasetError naming root (`fix`: one more way out to suggest)."""
    names = sorted(names)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    val, test = round(len(names) * ratio[1]), round(len(names) * ratio[2])
    train = len(names) - val - test
    if min(train, val, test) < 1:
        raise DatasetError(f"{root}: {len(names)} image and mask pairs cut by split_ratio {list(ratio)} leave "
                           f"{train} / {val} / {test} (train / val / test); every part needs an image: add images"
                           f"{', change split_ratio or ' + fix if fix else ' or change split_ratio'}", root)
    return {"seed": seed, "source": "split_ratio", "train": sorted(shuffled[:train]),
            "val": sorted(shuffled[train:train + val]), "test": sorted(shuffled[train + val:])}


def load_image_and_mask(image: str | Path, mask: str | Path) -> tuple[Image.Image, np.ndarray]:
    """An RGB image and a single-channel mask PNG's values, both fully decoded (errors name the file)."""
    return load_image(image), np.asarray(open_decoded(mask, "mask"))


def raise_problems(problems: Sequence[tuple[str, str]], spec: DataSpec) -> None:
    """Raise one DatasetError listing every unusable file of the spec's tree, if any."""
    if problems:
        listing = "\n  ".join(message for _, message in problems)
        raise DatasetError(f"{len(problems)} unusable file(s) in {spec.root}; fix or remove them "
                           f"(python -m petseg.data --dataset {spec.kind} --root {spec.root} lists them):\n  {listing}",
                           problems[0][0])


_SOURCES: dict[str, DatasetSource] = {}


def register_source(source: DatasetSource) -> DatasetSource:
    """Make `source` known by its name everywhere (data spec, --dataset, checker, report, inference); returns it.

    Registering a name again replaces it only with a source of the same class (a module imported twice)."""
    if not isinstance(source, DatasetSource) or not isinstance(getattr(source, "name", None), str) or not source.name:
        raise TypeError(f"register_source takes a DatasetSource instance with a name, got {source!r}")
    known = _SOURCES.get(source.name)
    if known is not None and type(known).__qualname__ != type(source).__qualname__:
        raise ValueError(f"dataset {source.name!r} is already registered by {type(known).__module__}."
                         f"{type(known).__qualname__}; give {type(source).__qualname__} another name")
    _SOURCES[source.name] = source
    return source


def get_source(name: str) -> DatasetSource:
    """The source registered as `name`; an unknown name is a DatasetError listing the known ones."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise DatasetError(f"dataset {name!r} is not registered; known: {', '.join(sorted(_SOURCES))}. A dataset "
                           "defined outside petseg is known once its module (which calls "
                           "petseg.data.register_source) is imported") from None


def study_kinds() -> tuple[str, ...]:
    """The names of the registered datasets a study can compare on, now."""
    return tuple(name for name, source in _SOURCES.items() if source.study)


def pretraining_kinds() -> tuple[str, ...]:
    """The names of the registered datasets that pretrain heads, now."""
    return tuple(name for name, source in _SOURCES.items() if not source.study)
