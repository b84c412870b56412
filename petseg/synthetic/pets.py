"""Write a small generated dataset in exactly the real Oxford-IIIT Pet on-disk layout.

The smoke preset and the tests use it so that everything after the files is the real code path:

    python -m petseg.synthetic --root data/synthetic --num-images 24 --size 96 --seed 0
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import ConfigError

# The 37 real breed names; cats are capitalised, dogs lowercase, as in the real file names.
BREEDS = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)
# A few cats and dogs are enough to exercise the class/species columns.
USED_BREEDS = ("Abyssinian", "Bengal", "Persian", "american_bulldog", "beagle", "pug")

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
# The smallest dataset every writer makes: one image per list (trainval / test, train / val), and sides
# with room for a shape and its border band.
MIN_IMAGES, MIN_SIZE = 2, 16


def breed_ids(breed: str) -> tuple[int, int, int]:
    """Return (class id 1..37, species 1=cat 2=dog, breed id within species) as in the real lists."""
    ordered = sorted(BREEDS, key=str.lower)
    is_cat = breed[0].isupper()
    same_species = [b for b in ordered if b[0].isupper() == is_cat]
    return ordered.index(breed) + 1, 1 if is_cat else 2, same_species.index(breed) + 1


def _random_colour(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
                   val: tuple[float, float]) -> np.ndarray:
    """Draw one RGB colour in [0, 255] from ranges of hue, saturation and value."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb) * 255.0


def pet_colour(rng: np.random.Generator) -> np.ndarray:
    """A fur-like colour: warm hues, any brightness (overlaps the background only partly)."""
    return _random_colour(rng, (-0.05, 0.14), (0.25, 0.85), (0.15, 0.95))


def background_colour(rng: np.random.Generator) -> np.ndarray:
    """A scene-like colour: mostly greens, blues and greys."""
    return _random_colour(rng, (0.2, 0.7), (0.05, 0.6), (0.25, 0.95))


def texture(rng: np.random.Generator, shape: tuple[int, int], colour_fn) -> np.ndarray:
    """Fill an [H, W, 3] float image with a solid, striped, noisy or gradient texture."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    first, second = colour_fn(rng), colour_fn(rng)
    kind = rng.integers(4)
    if kind == 0:  # solid
        weight = np.zeros(shape)
    elif kind == 1:  # stripes in a random direction
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 14)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 2:  # coarse blotches
        coarse = rng.random((max(2, height // 8), max(2, width // 8)))
        weight = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
            (width, height), Image.BILINEAR), dtype=np.float64) / 255.0
    else:  # linear gradient
        weight = (xx / max(width - 1, 1)) if rng.random() < 0.5 else (yy / max(height - 1, 1))
    image = first * (1 - weight[..., None]) + second * weight[..., None]
    return image + rng.normal(0, rng.uniform(2, 18), size=(height, width, 3))


def pet_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A boolean pet silhouette: a union of 1-3 wobbly ellipses, sometimes off-centre."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    centre_y = height * rng.uniform(0.3, 0.7)
    centre_x = width * rng.uniform(0.3, 0.7)
    mask = np.zeros(shape, dtype=bool)
    for part in range(rng.integers(1, 4)):
        # Extra parts (head, tail) attach near the body rather than floating anywhere.
        spread = 0.0 if part == 0 else 0.25
        cy = centre_y + height * rng.uniform(-spread, spread)
        cx = centre_x + width * rng.uniform(-spread, spread)
        scale = 1.0 if part == 0 else rng.uniform(0.35, 0.7)
        axis_y = height * rng.uniform(0.18, 0.38) * scale
        axis_x = width * rng.uniform(0.18, 0.38) * scale
        theta = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / axis_x
        v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / axis_y
        lobes, phase = rng.integers(2, 6), rng.uniform(0, 2 * np.pi)
        wobble = rng.uniform(0, 0.25) * np.sin(lobes * np.arctan2(v, u) + phase)
        mask |= np.hypot(u, v) <= 1.0 + wobble
    return mask


def trimap_from_mask(mask: np.ndarray, band: int) -> np.ndarray:
    """Trimap values 1 pet / 2 background / 3 border, the border a band straddling the outline."""
    as_image = Image.fromarray(mask.astype(np.uint8) * 255)
    kernel = 2 * band + 1
    grown = np.asarray(as_image.filter(ImageFilter.MaxFilter(kernel))) > 0
    shrunk = np.asarray(as_image.filter(ImageFilter.MinFilter(kernel))) > 0
    trimap = np.full(mask.shape, TRIMAP_BACKGROUND, dtype=np.uint8)
    trimap[grown] = TRIMAP_BORDER
    trimap[shrunk] = TRIMAP_PET
    return trimap


def render_sample(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """One (RGB photo, trimap) pair of a random size within [0.6, 1.4] x size on each side."""
    shape = tuple(int(rng.integers(round(0.6 * size), round(1.4 * size) + 1)) for _ in range(2))
    mask = pet_mask(rng, shape)
    pet, background = texture(rng, shape, pet_colour), texture(rng, shape, background_colour)
    pixels = np.where(mask[..., None], pet, background)
    # A slight blur softens the outline the way a real photo's edges are soft.
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    trimap = trimap_from_mask(mask, band=max(1, round(size / 48)))
    return photo, Image.fromarray(trimap, mode="L")


def assign_names(rng: np.random.Generator, num_images: int) -> list[tuple[str, str]]:
    """(image name, breed) pairs like "Abyssinian_12"; numbers unique per breed."""
    breeds = [USED_BREEDS[i % len(USED_BREEDS)] for i in range(num_images)]
    per_breed = {b: iter(rng.permutation(np.arange(1, 10 * num_images + 1))) for b in USED_BREEDS}
    return [(f"{breed}_{next(per_breed[breed])}", breed) for breed in breeds]


def list_line(name: str, breed: str) -> str:
    """One line of trainval.txt/test.txt: "<name> <class id> <species> <breed id>"."""
    class_id, species, breed_id = breed_ids(breed)
    return f"{name} {class_id} {species} {breed_id}\n"


def _sort_key(name: str) -> tuple[str, int]:
    stem, number = name.rsplit("_", 1)
    return stem.lower(), int(number)


def write_dataset(root: str | Path, num_images: int = 24, size: int = 96, seed: int = 0) -> Path:
    """Write num_images samples under <root>/oxford-iiit-pet (about half trainval, half test); return root."""
    if num_images < MIN_IMAGES:
        raise ConfigError(f"num_images={num_images}: need at least {MIN_IMAGES} (one for trainval, one for test)")
    if size < MIN_SIZE:
        raise ConfigError(f"size={size}: need at least {MIN_SIZE} pixels for a pet and its border band")
    root = Path(root)
    base = root / "oxford-iiit-pet"
    images_dir, trimaps_dir = base / "images", base / "annotations" / "trimaps"
    images_dir.mkdir(parents=True, exist_ok=True)
    trimaps_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    named = assign_names(rng, num_images)
    # Alternating after breed-cycling puts every breed in both lists, like the real split.
    splits: dict[str, list[tuple[str, str]]] = {"trainval": named[0::2], "test": named[1::2]}
    for name, _ in named:
        photo, trimap = render_sample(rng, size)
        photo.save(images_dir / f"{name}.jpg", quality=92)
        trimap.save(trimaps_dir / f"{name}.png")
    for split, entries in splits.items():
        lines = [list_line(name, breed) for name, breed in sorted(entries, key=lambda e: _sort_key(e[0]))]
        (base / "annotations" / f"{split}.txt").write_text("".join(lines))
    return root
