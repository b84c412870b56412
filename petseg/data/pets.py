"""Oxford-IIIT Pet for segmentation: find the files through torchvision, check them, split 50/25/25 and
serve them as a SegmentationDataset (trimaps: 1 pet, 2 background, 3 border -> classes 0, 1, 2)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import OxfordIIITPet

from ..disk import cached_json
from ..errors import DatasetError
from .dataset import SegmentationDataset
from .files import fingerprint, load_image, open_decoded
from .normalisation import compute_mean_std
from .source import Check, Classes, DatasetSource, register_source

CLASS_NAMES = ("pet", "background", "border")
NUM_CLASSES = 3
BACKGROUND = 1
LISTS = ("trainval", "test")  # the dataset's own lists
PARTS = ("train", "val", "test")  # our 50/25/25 split
LAYOUT = ("<root>/oxford-iiit-pet/images/*.jpg, <root>/oxford-iiit-pet/annotations/trimaps/*.png "
          "and <root>/oxford-iiit-pet/annotations/{trainval,test}.txt")
_TRIMAP_VALUES = np.array([1, 2, 3])  # on disk: pet, background, border -> class ids 0, 1, 2


@dataclass(frozen=True)
class Sample:
    """One dataset entry: its name (e.g. "Abyssinian_12"), image path and trimap path."""

    name: str
    image: Path
    trimap: Path

    @property
    def labels(self) -> Path:
        """The label file (the trimap), under the name every petseg sample type shares."""
        return self.trimap


def load_trimap(path: str | Path) -> np.ndarray:
    """Load a trimap as uint8 class ids [H, W]: 1 pet -> 0, 2 background -> 1, 3 border -> 2."""
    image = open_decoded(path, "trimap")
    values = np.asarray(image)
    if values.ndim != 2:
        raise DatasetError(f"{path}: trimap has {len(image.getbands())} channels (mode {image.mode}); "
                           "expected one channel with values 1 (pet), 2 (background), 3 (border). "
                           "Re-extract it from annotations.tar.gz or remove it", path)
    bad = np.setdiff1d(np.unique(values), _TRIMAP_VALUES)
    if bad.size:
        raise DatasetError(f"{path}: trimap has values {bad[:10].tolist()} outside 1 (pet), "
                           "2 (background), 3 (border); re-extract it from annotations.tar.gz "
                           "or remove it", path)
    return (values - 1).astype(np.uint8)


def load_sample(sample: Sample) -> tuple[Image.Image, np.ndarray]:
    """Load a sample's RGB image and class-id mask, checking that their sizes agree."""
    image, mask = load_image(sample.image), load_trimap(sample.trimap)
    if image.size != (mask.shape[1], mask.shape[0]):
        raise DatasetError(f"{sample.trimap}: trimap is {mask.shape[1]}x{mask.shape[0]} but its image "
                           f"{sample.image} is {image.size[0]}x{image.size[1]}; re-extract both or "
                           "remove them", sample.trimap)
    return image, mask


def _missing_tree_message(root: Path, cause: object) -> str:
    return (f"no usable Oxford-IIIT Pet tree under {root} ({cause}). Expected {LAYOUT}. Pass "
            "download=True (flag --download) with network access, or place the extracted "
            "images.tar.gz and annotations.tar.gz there")


def find_samples(root: str | Path, download: bool = False) -> dict[str, list[Sample]]:
    """List the "trainval" and "test" samples via torchvision's OxfordIIITPet (downloading if asked)."""
    root = Path(root)
    found: dict[str, list[Sample]] = {}
    for listing in LISTS:
        list_file = root / "oxford-iiit-pet" / "annotations" / f"{listing}.txt"
        try:
            pets = OxfordIIITPet(root, split=listing, target_types="segmentation", download=download)
        except (RuntimeError, OSError) as err:
            raise DatasetError(_missing_tree_message(root, err), root) from err
        except ValueError as err:  # torchvision unpacks each line into exactly four fields
            raise DatasetError(f"{list_file}: malformed line ({err}); each line must be "
                               "'<name> <class id> <species> <breed id>'. Re-extract "
                               "annotations.tar.gz", list_file) from err
        # torchvision 0.29.1 (pinned) keeps the paths in _images/_segs.
        found[listing] = [Sample(path.stem, path, seg) for path, seg in zip(pets._images, pets._segs)]
    trimap_dir = root / "oxford-iiit-pet" / "annotations" / "trimaps"
    if not trimap_dir.is_dir():
        raise DatasetError(_missing_tree_message(root, f"{trimap_dir} is missing"), trimap_dir)
    shared = {s.name for s in found["trainval"]} & {s.name for s in found["test"]}
    if shared:
        raise DatasetError(f"{root}: {len(shared)} names are in both trainval.txt and test.txt "
                           f"(e.g. {sorted(shared)[:3]}); a test image would leak into training. "
                           "Re-extract annotations.tar.gz", root)
    return found


