"""Any segmentation dataset in one plain folder layout: find its files, read its classes, split it, check every
pair and serve it as a SegmentationDataset.

    DIR/images/<stem>.{jpg,jpeg,png,webp}
    DIR/masks/<stem>.png            one channel of class indices, or a palette PNG (its indices are the classes)
    DIR/classes.txt                 one class name per line (index = line number); optional line "ignore: 255"
    DIR/splits/{train,val,test}.txt optional: stems, one per line; otherwise a seeded split by split_ratio
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .files import load_image, open_decoded
from .pets import PARTS, overlaps
from .source import IGNORE, Classes, DatasetSource, Pair, ratio_split, register_source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
LAYOUT = ("DIR/images/<stem>.{jpg,jpeg,png,webp}, DIR/masks/<stem>.png and DIR/classes.txt "
          "(optional DIR/splits/{train,val,test}.txt)")
MAX_CLASSES = 255  # masks are 8-bit and IGNORE (255) marks pixels that are not scored
_IGNORE_LINE = re.compile(r"^ignore\s*:\s*(\S+)$", re.IGNORECASE)


FolderSample = Pair  # a folder's samples are plain pairs: stem, image path, mask path


def read_classes(root: str | Path) -> Classes:
    """The classes of a folder dataset from DIR/classes.txt; a missing or malformed file is named with the fix."""
    path = Path(root) / "classes.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing; write one class name per line (line 1 is class 0), and an optional "
                           "line 'ignore: 255' for the mask value that is not scored", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text ({err}); write one class name per line", path) from err
    while lines and not lines[-1].strip():
        lines.pop()
    names, ignore = [], None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        found = _IGNORE_LINE.match(text)
        if found:
            if ignore is not None or not found.group(1).isdigit() or int(found.group(1)) > 255:
                raise DatasetError(f"{path}, line {number}: {text!r}; give one line 'ignore: N' with N in 0..255", path)
            ignore = int(found.group(1))
        elif not text:
            raise DatasetError(f"{path}, line {number} is empty; every line before the last names a class (its index "
                               "is its position), so remove the empty line", path)
        else:
            names.append(text)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DatasetError(f"{path}: class names {duplicated} appear twice; give each class one line", path)
    if not 2 <= len(names) <= MAX_CLASSES:
        raise DatasetError(f"{path} names {len(names)} classes; a segmentation needs 2 to {MAX_CLASSES}", path)
    if ignore is not None and ignore < len(names):
        raise DatasetError(f"{path}: 'ignore: {ignore}' is the index of class {names[ignore]!r}; the ignored value "
                           f"must be {len(names)} or more (255 is usual)", path)
    return Classes(tuple(names), ignore)


def _stems(folder: Path, suffixes: Sequence[str]) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """stem -> file of the folder's files with one of `suffixes`, and a problem for each stem found twice."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            found.setdefault(path.stem, []).append(path)
    problems = [(str(paths[0]), f"{', '.join(map(str, paths))}: {len(paths)} files share the stem {stem!r}; keep one")
                for stem, paths in found.items() if len(paths) > 1]
    return {stem: paths[0] for stem, paths in found.items()}, problems


