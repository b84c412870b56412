"""The data spec a study hands to every trial, and making sure its dataset exists on this node."""
from __future__ import annotations

from pathlib import Path

from .filelock import file_lock
from .data import PetSegmentation, find_samples, split_samples
from .synthetic import write_dataset

LIST_FILE = Path("oxford-iiit-pet") / "annotations" / "test.txt"


def ensure_dataset(spec: dict) -> Path:
    """Generate or download the spec's dataset if this node lacks it, once per node (a file lock)."""
    root = Path(spec["root"])
    if (root / LIST_FILE).is_file():
        return root
    with file_lock(root.parent / f".{root.name}.petseg-lock"):
        if (root / LIST_FILE).is_file():  # another process made it while we waited
            return root
        if spec.get("synthetic"):
            write_dataset(root, **spec["synthetic"])
        elif spec.get("download"):
            find_samples(root, download=True)
    return root


def datasets_from_spec(spec: dict) -> dict[str, PetSegmentation]:
    """Train/val/test datasets from a data spec (root, split, size, statistics, augmentation)."""
    parts = split_samples(find_samples(ensure_dataset(spec)), spec["split"])
    augment = None if spec["augment"] == "none" else spec["augment"]
    return {part: PetSegmentation(parts[part], spec["size"], spec["mean"], spec["std"], seed=spec["seed"],
                                  augment=augment if part == "train" else None,
                                  decoded_cache_dir=spec.get("decoded_cache_dir"))
            for part in ("train", "val", "test")}