def make_split(samples: dict[str, list[Sample]], seed: int = 0) -> dict:
    """Split 50/25/25: train = trainval; the test list, sorted then shuffled by seed, halved into val/test."""
    test_names = sorted(s.name for s in samples["test"])
    shuffled = [test_names[i] for i in np.random.default_rng(seed).permutation(len(test_names))]
    half = len(shuffled) // 2
    return {"seed": seed, "train": sorted(s.name for s in samples["trainval"]),
            "val": sorted(shuffled[:half]), "test": sorted(shuffled[half:])}


def save_split(split: dict, path: str | Path) -> Path:
    """Write a split (seed and the names of each part) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: split[key] for key in ("seed", *PARTS)}, indent=1) + "\n")
    return path


def split_samples(samples: dict[str, list[Sample]], split: dict, source: str | Path = "split"
                  ) -> dict[str, list[Sample]]:
    """Map a split's names to samples; unknown or shared names are a DatasetError naming source."""
    by_name = {s.name: s for listing in LISTS for s in samples[listing]}
    unknown = sorted({n for part in PARTS for n in split[part]} - by_name.keys())
    if unknown:
        raise DatasetError(f"{source}: {len(unknown)} names are not in the dataset (e.g. {unknown[:3]}); "
                           "it was made for another dataset tree. Delete it to make a new split", source)
    for first, second, both in overlaps(split):
        raise DatasetError(f"{source}: {len(both)} names are in both {first} and {second} "
                           f"(e.g. {both[:3]}); delete it to make a new split", source)
    return {part: [by_name[n] for n in split[part]] for part in PARTS}


def overlaps(split: dict) -> list[tuple[str, str, list[str]]]:
    """(part, later part, the names in both) for each pair of a split's parts that share names."""
    pairs = [(first, second) for i, first in enumerate(PARTS) for second in PARTS[i + 1:]]
    shared = [(first, second, sorted(set(split[first]) & set(split[second]))) for first, second in pairs]
    return [overlap for overlap in shared if overlap[2]]


def load_split(path: str | Path, samples: dict[str, list[Sample]] | None = None) -> dict:
    """Read a split saved by save_split; with samples, check its names are in that dataset."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
        valid = all(isinstance(split[p], list) and all(isinstance(n, str) for n in split[p]) for p in PARTS)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: cannot read split file ({err}); delete it to make a new split",
                           path) from err
    if not valid:
        raise DatasetError(f"{path}: not a split file (needs lists of names under "
                           f"{', '.join(PARTS)}); delete it to make a new split", path)
    if samples is not None:
        split_samples(samples, split, source=path)
    return split


def _scan(samples: Sequence[Sample]) -> dict:
    bad, problems = [], []
    for sample in samples:
        try:
            load_sample(sample)
        except DatasetError as err:
            bad.append(sample.name)
            problems.append([str(err.path), str(err)])
    return {"bad": bad, "problems": problems}


def scan_samples(samples: Sequence[Sample], cache_dir: str | Path | None = None
                 ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Fully load every sample; return (usable samples, [(file, message)] for the unusable ones)."""
    key = fingerprint(samples, "scan", with_trimaps=True)
    result = cached_json(cache_dir, f"scan-{key}.json", lambda: _scan(samples))
    bad = set(result["bad"])
    return [s for s in samples if s.name not in bad], [tuple(p) for p in result["problems"]]


def class_pixel_counts(samples: Sequence[Sample]) -> np.ndarray:
    """Pixels of each class (pet, background, border) over the samples' trimaps, at full size."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for sample in samples:
        counts += np.bincount(load_trimap(sample.trimap).ravel(), minlength=NUM_CLASSES)
    return counts


class PetSegmentation(SegmentationDataset):
    """Oxford-IIIT Pet items: (image float32 [3,S,S] normalised, mask int64 [S,S] of pet / background / border)."""

    mask_fill = BACKGROUND
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def load_pair(self, sample: Sample) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and trimap class ids."""
        return load_sample(sample)


def _resolve_split(samples: dict[str, list[Sample]], split: dict | str | Path | None, seed: int
                   ) -> dict[str, list[Sample]]:
    if split is None:
        return split_samples(samples, make_split(samples, seed))
    if isinstance(split, dict):
        return split_samples(samples, split)
    return split_samples(samples, load_split(split), source=split)


