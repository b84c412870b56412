"""Reading image files safely and identifying them: full decode with errors naming the file, resizing,
and the (name, size, mtime) fingerprint that keys every cache derived from the files."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from ..disk import file_sha256
from ..errors import DatasetError

# Bump when code changes what an item holds in a way no configuration shows: how a file is decoded or a
# mask read, the order of resize, augment and normalise, the scaling to [0, 1]. Every cache derived from
# items (decoded images, mean/std, backbone features) is keyed by it. Configured parts need no bump: Pillow's
# version and the resize filters are in decoding(); the feature cache key also describes the size,
# normalisation and every augmentation with its parameters.
INPUT_VERSION = 1
IMAGE_RESAMPLE = Image.Resampling.BILINEAR
MASK_RESAMPLE = Image.Resampling.NEAREST
# Pillow raises these for missing, unreadable, truncated or oversized files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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


def resize_image(image: Image.Image, size: int) -> Image.Image:
    """Resize to size x size, bilinear; Pillow widens the filter when shrinking (antialiased)."""
    return image.resize((size, size), IMAGE_RESAMPLE)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a class-id mask to size x size with nearest neighbour, so no new ids appear."""
    return np.asarray(Image.fromarray(mask).resize((size, size), MASK_RESAMPLE))


_CONTENTS = {"verify": False}  # whether fingerprints hash file contents too (--verify-data), in this process
# (path, size, mtime, ctime) -> sha256: a file is read again only once it changed (any write changes its ctime,
# which no tool can set back), so a reused worker process hashes each file once.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def verify_contents(enabled: bool) -> None:
    """Make this process's fingerprints hash every file's contents as well as its size and mtime (--verify-data):
    for files that can change without their modification time changing."""
    _CONTENTS["verify"] = enabled


def _file_state(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    if not _CONTENTS["verify"]:
        return stat.st_size, stat.st_mtime_ns
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return stat.st_size, stat.st_mtime_ns, _DIGESTS[key]


def decoding() -> dict:
    """How files become resized pixels, as the keys of caches derived from them name it: Pillow's version
    (its decoders and resampling), the image and mask resize filters, and INPUT_VERSION."""
    return {"pillow": PIL.__version__, "image_resize": IMAGE_RESAMPLE.name, "mask_resize": MASK_RESAMPLE.name,
            "version": INPUT_VERSION}


def fingerprint(samples: Sequence, extra: object, with_trimaps: bool) -> str:
    """Hash of sorted sample names (samples have .name, .image, .labels), their files' sizes and mtimes,
    extra and decoding().

    Files are identified by (name, size, mtime), not by content: fast on 7,000 images, and any
    rewrite of a file changes its mtime; with verify_contents(True), by their sha256 as well.
    """
    entries = sorted((s.name, _file_state(s.image), _file_state(s.labels) if with_trimaps else None)
                     for s in samples)
    return hashlib.sha256(json.dumps([entries, extra, decoding()], sort_keys=True).encode()).hexdigest()[:24]


