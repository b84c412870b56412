"""Frozen-backbone features computed once and reused by every trial and epoch that can use them.

A backbone's output for an image does not change while the backbone is frozen and augmentation
is offline (fixed copies), so the study needs one backbone pass per (backbone, images, input pipeline),
not one per step. Features are stored in fp16 as memory-mapped files under `<cache_dir>/features/<key>/`:
`features.npy`, or one `features_<name>.npy` per named output of a backbone with several (LR-ASPP's low and high).
The key covers everything that shapes them, derived from the objects themselves rather than from version
numbers someone must bump:
- the backbone: its tensors (names, shapes, values) and every module's type and hyperparameters (all public
  attributes and `__constants__`: kernel, stride, padding, dilation, groups, ceil_mode, BatchNorm eps and
  momentum, bias presence, upsampling mode and align_corners...), forward hooks, and the code of petseg's own
  module classes (docstrings and comments aside); the output stride;
- the images: their files (name, size, modification time) in item order, offline copies by seed;
- the input pipeline as configured: dataset type, Pillow's version and the resize filters, size, normalisation
  mean / std, offline or no augmentation and its seed, and each augmentation with its parameters (rotation
  degrees, interpolation and fill, flip p, colour-jitter ranges, blur kernel and sigma, their order);
- the compute precision, the stored dtype, and the torch / torchvision versions (their layers and transforms).
Two version numbers remain for code that no description sees: FEATURE_VERSION (this module's pass and
storage) and petseg.data.INPUT_VERSION (how a file is decoded and an item assembled).

    python -m petseg.train.features --cache-dir DIR            # list caches and their disk use
    python -m petseg.train.features --cache-dir DIR --clear    # delete them
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import SegmentationDataset, decoding, fingerprint
from ..disk import cached_arrays, default_cache_dir, file_lock, folder_size
from ..models import FrozenBackboneSegmenter
from ..models.segmenter import Features, map_features
from ..node_cache import Lease, NodeCache, format_size, make_room, release_room
from .description import module_description
from .engine import amp_enabled, autocast

FEATURE_DTYPE = np.float16
# Bump when this module changes how features are computed or stored (the pass in backbone_batches, what
# feature_dataset writes) in a way the key's parts cannot see. The backbone's modules (their hyperparameters
# and, for petseg's own classes, their code), the input pipeline as configured and the storage dtype are
# described in the key, so changing those needs no bump.
FEATURE_VERSION = 2


def backbone_fingerprint(model: FrozenBackboneSegmenter) -> str:
    """sha256 of the backbone's tensors (parameters and buffers, with names, shapes and dtypes)."""
    digest = hashlib.sha256()
    backbone = model.backbone
    for name, tensor in itertools.chain(backbone.named_parameters(), backbone.named_buffers()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def input_pipeline(dataset: SegmentationDataset) -> dict:
    """How the dataset makes an item, as configured: its type (a source dataset's source), decoding and resize filters, size, normalisation
    mean / std, augmentation mode and seed, and (when it augments) every augmentation with its parameters."""
    # A source's datasets share one class; its source is what makes their items (petseg.data.source).
    kind = type(getattr(dataset, "source", dataset))
    return {"dataset": f"{kind.__module__}.{kind.__qualname__}", "decoding": decoding(), "size": dataset.size,
            "mean": dataset.mean.flatten().tolist(), "std": dataset.std.flatten().tolist(),
            "augment": dataset.augment, "seed": dataset.seed,
            "augmentation": module_description(dataset.augmentation) if dataset.augment else None}


def feature_key(backbone: nn.Module, backbone_key: str, dataset: SegmentationDataset, precision: str,
                output_stride: float | dict[str, float]) -> str:
    """Everything that shapes a dataset's features, hashed: feature code version, library versions, the
    backbone's complete description and weights, the images and the input pipeline, the precision the
    backbone ran in and the dtype the features are stored in."""
    identity = {"version": FEATURE_VERSION, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "architecture": module_description(backbone), "output_stride": output_stride, "weights": backbone_key,
                "data": dataset_fingerprint(dataset), "input": input_pipeline(dataset), "precision": precision,
                "stored_as": np.dtype(FEATURE_DTYPE).name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def dataset_fingerprint(dataset: SegmentationDataset) -> str:
    """Hash of the items in order (offline copies by seed) and their files."""
    return fingerprint(dataset.samples, ["features", dataset.names], with_trimaps=True)


def cacheable(dataset: SegmentationDataset) -> bool:
    """Whether items are fixed (no online augmentation), so their features can be reused."""
    return dataset.augment != "online"


def feature_arrays(features: Features) -> dict[str, torch.Tensor]:
    """A backbone's output by cache array name: "features" for a backbone with one output, "features_<name>" for
    each of several (so a single-output backbone's cache keeps the file it always had)."""
    return {f"features_{name}": tensor for name, tensor in features.items()} if isinstance(features, dict) \
        else {"features": features}


class FeatureDataset(Dataset):
    """(features float32 [C, h, w] or a dict of them by output name, mask int64 [H, W]) items read from a feature
    cache."""

    def __init__(self, arrays: dict[str, np.ndarray], folder: Path, build_seconds: float = 0.0,
                 lease: Lease | None = None):
        self.features = {name: array for name, array in arrays.items() if name != "masks"}
        self.masks = arrays["masks"]
        self.folder = folder  # where the cache lives, so a study can evict it when it is done with it
        self.lease = lease  # held while this dataset lives: its node evicts no cache a trial reads
        # Backbone time this caller spent building the cache (0 when it was read as found), so a report can
        # charge it to every variant that reads the cache rather than to the trial that happened to build it.
        self.build_seconds = build_seconds

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int):
        features = {name: torch.from_numpy(np.asarray(array[index], dtype=np.float32))
                    for name, array in self.features.items()}
        if list(features) == ["features"]:  # a backbone's only output is a tensor, as the head expects it
            return features["features"], torch.from_numpy(np.asarray(self.masks[index], dtype=np.int64))
        return ({name.removeprefix("features_"): tensor for name, tensor in features.items()},
                torch.from_numpy(np.asarray(self.masks[index], dtype=np.int64)))


class HeadOnly(nn.Module):
    """Runs a segmenter's head on cached backbone features: logits at the images' size."""

    def __init__(self, model: FrozenBackboneSegmenter, size: int):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, features: Features) -> torch.Tensor:
        """Head logits upsampled to size x size."""
        return self.model.decode(features, (self.size, self.size))


