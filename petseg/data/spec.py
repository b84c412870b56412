"""The data spec a search hands to every trial: one typed record, built by one function for a study and for
head pretraining alike from the dataset's registered source, and making sure its dataset exists on whichever node
reads it.

Study specs (Pets, folder, ...) carry a split of names and the class names; pretraining specs (VOC / ADE20K) carry
the train / val sample lists as plain strings, so every trial trains on exactly the files the driver listed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..disk import file_lock
from .dataset import SegmentationDataset
from .files import verify_contents
from .source import Classes, get_source


@dataclass(frozen=True)
class DataSpec:
    """Which dataset tree(s) a search reads, which samples make each part, and how items are made."""

    kind: str  # the registered source's name: "pets", "folder" (a study), "voc", "ade20k" (head pretraining), ...
    root: str
    size: int
    augment: str  # "offline", "online" or "none"
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    split: dict | None = None  # a study's: the seed and the names of train / val / test
    samples: dict | None = None  # pretraining (VOC / ADE20K): part -> [[name, image, labels, kind], ...]
    sbd_root: str | None = None  # VOC: SBD's tree, whose images join VOC train
    download: bool = False
    synthetic: dict | None = None  # generator arguments when each node generates the tree itself
    decoded_cache_dir: str | None = None  # where images are decoded once (None: every access decodes)
    verify_data: bool = False  # fingerprints hash file contents too (--verify-data), in every trial's process
    class_names: tuple[str, ...] = ()  # index -> name, as the report's per-class columns and legends say them
    ignore: int | None = None  # the mask value on disk that is not scored (read as 255), e.g. a folder's classes.txt

    def to_json(self) -> dict:
        """A plain JSON-safe dict (saved with the study and in every best checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> "DataSpec":
        """The spec a to_json dict describes; specs saved before kinds existed are Pets specs."""
        values = dict(values)
        values.setdefault("kind", "pets")
        if "num_classes" not in values:  # only specs of sources with fixed classes were saved without it
            values["num_classes"] = len(get_source(values["kind"]).class_names)
        if not values.get("class_names"):
            values["class_names"] = default_class_names(values["kind"], values["num_classes"])
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in values.items() if k in known})
        return dataclasses.replace(spec, mean=tuple(spec.mean), std=tuple(spec.std),
                                   class_names=tuple(spec.class_names))

    def decoded_in(self, cache_dir: str | Path) -> "DataSpec":
        """The same samples with images decoded under `cache_dir` where decoding is cached at all (a resumed
        study's --cache-dir)."""
        return dataclasses.replace(self, decoded_cache_dir=str(cache_dir) if self.decoded_cache_dir else None)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts its datasets come in: train / val / test for a study, train / val for pretraining."""
        return get_source(self.kind).parts

    @property
    def pretraining(self) -> bool:
        """Whether it is a head-pretraining set (VOC / ADE20K), where a random-init head is the point."""
        return not get_source(self.kind).study

    @property
    def classes(self) -> Classes:
        """Its class names and ignored mask value, as its source reads masks with them."""
        return Classes(self.class_names, self.ignore)


def default_class_names(kind: str, num_classes: int) -> tuple[str, ...]:
    """The source's fixed class names (Pets' pet / background / border), else class ids as names."""
    names = tuple(get_source(kind).class_names)
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


def class_count(kind: str, root: str | Path | None, generated: bool) -> int:
    """How many classes a study's dataset has, known before its data is prepared (for --dry-run's counts)."""
    return get_source(kind).class_count(root, generated)


def make_data_spec(kind: str, root: str | Path, *, size: int, augment: str, seed: int, download: bool = False,
                   synthetic: dict | None = None, sbd_root: str | Path | None = None,
                   cache_dir: str | Path | None = None, decoded_cache: bool = False,
                   split_ratio: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> DataSpec:
    """The spec of a dataset tree: generated or downloaded if asked, its parts listed by its source, study files
    checked and normalised with the training set's statistics (pretraining sets with ImageNet's).

    A tree with the wrong layout or an unusable file raises DatasetError naming it; `split_ratio` cuts a dataset
    without its own split (a folder without splits/).
    """
    source = get_source(kind)
    num_classes = len(source.class_names)
    spec = DataSpec(kind=kind, root=str(root), size=size, augment=augment, seed=seed, mean=(), std=(),
                    num_classes=num_classes, class_names=default_class_names(kind, num_classes),
                    sbd_root=str(sbd_root) if sbd_root else None, download=bool(download), synthetic=synthetic,
                    decoded_cache_dir=str(cache_dir) if decoded_cache and cache_dir else None)
    ensure_dataset(spec)
    return source.prepare(spec, cache_dir, split_ratio)


def ensure_dataset(spec: DataSpec) -> Path:
    """Generate or download the spec's dataset trees this node lacks, once per node (a file lock)."""
    if not (spec.synthetic or spec.download):
        return Path(spec.root)  # a given tree: its readers name whatever is missing
    for tree in get_source(spec.kind).trees(spec):
        if (tree.root / tree.marker).exists():
            continue
        with file_lock(tree.root.parent / f".{tree.root.name}.petseg-lock"):
            if (tree.root / tree.marker).exists():  # another process made it while we waited
                continue
            if spec.synthetic:  # generated trees stand in for real ones in tests and smoke runs
                tree.generate(tree.root, **spec.synthetic)
            else:
                tree.download(tree.root)
    return Path(spec.root)


def datasets_from_spec(spec: DataSpec) -> dict[str, SegmentationDataset]:
    """The spec's datasets, part -> dataset (augmentation on train only), as its source makes them."""
    verify_contents(spec.verify_data)
    ensure_dataset(spec)
    source = get_source(spec.kind)
    augment = None if spec.augment == "none" else spec.augment
    parts = source.part_samples(spec)
    return {part: source.dataset(spec, parts[part], augment if part == "train" else None) for part in spec.parts}