def _drop_unusable(parts: dict[str, list[Sample]], cache_dir: str | Path | None, skip_bad: bool
                   ) -> dict[str, list[Sample]]:
    everything = [s for part in PARTS for s in parts[part]]
    good, problems = scan_samples(everything, cache_dir)
    if problems and not skip_bad:
        listing = "\n  ".join(message for _, message in problems)
        raise DatasetError(f"{len(problems)} unusable file(s); fix them or pass skip_bad=True:\n  {listing}",
                           problems[0][0])
    for _, message in problems:
        print(f"warning: skipping unusable sample: {message}", file=sys.stderr)
    usable = {s.name for s in good}
    return {part: [s for s in parts[part] if s.name in usable] for part in PARTS}


def build_datasets(root: str | Path, size: int, split: dict | str | Path | None,
                   augment: str | None = "offline", seed: int = 0,
                   cache_dir: str | Path | None = None, skip_bad: bool = False) -> dict[str, PetSegmentation]:
    """Train/val/test datasets (augmentation on train only), normalised with train's mean/std.

    split: a dict from make_split/load_split, a split JSON path, or None (make_split with seed).
    Every file is checked first (cached in cache_dir): unusable ones raise, or with skip_bad are
    skipped with a warning on stderr.
    """
    samples = find_samples(root)
    parts = _drop_unusable(_resolve_split(samples, split, seed), cache_dir, skip_bad)
    mean, std = compute_mean_std(parts["train"], size, cache_dir)
    return {part: PetSegmentation(parts[part], size, mean, std, seed=seed,
                                  augment=augment if part == "train" else None)
            for part in PARTS}


class PetsSource(DatasetSource):
    """Oxford-IIIT Pet as torchvision lays it out: its trainval list is train, its test list halved into val / test
    by a seed."""

    name = "pets"
    class_names = CLASS_NAMES
    mask_fill = BACKGROUND
    marker = "oxford-iiit-pet/annotations/test.txt"  # the generator writes the list files last
    downloads = True
    root_help = "the folder holding oxford-iiit-pet/ (add --download to fetch it)"

    def find(self, root: Path, download: bool = False) -> tuple[dict[str, list[Sample]], list]:
        """The trainval and test lists' samples (a dict: the split needs to know which list each is in)."""
        return find_samples(root, download=download), []

    def load_pair(self, sample: Sample, classes: Classes) -> tuple[Image.Image, np.ndarray]:
        """The sample's RGB image and trimap class ids."""
        return load_sample(sample)

    def load_mask(self, sample: Sample, classes: Classes) -> np.ndarray:
        """The sample's trimap class ids."""
        return load_trimap(sample.trimap)

    def download(self, root: Path) -> None:
        """Fetch Oxford-IIIT Pet through torchvision."""
        find_samples(root, download=True)

    def generate(self, root: Path, num_images: int, size: int, seed: int) -> None:
        """Write a generated Oxford-IIIT Pet tree."""
        from ..synthetic import write_dataset

        write_dataset(root, num_images, size, seed)

    def split(self, root: Path, samples: dict[str, list[Sample]], seed: int, ratio: Sequence[float]) -> dict:
        """The 50/25/25 split (the ratio does not apply: the dataset's own lists decide)."""
        return make_split(samples, seed)

    def select(self, samples: dict[str, list[Sample]], split: dict, source: str | Path = "split"
               ) -> dict[str, list[Sample]]:
        """part -> samples of the split's names."""
        return split_samples(samples, split, source)

    def scan(self, samples: Sequence[Sample], classes: Classes, cache_dir: str | Path | None = None) -> list:
        """(file, message) for every unusable sample."""
        return scan_samples(samples, cache_dir)[1]

    def dataset(self, spec, samples: Sequence[Sample], augment: str | None) -> PetSegmentation:
        """One part's PetSegmentation."""
        return PetSegmentation(samples, size=spec.size, mean=spec.mean, std=spec.std, augment=augment, seed=spec.seed,
                               decoded_cache_dir=spec.decoded_cache_dir)

    def check(self, root: Path, seed: int, ratio: Sequence[float], download: bool = False) -> Check:
        """The split of every listed name, the usable samples' class pixel counts and every problem."""
        samples = find_samples(root, download=download)
        good, problems = scan_samples(samples["trainval"] + samples["test"])
        return Check(make_split(samples, seed), CLASS_NAMES, class_pixel_counts(good), problems, len(good))

    def image_counts(self, root: str | Path | None, generated: int, seed: int, ratio: Sequence[float]
                     ) -> tuple[int, int]:
        """(train, val): a generated tree's (alternate images go to trainval, test is halved), the tree's lists,
        or the real dataset's (3,680 trainval, 3,669 test)."""
        if generated:
            return (generated + 1) // 2, generated // 4
        if root and Path(root).expanduser().is_dir():
            found = find_samples(Path(root).expanduser())
            return len(found["trainval"]), len(found["test"]) // 2
        return 3680, 3669 // 2


register_source(PetsSource())
