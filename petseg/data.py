"""Oxford-IIIT Pet for segmentation: find the files through torchvision, check them, split 50/25/25,
resize, normalise and augment.

Check a whole dataset tree (prints split sizes and class pixel shares, exits 1 if a file is unusable):

    python -m petseg.data --root data [--download] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import OxfordIIITPet
from torchvision.transforms import v2

CLASS_NAMES = ("pet", "background", "border")
NUM_CLASSES = 3
BACKGROUND = 1
LISTS = ("trainval", "test")  # the dataset's own lists
PARTS = ("train", "val", "test")  # our 50/25/25 split
AUGMENT_MODES = (None, "offline", "online")
LAYOUT = ("<root>/oxford-iiit-pet/images/*.jpg, <root>/oxford-iiit-pet/annotations/trimaps/*.png "
          "and <root>/oxford-iiit-pet/annotations/{trainval,test}.txt")
# Bump when decoding, resizing, normalisation or augmentation changes what an item holds: every cache
# derived from items (decoded images, mean/std, backbone features) is keyed by it.
INPUT_VERSION = 1
_TRIMAP_VALUES = np.array([1, 2, 3])  # on disk: pet, background, border -> class ids 0, 1, 2
# Pillow raises these for missing, unreadable, truncated or oversized files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """An unusable dataset file or tree; the message names the file and says what to do."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


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


def open_decoded(path: str | Path, kind: str) -> Image.Image:
    """Open and fully decode an image file; any failure becomes a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {kind} file is missing; restore it from the dataset archive "
                           "or remove it from the list", path)
    try:
        with Image.open(path) as image:
            # load() decodes every byte now, so a truncated file fails here and not mid-training.
            image.load()
            return image
    except _DECODE_ERRORS as err:
        raise DatasetError(f"{path}: cannot decode {kind} ({err}); re-extract it from the dataset "
                           "archive or remove it", path) from err


def load_image(path: str | Path) -> Image.Image:
    """Load an image fully decoded as RGB (grayscale, CMYK, RGBA, palette, PNG-in-.jpg included)."""
    image = open_decoded(path, "image")
    # Pixels are used as stored (no EXIF rotation): the trimaps are aligned to the stored pixels.
    return image if image.mode == "RGB" else image.convert("RGB")


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
    for i, first in enumerate(PARTS):
        for second in PARTS[i + 1:]:
            both = sorted(set(split[first]) & set(split[second]))
            if both:
                raise DatasetError(f"{source}: {len(both)} names are in both {first} and {second} "
                                   f"(e.g. {both[:3]}); delete it to make a new split", source)
    return {part: [by_name[n] for n in split[part]] for part in PARTS}


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


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def fingerprint(samples: Sequence[Sample], extra: object, with_trimaps: bool) -> str:
    """Hash of sorted sample names, their files' sizes and mtimes, extra and INPUT_VERSION.

    Files are identified by (name, size, mtime), not by content: fast on 7,000 images, and any
    rewrite of a file changes its mtime.
    """
    entries = sorted((s.name, _file_state(s.image), _file_state(s.labels) if with_trimaps else None)
                     for s in samples)
    return hashlib.sha256(json.dumps([entries, extra, INPUT_VERSION]).encode()).hexdigest()[:24]


def _cached_json(cache_dir: str | Path | None, name: str, compute: Callable[[], dict]) -> dict:
    """Return compute(), read from or written to cache_dir/name when a cache_dir is given."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / name
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parallel trials may compute the same entry: write aside, then rename atomically.
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(value))
    os.replace(scratch, path)
    return value


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
    result = _cached_json(cache_dir, f"scan-{key}.json", lambda: _scan(samples))
    bad = set(result["bad"])
    return [s for s in samples if s.name not in bad], [tuple(p) for p in result["problems"]]


def class_pixel_counts(samples: Sequence[Sample]) -> np.ndarray:
    """Pixels of each class (pet, background, border) over the samples' trimaps, at full size."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for sample in samples:
        counts += np.bincount(load_trimap(sample.trimap).ravel(), minlength=NUM_CLASSES)
    return counts


def resize_image(image: Image.Image, size: int) -> Image.Image:
    """Resize to size x size, bilinear; Pillow widens the filter when shrinking (antialiased)."""
    return image.resize((size, size), Image.Resampling.BILINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a class-id mask to size x size with nearest neighbour, so no new ids appear."""
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


def _mean_std(samples: Sequence[Sample], size: int) -> dict:
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for sample in samples:
        image = resize_image(load_image(sample.image), size)
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "images": len(samples), "size": size}


