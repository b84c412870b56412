"""The data spec a search hands to every trial, and making sure its dataset exists on this node.

A spec's "kind" is "pets" (the study; the default when absent), "voc" or "ade20k" (head pretraining).
Pets specs carry a root and a split of names; VOC / ADE20K specs carry their roots and the train / val
sample lists as plain strings, so every trial trains on exactly the files the driver listed.
"""
from __future__ import annotations

from pathlib import Path

from .data import CLASS_NAMES, PetSegmentation, find_samples, split_samples
from .filelock import file_lock
from .segdata import (SegmentationSet, SegSample, ade20k_samples, sbd_samples, voc_samples,
                      voc_sbd_train_samples)
from .synthetic import write_dataset
from .synthetic_seg import write_ade20k, write_sbd, write_voc

# A file or folder each tree has once it is complete (the generators write the list files last).
MARKERS = {
    "pets": Path("oxford-iiit-pet") / "annotations" / "test.txt",
    "voc": Path("VOCdevkit") / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt",
    "sbd": Path("val.txt"),
    "ade20k": Path("ADEChallengeData2016") / "annotations" / "validation",
}
GENERATORS = {"pets": write_dataset, "voc": write_voc, "sbd": write_sbd, "ade20k": write_ade20k}
DOWNLOADERS = {
    "pets": lambda root: find_samples(root, download=True),
    "voc": lambda root: voc_samples(root, "train", download=True),
    "sbd": lambda root: sbd_samples(root, "train", download=True),
    "ade20k": lambda root: ade20k_samples(root, download=True),
}


def spec_kind(spec: dict) -> str:
    """The spec's dataset kind: "pets" (also when the spec predates kinds), "voc" or "ade20k"."""
    return spec.get("kind", "pets")


def spec_num_classes(spec: dict) -> int:
    """How many classes the spec's labels have (pets: 3)."""
    return spec.get("num_classes", len(CLASS_NAMES))


def _trees(spec: dict) -> list[tuple[str, Path]]:
    """(tree kind, root) of every dataset tree the spec reads: VOC with SBD is two trees."""
    trees = [(spec_kind(spec), Path(spec["root"]))]
    if spec.get("sbd_root"):
        trees.append(("sbd", Path(spec["sbd_root"])))
    return trees


def ensure_dataset(spec: dict) -> Path:
    """Generate or download the spec's dataset trees this node lacks, once per node (a file lock)."""
    if not (spec.get("synthetic") or spec.get("download")):
        return Path(spec["root"])  # a given tree: its readers name whatever is missing
    for kind, root in _trees(spec):
        if (root / MARKERS[kind]).exists():
            continue
        with file_lock(root.parent / f".{root.name}.petseg-lock"):
            if (root / MARKERS[kind]).exists():  # another process made it while we waited
                continue
            if spec.get("synthetic"):
                GENERATORS[kind](root, **spec["synthetic"])
            else:
                DOWNLOADERS[kind](root)
    return Path(spec["root"])


def seg_parts(kind: str, root: str | Path, sbd_root: str | Path | None = None) -> dict[str, list[SegSample]]:
    """Train / val samples for head pretraining: VOC train (+ SBD minus VOC val) / VOC val; ADE20K's splits.

    A root with the wrong layout raises petseg.data.DatasetError naming the missing folder or file.
    """
    if kind == "voc":
        train = voc_sbd_train_samples(root, sbd_root) if sbd_root else voc_samples(root, "train")
        return {"train": train, "val": voc_samples(root, "val")}
    if kind == "ade20k":
        return {"train": ade20k_samples(root, "training"), "val": ade20k_samples(root, "validation")}
    raise ValueError(f"kind={kind!r}: head pretraining data is 'voc' or 'ade20k'")


def samples_to_json(samples: list[SegSample]) -> list[list[str]]:
    """Samples as [name, image, labels, kind] strings, for a JSON spec."""
    return [[s.name, str(s.image), str(s.labels), s.kind] for s in samples]


def _samples_from_json(rows: list[list[str]]) -> list[SegSample]:
    return [SegSample(name, Path(image), Path(labels), kind) for name, image, labels, kind in rows]


def datasets_from_spec(spec: dict) -> dict[str, PetSegmentation | SegmentationSet]:
    """Datasets from a data spec: pets train/val/test; VOC / ADE20K train/val (255 = ignored)."""
    ensure_dataset(spec)
    augment = None if spec["augment"] == "none" else spec["augment"]
    if spec_kind(spec) != "pets":
        return {part: SegmentationSet(_samples_from_json(spec["samples"][part]), spec["size"], spec["mean"],
                                      spec["std"], augment=augment if part == "train" else None, seed=spec["seed"])
                for part in ("train", "val")}
    parts = split_samples(find_samples(spec["root"]), spec["split"])
    return {part: PetSegmentation(parts[part], spec["size"], spec["mean"], spec["std"], seed=spec["seed"],
                                  augment=augment if part == "train" else None,
                                  decoded_cache_dir=spec.get("decoded_cache_dir"))
            for part in ("train", "val", "test")}