def find_samples(root: str | Path) -> tuple[list[FolderSample], list[tuple[str, str]]]:
    """Every image with its mask, by stem, and (file, message) for each image without a mask, mask without an
    image, or stem used twice; a missing images/ or masks/ folder raises DatasetError."""
    root = Path(root)
    for folder in (root / "images", root / "masks"):
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing: no folder dataset under {root}. Expected {LAYOUT}", folder)
    images, problems = _stems(root / "images", IMAGE_SUFFIXES)
    masks, mask_problems = _stems(root / "masks", (".png",))
    problems += mask_problems
    problems += [(str(images[s]), f"{images[s]}: image without mask (expected {root / 'masks' / s}.png)")
                 for s in sorted(images.keys() - masks.keys())]
    problems += [(str(masks[s]), f"{masks[s]}: mask without image (expected {root / 'images' / s}.jpg, .jpeg, .png "
                  "or .webp)") for s in sorted(masks.keys() - images.keys())]
    samples = [FolderSample(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
    return samples, problems


def load_mask(path: str | Path, classes: Classes) -> np.ndarray:
    """A mask as uint8 class ids [H, W], its ignored value as IGNORE (255); values outside the classes raise."""
    image = open_decoded(path, "mask")
    if image.mode not in ("L", "P", "I", "I;16"):
        raise DatasetError(f"{path}: mask is mode {image.mode} ({len(image.getbands())} channels); save class "
                           "indices as a single-channel or palette PNG", path)
    values = np.asarray(image)
    allowed = np.arange(len(classes.names))
    if classes.ignore is not None:
        allowed = np.append(allowed, classes.ignore)
    bad = np.setdiff1d(np.unique(values), allowed)
    if bad.size:
        ignored = f" and {classes.ignore} (ignored)" if classes.ignore is not None else ""
        raise DatasetError(f"{path}: mask values {bad[:10].tolist()} are outside the classes 0..{len(classes.names) - 1}"
                           f"{ignored} of classes.txt; fix the mask or add the classes", path)
    mask = values.astype(np.uint8)
    if classes.ignore is not None and classes.ignore != IGNORE:
        mask = np.where(values == classes.ignore, IGNORE, mask).astype(np.uint8)
    return mask


def load_pair(sample: FolderSample, classes: Classes) -> tuple[Image.Image, np.ndarray]:
    """A sample's RGB image and class-id mask, checking that their sizes agree."""
    image, mask = load_image(sample.image), load_mask(sample.labels, classes)
    if image.size != (mask.shape[1], mask.shape[0]):
        raise DatasetError(f"{sample.labels}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {sample.image} "
                           f"is {image.size[0]}x{image.size[1]}; masks must match their images pixel for pixel",
                           sample.labels)
    return image, mask


def _listed_split(root: Path, stems: set[str]) -> dict | None:
    folder = root / "splits"
    if not folder.is_dir():
        return None
    split = {}
    for part in PARTS:
        path = folder / f"{part}.txt"
        if not path.is_file():
            raise DatasetError(f"{path} is missing; {folder} needs train.txt, val.txt and test.txt (stems, one per "
                               "line), or remove the folder for a seeded split", path)
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        unknown = sorted(set(names) - stems)
        if unknown:
            raise DatasetError(f"{path}: {len(unknown)} stems have no image and mask pair (e.g. {unknown[:3]}); "
                               "list stems of DIR/images and DIR/masks", path)
        split[part] = sorted(set(names))
    for first, second, both in overlaps(split):
        raise DatasetError(f"{folder}: {len(both)} stems are in both {first}.txt and {second}.txt "
                           f"(e.g. {both[:3]}); a test image would leak into training", folder)
    return {"seed": None, "source": "splits", **split}


def make_split(root: str | Path, samples: Sequence[FolderSample], seed: int, ratio: Sequence[float]) -> dict:
    """The split: DIR/splits/*.txt when present, else the sorted stems shuffled by `seed` and cut by `ratio`
    (train, val, test fractions)."""
    stems = sorted(s.name for s in samples)
    listed = _listed_split(Path(root), set(stems))
    if listed is not None:
        return listed
    return ratio_split(root, stems, seed, ratio, fix="write DIR/splits/{train,val,test}.txt")


def split_samples(samples: Sequence[FolderSample], split: dict, source: str | Path = "split"
                  ) -> dict[str, list[FolderSample]]:
    """Map a split's stems to samples; a stem the folder lacks is a DatasetError naming source."""
    by_name = {s.name: s for s in samples}
    unknown = sorted({n for part in PARTS for n in split[part]} - by_name.keys())
    if unknown:
        raise DatasetError(f"{source}: {len(unknown)} stems are not in the folder (e.g. {unknown[:3]}); it was made "
                           "for another dataset folder", source)
    return {part: [by_name[n] for n in split[part]] for part in PARTS}


class FolderSource(DatasetSource):
    """The folder layout: classes from classes.txt, split by splits/ or by a seeded ratio."""

    name = "folder"
    marker = "classes.txt"  # the generator writes it last
    root_help = "the folder holding images/, masks/ and classes.txt"

    def classes(self, root: str | Path | None) -> Classes:
        """What DIR/classes.txt says."""
        return read_classes(Path(root or ".").expanduser())

    def class_count(self, root: str | Path | None, generated: bool) -> int:
        """classes.txt's count, or the generator's before it writes the folder."""
        if generated:
            from ..synthetic.folder import FOLDER_CLASSES

            return len(FOLDER_CLASSES)
        return len(self.classes(root).names)

    def find(self, root: Path, download: bool = False) -> tuple[list[FolderSample], list[tuple[str, str]]]:
        """Every image with its mask, and each unpaired or duplicated file."""
        return find_samples(root)

    def load_pair(self, sample: FolderSample, classes: Classes) -> tuple[Image.Image, np.ndarray]:
        """The pair, its ignored value read as IGNORE."""
        return load_pair(sample, classes)

    def load_mask(self, sample: FolderSample, classes: Classes) -> np.ndarray:
        """The mask alone."""
        return load_mask(sample.labels, classes)

    def generate(self, root: Path, num_images: int, size: int, seed: int) -> None:
        """Write a generated folder dataset of shapes."""
        from ..synthetic import write_folder

        write_folder(root, num_images, size, seed)

    def split(self, root: Path, samples: Sequence[FolderSample], seed: int, ratio: Sequence[float]) -> dict:
        """DIR/splits/ when present, else the seeded ratio split."""
        return make_split(root, samples, seed, ratio)

    def select(self, samples: Sequence[FolderSample], split: dict, source: str | Path = "split"
               ) -> dict[str, list[FolderSample]]:
        """part -> the split's pairs."""
        return split_samples(samples, split, source)


register_source(FolderSource())