def compute_mean_std(samples: Sequence[Sample], size: int, cache_dir: str | Path | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units of the images resized to size; cached in cache_dir."""
    if not samples:
        raise DatasetError("no training samples to compute the normalisation from; check the split")
    key = fingerprint(samples, ["mean_std", size], with_trimaps=False)
    stats = _cached_json(cache_dir, f"mean_std-{key}.json", lambda: _mean_std(samples, size))
    return tuple(stats["mean"]), tuple(stats["std"])


def augmentation(mask_fill: int = BACKGROUND) -> v2.Compose:
    """The paper's augmentation of an (Image, Mask) pair; colour jitter and blur touch only the image.

    Rotation fills the corners of the mask with `mask_fill` (the background class for the pets).
    """
    return v2.Compose([
        v2.RandomRotation(90, interpolation=v2.InterpolationMode.BILINEAR,
                          fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}),
        v2.RandomHorizontalFlip(0.5),
        v2.ColorJitter(brightness=(0, 2), contrast=(0, 2), saturation=(0, 2), hue=0.1),
        v2.GaussianBlur(3, sigma=(0.1, 2.0)),
    ])


def offline_seed(seed: int, index: int) -> int:
    """The RNG seed of image index's fixed augmented copy: depends only on (seed, index)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: a valid torch seed


class PetSegmentation(torch.utils.data.Dataset):
    """(image float32 [3,S,S] normalised, mask int64 [S,S]) items, optionally augmented.

    augment=None: N items. "offline": 2N items, the last N one fixed augmented copy per image.
    "online": N items, freshly augmented on every access. Default mean/std: no normalisation.
    """

    mask_fill = BACKGROUND  # what rotation leaves in the mask's corners

    def __init__(self, samples: Sequence[Sample], size: int = 256, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), augment: str | None = None, seed: int = 0,
                 decoded_cache_dir: str | Path | None = None):
        if augment not in AUGMENT_MODES:
            raise ValueError(f"augment={augment!r}: use one of {AUGMENT_MODES}")
        self.samples = list(samples)
        self.size = size
        self.augment = augment
        self.seed = seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._augmentation = augmentation(self.mask_fill)
        # With a cache dir, images are decoded and resized once into shared uint8 files.
        self.decoded_cache_dir = decoded_cache_dir
        self._decoded = None

    def __len__(self) -> int:
        return 2 * len(self.samples) if self.augment == "offline" else len(self.samples)

    @property
    def names(self) -> list[str]:
        """One name per item; an offline copy is "<name>.aug<seed>" (distinct, e.g. as a cache key)."""
        copies = [f"{s.name}.aug{self.seed}" for s in self.samples] if self.augment == "offline" else []
        return [s.name for s in self.samples] + copies

    def _resized_arrays(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        image, mask = load_sample(sample)
        return np.array(resize_image(image, self.size)), np.array(resize_mask(mask, self.size))

    def _decoded_arrays(self) -> dict[str, np.ndarray] | None:
        if self._decoded is None:
            from .arraycache import cached_arrays  # only datasets given a cache dir need it

            count, size = len(self.samples), self.size
            key = fingerprint(self.samples, ["decoded", [s.name for s in self.samples], size], with_trimaps=True)

            def fill(arrays):
                for index, sample in enumerate(self.samples):
                    arrays["images"][index], arrays["masks"][index] = self._resized_arrays(sample)

            specs = {"images": ((count, size, size, 3), np.uint8), "masks": ((count, size, size), np.uint8)}
            self._decoded = cached_arrays(Path(self.decoded_cache_dir) / "decoded" / key, specs, fill,
                                          {"items": count, "size": size})
        return self._decoded

    def _load_resized(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        arrays = self._decoded_arrays() if self.decoded_cache_dir is not None else None
        if arrays is None:  # no cache asked for, or no disk room for one
            image, mask = self._resized_arrays(self.samples[index])
        else:
            image, mask = np.array(arrays["images"][index]), np.array(arrays["masks"][index])
        pixels = torch.from_numpy(image).permute(2, 0, 1)
        return tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(mask))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        count = len(self.samples)
        # Resizing first makes the augmentation run on small tensors.
        image, mask = self._load_resized(index % count)
        if self.augment == "online":
            image, mask = self._augmentation(image, mask)
        elif self.augment == "offline" and index >= count:
            # A private RNG keeps the copy the same whatever the worker or access order.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(offline_seed(self.seed, index - count))
                image, mask = self._augmentation(image, mask)
        pixels = image.as_subclass(torch.Tensor).float() / 255.0
        return (pixels - self.mean) / self.std, mask.as_subclass(torch.Tensor).long()


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


def main(argv: list[str] | None = None) -> int:
    """CLI: check every image and trimap of a tree; print split sizes, class shares and problems."""
    parser = argparse.ArgumentParser(description="Check an Oxford-IIIT Pet tree for segmentation.")
    parser.add_argument("--root", required=True, help="directory containing oxford-iiit-pet/")
    parser.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val/test split")
    args = parser.parse_args(argv)
    try:
        samples = find_samples(args.root, download=args.download)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    split = make_split(samples, args.seed)
    print(f"split (seed {args.seed}): " + ", ".join(f"{part} {len(split[part])}" for part in PARTS))
    good, problems = scan_samples(samples["trainval"] + samples["test"])
    counts = class_pixel_counts(good)
    shares = counts / max(counts.sum(), 1) * 100
    print("class pixel shares: " + ", ".join(f"{n} {s:.1f}%" for n, s in zip(CLASS_NAMES, shares)))
    if problems:
        print(f"{len(problems)} unusable file(s):")
        for _, message in problems:
            print(f"  {message}")
        return 1
    print(f"all {len(good)} samples are usable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
