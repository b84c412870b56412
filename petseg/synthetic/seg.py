"""Write tiny generated Pascal VOC 2012, SBD and ADE20K trees in exactly the real on-disk layouts.

torchvision's VOCSegmentation / SBDataset and petseg.data.voc / petseg.data.ade20k read them unchanged, so tests and smoke runs
take the real code path after the files:

    python -m petseg.synthetic --kind voc --root data/voc --num-images 16 --size 64 --seed 0

Image ids are shared the way the real sets share them: with the same seed, an id that write_voc and
write_sbd both write has the same photo and objects (SBD without VOC's 255 outline band).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..drawing import voc_palette
from ..errors import ConfigError
from .pets import MIN_IMAGES, MIN_SIZE, TRIMAP_BORDER, background_colour, pet_mask, texture, trimap_from_mask

VOC_IGNORE = 255
VOC_OBJECT_CLASSES = (1, 8, 12, 15, 20)  # aeroplane, cat, dog, person, tvmonitor: both ends of 1..20
ADE20K_OBJECT_CLASSES = (13, 20, 150)  # person, car, flag: 150 is the highest id
ADE20K_SCENE_CLASSES = (1, 3, 4)  # wall, sky, floor: ADE20K labels the background too
SBD_CLASSES = 20  # GTcls.Boundaries has one entry per object class


def class_colour(label: int):
    """A colour function (for synthetic.texture) of a fixed hue per class id, so classes are learnable."""
    hue = (label * 0.618034) % 1.0

    def colour(rng: np.random.Generator) -> np.ndarray:
        rgb = colorsys.hsv_to_rgb((hue + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.45, 0.9),
                                  rng.uniform(0.35, 0.95))
        return np.array(rgb) * 255.0
    return colour


def render_scene(rng: np.random.Generator, size: int, classes: Sequence[int], first: int, background: int = 0
                 ) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """(RGB photo, uint8 class map, bool outline band) with 1-2 objects; classes[first] is drawn on top."""
    shape = tuple(int(rng.integers(round(0.6 * size), round(1.4 * size) + 1)) for _ in range(2))
    labels = np.full(shape, background, dtype=np.uint8)
    pixels = texture(rng, shape, class_colour(background) if background else background_colour)
    band = np.zeros(shape, dtype=bool)
    count = int(rng.integers(1, 3))
    for offset in reversed(range(count)):  # the first class last, so it stays visible
        label = classes[(first + offset) % len(classes)]
        mask = pet_mask(rng, shape)
        labels[mask] = label
        pixels = np.where(mask[..., None], texture(rng, shape, class_colour(label)), pixels)
        band |= trimap_from_mask(mask, band=max(1, round(size / 32))) == TRIMAP_BORDER
    # A slight blur softens the outlines the way a real photo's edges are soft.
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    return photo, labels, band


def voc_image_id(index: int) -> str:
    """A VOC-style image id such as "2008_000003"; the index fixes the photo for a given seed."""
    return f"{2007 + index % 5}_{index:06d}"


def in_voc_val(index: int) -> bool:
    """Whether write_voc puts image index in val (every other one, as VOC's ~1464/1449 halves)."""
    return index % 2 == 1


def _voc_scene(seed: int, index: int, size: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index])  # per id, so VOC and SBD draw the same scene
    return render_scene(rng, size, VOC_OBJECT_CLASSES, first=index)


def _check_args(num_images: int, size: int) -> None:
    if num_images < MIN_IMAGES:
        raise ConfigError(f"num_images={num_images}: need at least {MIN_IMAGES} (one per split)")
    if size < MIN_SIZE:
        raise ConfigError(f"size={size}: need at least {MIN_SIZE} pixels for objects and their outline band")


def _write_list(path: Path, names: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in sorted(names)))


