"""Pascal VOC 2012 segmentation (+ SBD's extra training masks), one head-pretraining source: find the files via
torchvision, read VOC's palette PNGs and SBD's .mat class maps as training ids 0..20 (255 void, not scored)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets import SBDataset, VOCSegmentation
from torchvision.datasets.utils import download_url, verify_str_arg
from torchvision.datasets.voc import DATASET_YEAR_DICT

from ..errors import DatasetError
from .pretraining import (LABEL_KINDS, LabelKind, PretrainingSource, SegSample, check_values, label_png, listed_samples,
                          require_dirs)
from .source import IGNORE, Tree, register_source

VOC_CLASSES = 21  # background and 20 object classes; SBD uses the same
_VOC_YEARS = tuple(str(year) for year in range(2007, 2013))
_VOC_VALID = np.append(np.arange(VOC_CLASSES), IGNORE)


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
    require_dirs([base / "JPEGImages", base / "SegmentationClass"], fix)
    return listed_samples(voc.images, voc.masks, "voc", fix)


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
    require_dirs([root / "img", root / "cls"], archive_fix)
    return listed_samples(sbd.images, sbd.masks, "sbd", archive_fix)


def voc_sbd_train_samples(voc_root: str | Path, sbd_root: str | Path,
                          sbd_image_sets: Sequence[str] = ("train", "val")) -> list[SegSample]:
    """VOC train + SBD lists minus every VOC val id, VOC masks first; the default is the usual 10,582."""
    voc = voc_samples(voc_root, "train")
    held_out = {s.name for s in voc_samples(voc_root, "val")}
    by_name = {s.name: s for image_set in sbd_image_sets for s in sbd_samples(sbd_root, image_set)}
    by_name.update({s.name: s for s in voc})  # VOC's own masks win where both have the image
    return [by_name[name] for name in sorted(by_name.keys() - held_out)]


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


def read_voc_labels(sample: SegSample) -> np.ndarray:
    """VOC's palette PNG or SBD's .mat as training ids 0..20 (255 kept)."""
    values = _sbd_mat(sample.labels) if sample.kind == "sbd" else label_png(sample.labels)
    check_values(sample.labels, values, _VOC_VALID, "0..20 and 255 (void)")
    return values.astype(np.uint8)


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


LABEL_KINDS["voc"] = LABEL_KINDS["sbd"] = LabelKind("voc", VOC_CLASSES, read_voc_labels)
register_source(VocSource("voc", "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
                          "the folder holding VOCdevkit/ (add --download to fetch it)", VOC_CLASSES))
