"""The data spec a search hands to every trial: one typed record, built by one function for a study (Oxford-IIIT
Pet or a folder dataset) and for head pretraining alike, and making sure its dataset exists on whichever node
reads it.

Study specs (Pets, folder) carry a split of names and the class names; VOC / ADE20K specs carry the train / val
sample lists as plain strings, so every trial trains on exactly the files the driver listed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..disk import file_lock
from ..errors import DatasetError
from . import folder
from .dataset import SegmentationDataset
from .files import verify_contents
from .normalisation import IMAGENET_MEAN, IMAGENET_STD, compute_mean_std
from .pets import CLASS_NAMES as PETS_CLASS_NAMES
from .pets import NUM_CLASSES as PETS_CLASSES
from .pets import PetSegmentation, find_samples, make_split, scan_samples, split_samples
from .voc_ade import NUM_CLASSES as SEG_CLASSES
from .voc_ade import (SegSample, VocAdeSegmentation, ade20k_samples, sbd_samples, voc_samples,
                      voc_sbd_train_samples)

KINDS = ("pets", "folder", "voc", "ade20k")
STUDY_KINDS = ("pets", "folder")  # what a study compares on; VOC / ADE20K pretrain heads
# A file or folder each tree has once it is complete (the generators write the list files last).
MARKERS = {
    "pets": Path("oxford-iiit-pet") / "annotations" / "test.txt",
    "folder": Path("classes.txt"),
    "voc": Path("VOCdevkit") / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt",
    "sbd": Path("val.txt"),
    "ade20k": Path("ADEChallengeData2016") / "annotations" / "validation",
}
DOWNLOADERS = {
    "pets": lambda root: find_samples(root, download=True),
    "voc": lambda root: voc_samples(root, "train", download=True),
    "sbd": lambda root: sbd_samples(root, "train", download=True),
    "ade20k": lambda root: ade20k_samples(root, download=True),
}


@dataclass(frozen=True)
class DataSpec:
    """Which dataset tree(s) a search reads, which samples make each part, and how items are made."""

    kind: str  # "pets" or "folder" (a study), "voc" or "ade20k" (head pretraining)
    root: str
    size: int
    augment: str  # "offline", "online" or "none"
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    split: dict | None = None  # pets / folder: the seed and the names of train / val / test
    samples: dict | None = None  # VOC / ADE20K: part -> [[name, image, labels, kind], ...]
    sbd_root: str | None = None  # VOC: SBD's tree, whose images join VOC train
    download: bool = False
    synthetic: dict | None = None  # generator arguments when each node generates the tree itself
    decoded_cache_dir: str | None = None  # where images are decoded once (None: every access decodes)
    verify_data: bool = False  # fingerprints hash file contents too (--verify-data), in every trial's process
    class_names: tuple[str, ...] = ()  # index -> name, as the report's per-class columns and legends say them
    ignore: int | None = None  # folder: the mask value classes.txt marks as not scored (read as 255)

    def to_json(self) -> dict:
        """A plain JSON-safe dict (saved with the study and in every best checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> "DataSpec":
        """The spec a to_json dict describes; specs saved before kinds existed are Pets specs."""
        values = dict(values)
        values.setdefault("kind", "pets")
        if "num_classes" not in values:  # folder specs always carry theirs
            values["num_classes"] = PETS_CLASSES if values["kind"] == "pets" else SEG_CLASSES[values["kind"]]
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
        """The parts its datasets come in: train / val / test for a study, train / val for VOC / ADE20K."""
        return ("train", "val", "test") if self.kind in STUDY_KINDS else ("train", "val")

    @property
    def pretraining(self) -> bool:
        """Whether it is a head-pretraining set (VOC / ADE20K), where a random-init head is the point."""
        return self.kind not in STUDY_KINDS

    @property
    def classes(self) -> folder.Classes:
        """Its class names and ignored mask value, as a folder dataset reads masks with them."""
        return folder.Classes(self.class_names, self.ignore)


def default_class_names(kind: str, num_classes: int) -> tuple[str, ...]:
    """Pets' pet / background / border; a pretraining set's class ids as names (its report shows none)."""
    return PETS_CLASS_NAMES if kind == "pets" else tuple(str(i) for i in range(num_classes))


def class_count(kind: str, root: str | Path | None, generated: bool) -> int:
    """How many classes a study's dataset has, known before its data is prepared (for --dry-run's counts): Pets'
    three, a folder's classes.txt, or the generated folder's classes."""
    if kind != "folder":
        return PETS_CLASSES
    if generated:
        from ..synthetic.folder import FOLDER_CLASSES  # what the generator will write

        return len(FOLDER_CLASSES)
    return len(folder.read_classes(Path(root or ".").expanduser()).names)


def make_data_spec(kind: str, root: str | Path, *, size: int, augment: str, seed: int, download: bool = False,
                   synthetic: dict | None = None, sbd_root: str | Path | None = None,
                   cache_dir: str | Path | None = None, decoded_cache: bool = False,
                   split_ratio: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> DataSpec:
    """The spec of a dataset tree: generated or downloaded if asked, its parts listed, study files (Pets, folder)
    checked and normalised with the training set's statistics (VOC / ADE20K with ImageNet's).

    A tree with the wrong layout or an unusable file raises DatasetError naming it; `split_ratio` cuts a folder
    dataset without its own splits/.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}")
    num_classes = PETS_CLASSES if kind in STUDY_KINDS else SEG_CLASSES[kind]
    spec = DataSpec(kind=kind, root=str(root), size=size, augment=augment, seed=seed, mean=(), std=(),
                    num_classes=num_classes, class_names=default_class_names(kind, num_classes),
                    sbd_root=str(sbd_root) if sbd_root else None, download=bool(download), synthetic=synthetic,
                    decoded_cache_dir=str(cache_dir) if decoded_cache and cache_dir else None)
    ensure_dataset(spec)
    if kind not in STUDY_KINDS:
        parts = _seg_parts(kind, root, sbd_root)
        samples = {part: [[s.name, str(s.image), str(s.labels), s.kind] for s in listed]
                   for part, listed in parts.items()}
        return dataclasses.replace(spec, samples=samples, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if kind == "folder":
        classes = folder.read_classes(root)
        found, problems = folder.find_samples(root)
        split = folder.make_split(root, found, seed, split_ratio)
        parts = folder.split_samples(found, split)
        problems += folder.scan_samples([s for part in parts.values() for s in part], classes, cache_dir)
        spec = dataclasses.replace(spec, num_classes=len(classes.names), class_names=classes.names,
                                   ignore=classes.ignore)
    else:
        found = find_samples(root, download=download)
        split = make_split(found, seed)
        parts = split_samples(found, split)
        _, problems = scan_samples([s for part in parts.values() for s in part], cache_dir)
    if problems:
        listing = "\n  ".join(message for _, message in problems)
        raise DatasetError(f"{len(problems)} unusable file(s) in {root}; fix or remove them "
                           f"(python -m petseg.data --dataset {kind} --root {root} lists them):\n  {listing}",
                           problems[0][0])
    mean, std = compute_mean_std(parts["train"], size, cache_dir)
    return dataclasses.replace(spec, split=split, mean=tuple(mean), std=tuple(std))


def _trees(spec: DataSpec) -> list[tuple[str, Path]]:
    """(tree kind, root) of every dataset tree the spec reads: VOC with SBD is two trees."""
    trees = [(spec.kind, Path(spec.root))]
    if spec.sbd_root:
        trees.append(("sbd", Path(spec.sbd_root)))
    return trees


def ensure_dataset(spec: DataSpec) -> Path:
    """Generate or download the spec's dataset trees this node lacks, once per node (a file lock)."""
    if not (spec.synthetic or spec.download):
        return Path(spec.root)  # a given tree: its readers name whatever is missing
    for kind, root in _trees(spec):
        if (root / MARKERS[kind]).exists():
            continue
        with file_lock(root.parent / f".{root.name}.petseg-lock"):
            if (root / MARKERS[kind]).exists():  # another process made it while we waited
                continue
            if spec.synthetic:
                from .. import synthetic  # generated trees stand in for real ones in tests and smoke runs

                synthetic.GENERATORS[kind](root, **spec.synthetic)
            else:
                DOWNLOADERS[kind](root)
    return Path(spec.root)


def _seg_parts(kind: str, root: str | Path, sbd_root: str | Path | None = None) -> dict[str, list[SegSample]]:
    """Train / val samples for head pretraining: VOC train (+ SBD minus VOC val) / VOC val; ADE20K's splits."""
    if kind == "voc":
        train = voc_sbd_train_samples(root, sbd_root) if sbd_root else voc_samples(root, "train")
        return {"train": train, "val": voc_samples(root, "val")}
    return {"train": ade20k_samples(root, "training"), "val": ade20k_samples(root, "validation")}


def datasets_from_spec(spec: DataSpec) -> dict[str, SegmentationDataset]:
    """The spec's datasets, part -> dataset (augmentation on train only): Pets or folder train / val / test,
    VOC / ADE20K train / val (255 ignored)."""
    verify_contents(spec.verify_data)
    ensure_dataset(spec)
    augment = None if spec.augment == "none" else spec.augment
    common = dict(size=spec.size, mean=spec.mean, std=spec.std, seed=spec.seed,
                  decoded_cache_dir=spec.decoded_cache_dir)
    if spec.kind == "folder":
        parts = folder.split_samples(folder.find_samples(spec.root)[0], spec.split)
        return {part: folder.FolderSegmentation(parts[part], spec.classes, augment=augment if part == "train" else None,
                                                **common)
                for part in spec.parts}
    if spec.kind != "pets":
        return {part: VocAdeSegmentation([SegSample(name, Path(image), Path(labels), kind)
                                          for name, image, labels, kind in spec.samples[part]],
                                         augment=augment if part == "train" else None, **common)
                for part in spec.parts}
    parts = split_samples(find_samples(spec.root), spec.split)
    return {part: PetSegmentation(parts[part], augment=augment if part == "train" else None, **common)
            for part in spec.parts}