def write_voc(root: str | Path, num_images: int = 16, size: int = 64, seed: int = 0) -> Path:
    """Write <root>/VOCdevkit/VOC2012 (JPEGImages, palette PNGs with a 255 band, train/val/trainval lists)."""
    _check_args(num_images, size)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for index in range(num_images):
        photo, labels, band = _voc_scene(seed, index, size)
        labels[band] = VOC_IGNORE  # VOC marks object outlines as void
        mask = Image.fromarray(labels)
        mask.putpalette(palette)  # makes it mode "P", as the real files are
        photo.save(base / "JPEGImages" / f"{voc_image_id(index)}.jpg", quality=92)
        mask.save(base / "SegmentationClass" / f"{voc_image_id(index)}.png")
    splits = {"val": [i for i in range(num_images) if in_voc_val(i)]}
    splits["train"] = [i for i in range(num_images) if not in_voc_val(i)]
    splits["trainval"] = list(range(num_images))
    for split, indices in splits.items():
        _write_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", [voc_image_id(i) for i in indices])
    return Path(root)


def sbd_mat(labels: np.ndarray) -> dict:
    """The content of an SBD cls/<id>.mat: a GTcls struct (Segmentation, Boundaries, CategoriesPresent)."""
    from scipy.sparse import csc_matrix

    boundaries = np.empty((SBD_CLASSES, 1), dtype=object)  # a 20x1 MATLAB cell of sparse logical maps
    for label in range(1, SBD_CLASSES + 1):
        region = Image.fromarray((labels == label).astype(np.uint8) * 255)
        edge = np.asarray(region) > np.asarray(region.filter(ImageFilter.MinFilter(3)))
        boundaries[label - 1, 0] = csc_matrix(edge)
    present = np.setdiff1d(np.unique(labels), [0]).astype(np.uint8).reshape(-1, 1)
    return {"GTcls": {"Segmentation": labels, "Boundaries": boundaries, "CategoriesPresent": present}}


def write_sbd(root: str | Path, num_images: int = 16, size: int = 64, seed: int = 0) -> Path:
    """Write <root>/{img,cls} and train/val/train_noval lists; ids start at write_voc's num_images // 2."""
    _check_args(num_images, size)
    from scipy.io import savemat  # SBD's labels are MATLAB files

    root = Path(root)
    for folder in ("img", "cls"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    # Starting mid-way makes the ids overlap both VOC lists and go beyond them, like the real sets.
    indices = list(range(num_images // 2, num_images // 2 + num_images))
    for index in indices:
        photo, labels, _ = _voc_scene(seed, index, size)
        photo.save(root / "img" / f"{voc_image_id(index)}.jpg", quality=92)
        savemat(root / "cls" / f"{voc_image_id(index)}.mat", sbd_mat(labels))
    val = [i for position, i in enumerate(indices) if position % 4 == 1]  # ~1/4, like SBD's 2857/11355
    train = [i for i in indices if i not in val]
    _write_list(root / "train.txt", [voc_image_id(i) for i in train])
    _write_list(root / "val.txt", [voc_image_id(i) for i in val])
    _write_list(root / "train_noval.txt", [voc_image_id(i) for i in train if not in_voc_val(i)])
    return root


def write_ade20k(root: str | Path, num_images: int = 16, size: int = 64, seed: int = 0) -> Path:
    """Write <root>/ADEChallengeData2016/{images,annotations}/{training,validation} (8-bit PNGs, 0 = other)."""
    _check_args(num_images, size)
    base = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(seed)
    counters = {"training": 0, "validation": 0}
    for index in range(num_images):
        split = "validation" if index % 4 == 1 else "training"
        counters[split] += 1
        name = f"ADE_{'val' if split == 'validation' else 'train'}_{counters[split]:08d}"
        scene = ADE20K_SCENE_CLASSES[index % len(ADE20K_SCENE_CLASSES)]
        photo, labels, band = render_scene(rng, size, ADE20K_OBJECT_CLASSES, first=index, background=scene)
        labels[band] = 0  # unlabelled outlines, as annotators leave them
        images_dir, labels_dir = base / "images" / split, base / "annotations" / split
        images_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        photo.save(images_dir / f"{name}.jpg", quality=92)
        Image.fromarray(labels).save(labels_dir / f"{name}.png")
    return Path(root)