@torch.no_grad()
def backbone_batches(model: FrozenBackboneSegmenter, dataset: Dataset, device: torch.device, batch_size: int,
                     amp: bool = True):
    """Yield (features, masks) of `dataset` in order: channels_last on CUDA, bf16 autocast where it pays."""
    backbone = model.backbone.eval()
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    for images, masks in loader:
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            yield map_features(torch.Tensor.float, backbone(images)), masks


class BuildProgress:
    """Says how a cache build goes: a line at most every `every` seconds with the share done, rate and ETA."""

    def __init__(self, report: Callable[[str], None], what: str, total: int, every: float = 30.0):
        self.report, self.what, self.total, self.every = report, what, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        """Report `done` of the total items built, if a line is due (and always at the end)."""
        now = time.monotonic()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate else float("inf")
        bar = "#" * round(20 * done / self.total)
        self.report(f"{self.what}: [{bar:<20}] {done}/{self.total} ({100 * done / self.total:.0f}%), "
                    f"{rate:.1f} images/s, " + ("done" if done == self.total else f"ETA {format_seconds(eta)}"))


def format_seconds(seconds: float) -> str:
    """A duration as "1h02m", "3m05s" or "12s"."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def feature_dataset(model: FrozenBackboneSegmenter, dataset: SegmentationDataset, cache_dir: str | Path | NodeCache,
                    device: torch.device, batch_size: int = 16, amp: bool = True,
                    backbone_key: str | None = None, progress: Callable[[str], None] = print
                    ) -> FeatureDataset | None:
    """The features of `dataset` from the cache, built once if absent; None if it cannot be cached.

    cache_dir: a folder, or a node's cache (folder and budget: a build first makes room within the budget, and
    the cache is leased while the returned dataset lives, see petseg.node_cache).
    backbone_key: the model's backbone_fingerprint, when the caller already has it. progress receives
    lines about a build (share done, rate, ETA, then its size and folder).
    """
    if not cacheable(dataset):
        return None
    node = cache_dir if isinstance(cache_dir, NodeCache) else None
    cache_dir = node.folder if node else cache_dir
    # bf16 and fp32 backbone passes give different features: the precision is part of the key.
    precision = "bf16" if amp_enabled(device, amp) else "fp32"
    with torch.no_grad(), autocast(device, amp):
        probe = model.backbone(dataset[0][0][None].to(device))
    shapes = {array: tuple(int(n) for n in tensor.shape[1:]) for array, tensor in feature_arrays(probe).items()}
    strides = {array.removeprefix("features_"): dataset.size / shape[1] for array, shape in shapes.items()}
    # A single output keeps the key it always had (one stride), so its caches stay valid.
    key = feature_key(model.backbone, backbone_key or backbone_fingerprint(model), dataset, precision,
                      strides if isinstance(probe, dict) else strides["features"])
    folder = Path(cache_dir) / "features" / key
    specs = {**{array: ((len(dataset), *shape), FEATURE_DTYPE) for array, shape in shapes.items()},
             "masks": ((len(dataset), dataset.size, dataset.size), np.uint8)}

    build_seconds = []

    def fill(arrays):
        start = 0
        built = BuildProgress(progress, f"feature cache ({len(dataset)} images, {precision})", len(dataset))
        with gpu_build_lock(cache_dir) if device.type == "cuda" else nullcontext():
            began = time.monotonic()  # after the lock: waiting for another trial's build is not this build
            for features, masks in backbone_batches(model, dataset, device, batch_size, amp):
                stop = start + len(masks)
                for array, tensor in feature_arrays(features).items():
                    arrays[array][start:stop] = tensor.cpu().numpy().astype(FEATURE_DTYPE)
                arrays["masks"][start:stop] = masks.numpy().astype(np.uint8)
                start = stop
                built.update(stop)
            build_seconds.append(time.monotonic() - began)
        size = sum(array.nbytes for array in arrays.values())
        progress(f"feature cache built: {len(dataset)} items, {size / 2**20:.1f} MiB in {folder} "
                 "(python -m petseg.train.features lists and clears caches)")

    shape = {"shape": list(shapes["features"])} if "features" in shapes else \
        {"shapes": {array: list(shape) for array, shape in shapes.items()}}
    meta = {"items": len(dataset), **shape, "dtype": "float16",
            "computed_in": precision,
            "size": dataset.size, "augment": dataset.augment, "seed": dataset.seed}
    lease = Lease(folder) if node else None
    try:
        arrays = cached_arrays(folder, specs, fill, meta, room=(lambda needed: make_room(node, folder, needed))
                               if node else None, allocated=(lambda: release_room(folder)) if node else None)
    finally:
        if node:
            release_room(folder)
    if arrays is None:
        where = (f"within node {node.node or 'here'}'s cache budget of {format_size(node.budget)} ({node.source}), "
                 "keeping the caches its trials read" if node else "on the disk")
        message = (f"no room under {cache_dir} {where} for the feature cache of {len(dataset)} items; running the "
                   "backbone live instead (free space, raise the budget or set the cache folder elsewhere)")
        progress(message)
        warnings.warn(message, stacklevel=2)
        if lease:
            lease.release()
        return None
    return FeatureDataset(arrays, folder, sum(build_seconds), lease)


def gpu_build_lock(cache_dir: str | Path):
    """A lock per GPU of this node (as CUDA_VISIBLE_DEVICES names it), so trials sharing a GPU build their caches
    one after another: several backbone passes at once would oversubscribe its memory."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "-") or "none"
    return file_lock(Path(cache_dir) / "locks" / f"gpu-{gpus}.lock")


def list_caches(cache_dir: str | Path) -> list[tuple[Path, int]]:
    """(folder, bytes) of every feature cache under cache_dir."""
    root = Path(cache_dir) / "features"
    return [(folder, folder_size(folder)) for folder in sorted(root.iterdir()) if folder.is_dir()] if root.is_dir() else []


def main(argv=None) -> int:
    """CLI: list the feature caches and their disk use, or clear them."""
    parser = argparse.ArgumentParser(description="List or clear petseg's feature caches.")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()), help="petseg's cache folder")
    parser.add_argument("--clear", action="store_true", help="delete every feature cache")
    args = parser.parse_args(argv)
    caches = list_caches(args.cache_dir)
    for folder, size in caches:
        print(f"{size / 2**20:10.1f} MiB  {folder}")
    total = sum(size for _, size in caches)
    print(f"{len(caches)} feature cache(s), {total / 2**20:.1f} MiB under {Path(args.cache_dir) / 'features'}")
    if args.clear:
        shutil.rmtree(Path(args.cache_dir) / "features", ignore_errors=True)
        print(f"cleared {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
