"""ADE20K scene parsing, one head-pretraining source: find ADEChallengeData2016's images and annotations, read
the annotations as training ids (class k -> k - 1, 0 "other" -> 255, not scored)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_and_extract_archive, verify_str_arg

from ..errors import DatasetError
from .pretraining import (LABEL_KINDS, LabelKind, PretrainingSource, SegSample, check_values, label_png, require_dirs,
                          shown)
from .source import IGNORE, register_source

ADE20K_CLASSES = 150
ADE20K_SPLITS = ("training", "validation")
_ADE20K_DIR = "ADEChallengeData2016"
ADE20K_URL = f"http://data.csail.mit.edu/places/ADEchallenge/{_ADE20K_DIR}.zip"
# 0 ("other") is ignored, class k is trained as k - 1 (values above 150 are rejected first).
_ADE20K_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
_ADE20K_TO_TRAIN[1:ADE20K_CLASSES + 1] = np.arange(ADE20K_CLASSES)


def ade20k_samples(root: str | Path, split: str = "training", download: bool = False) -> list[SegSample]:
    """Samples of ADE20K scene parsing (<root>/ADEChallengeData2016), image and annotation paired by stem."""
    split = verify_str_arg(split, "split", ADE20K_SPLITS)
    root = Path(root)
    base = root / _ADE20K_DIR
    if download and not base.is_dir():
        download_and_extract_archive(ADE20K_URL, str(root))
    images_dir, labels_dir = base / "images" / split, base / "annotations" / split
    require_dirs([base], f"pass download=True (needs network), or extract {_ADE20K_DIR}.zip in {root} "
                         f"so that {base} exists")
    require_dirs([images_dir, labels_dir], f"extract {_ADE20K_DIR}.zip in {root} again")
    images = {path.stem: path for path in images_dir.glob("*.jpg")}
    labels = {path.stem: path for path in labels_dir.glob("*.png")}
    unpaired = sorted([images[n] for n in images.keys() - labels.keys()]
                      + [labels[n] for n in labels.keys() - images.keys()])
    if unpaired:
        raise DatasetError(f"{len(unpaired)} file(s) have no image/annotation partner: {shown(unpaired)}; "
                           "restore the partner from the archive or delete them", unpaired[0])
    if not images:
        raise DatasetError(f"{images_dir} has no .jpg images; extract the archive there again", images_dir)
    return [SegSample(name, images[name], labels[name], "ade20k") for name in sorted(images)]


def read_ade20k_labels(sample: SegSample) -> np.ndarray:
    """An ADE20K annotation as training ids: k -> k - 1, 0 ("other") -> 255."""
    values = label_png(sample.labels)
    check_values(sample.labels, values, np.arange(ADE20K_CLASSES + 1), "0 (other) .. 150")
    return _ADE20K_TO_TRAIN[values]


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


LABEL_KINDS["ade20k"] = LabelKind("ade20k", ADE20K_CLASSES, read_ade20k_labels)
register_source(Ade20kSource("ade20k", f"{_ADE20K_DIR}/annotations/validation",
                             f"the folder holding {_ADE20K_DIR}/ (add --download to fetch it)", ADE20K_CLASSES))
