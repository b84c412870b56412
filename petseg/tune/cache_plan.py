"""The feature cache within a disk budget: how big each backbone's cache is, which backbones are cached and
in what order their variants run, and the peak disk use that order reaches.

Variants that share a backbone share its cache. The search runs one backbone's variants while its cache
exists and lets the next backbone's trials start (and build their cache) alongside the last trials of
the previous one only when both caches fit the budget together; a done backbone's cache is deleted when
the next one needs the room. A backbone whose cache alone exceeds the budget runs live (no cache), said
before the study.
"""
from __future__ import annotations

import math
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import find_samples
from ..errors import ConfigError
from ..models import VARIANTS, build_seeded_model

FEATURE_BYTES = 2  # the cache stores features in fp16
DEFAULT_SHARE = 0.8  # of the cache disk's free space, when no budget is given
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size like "64G", "64GiB", "500M" or "1024" (binary units); a ConfigError names a bad one."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"cache_budget (--cache-budget) {text!r} is not a size; give e.g. 64G, 500M or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(size: float) -> str:
    """Bytes in binary units: "36.0 GiB", "7.7 MiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def free_disk(folder: str | Path) -> int:
    """Free bytes on the file system that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).expanduser().resolve()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    return shutil.disk_usage(existing).free


def bytes_per_item(variant: str, size: int) -> int:
    """Disk bytes one image takes in `variant`'s backbone cache at `size` px: fp16 features plus a uint8 mask.

    The feature shape comes from a forward pass on the meta device: no weights, no memory, no time.
    """
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        features = build_seeded_model(variant, pretrained=False, seed=0).backbone(torch.empty(1, 3, size, size))
    return math.prod(features.shape[1:]) * FEATURE_BYTES + size * size


@dataclass(frozen=True)
class BackboneCache:
    """One backbone's cache: the variants that read it, its size on disk, and whether it fits the budget."""

    backbone: str
    variants: tuple[str, ...]
    bytes: int
    cached: bool


@dataclass(frozen=True)
class CachePlan:
    """The backbones in the order their variants run, the budget, and the peak disk use of that order."""

    caches: tuple[BackboneCache, ...]
    budget: int
    free: int

    @property
    def peak(self) -> int:
        """The most cache bytes on disk at once: one cache, or two where the next may start beside the last."""
        sizes = [cache.bytes for cache in self.caches if cache.cached]
        pairs = [a + b for a, b in zip(sizes, sizes[1:]) if a + b <= self.budget]
        return max(sizes + pairs, default=0)

    @property
    def live_variants(self) -> list[str]:
        """Variants whose backbone runs live because its cache alone exceeds the budget."""
        return [v for cache in self.caches if not cache.cached for v in cache.variants]

    def group_of(self, variant: str) -> int:
        """The index of the cache `variant` reads."""
        return next(index for index, cache in enumerate(self.caches) if variant in cache.variants)

    def describe(self) -> list[str]:
        """The plan as lines: each backbone's size and fate in order, then peak, budget and free disk."""
        lines = [f"{index + 1}. {cache.backbone:<26} {format_size(cache.bytes):>10}  "
                 f"{'cached' if cache.cached else 'LIVE (alone over the budget)'}: {', '.join(cache.variants)}"
                 for index, cache in enumerate(self.caches)]
        lines.append(f"peak feature-cache use {format_size(self.peak)} within a budget of {format_size(self.budget)}"
                     f" ({format_size(self.free)} free on the cache disk; all caches at once would take "
                     f"{format_size(sum(cache.bytes for cache in self.caches))})")
        if self.budget > self.free:
            lines.append(f"the budget is more than the free disk: a study here keeps within "
                         f"{format_size(self.free * DEFAULT_SHARE)} instead, or free space first")
        return lines


def plan_cache(variants: list[str], size: int, train_items: int, val_items: int, budget: int | None,
               free: int) -> CachePlan:
    """The cache plan of `variants` at `size` px for train + val items, within `budget` bytes (default: a safe
    share of `free`), backbones in the registry's order."""
    budget = int(free * DEFAULT_SHARE) if budget is None else budget
    caches = []
    for backbone in dict.fromkeys(VARIANTS[v].backbone_id for v in variants):
        members = tuple(v for v in variants if VARIANTS[v].backbone_id == backbone)
        size_on_disk = bytes_per_item(members[0], size) * (train_items + val_items)
        caches.append(BackboneCache(backbone, members, size_on_disk, size_on_disk <= budget))
    return CachePlan(tuple(caches), budget, free)


class CacheGate:
    """Which variants may start trials now, so that the caches on disk stay within the plan's budget.

    Cached backbones open one after another in the plan's order: the next one opens while earlier ones are
    on disk only if all their caches fit the budget together. A backbone is done when all its variants'
    trials have finished; its cache stays (a later study may reuse it) until the next backbone needs the
    room, and is then condemned: the searcher deletes it, after which the next backbone opens.
    Live backbones are always open. A backbone is building from its first trial's start until one of its
    trials reports (its cache exists then): a trial started meanwhile would only wait for that build.
    """

    def __init__(self, plan: CachePlan, trials_per_variant: dict[str, int]):
        self.plan = plan
        self.planned = trials_per_variant
        self.started = {v: 0 for v in trials_per_variant}
        self.finished = {v: 0 for v in trials_per_variant}
        self.condemned: set[int] = set()
        self.gone: set[int] = set()
        self.built: set[int] = set()

    def replan(self, plan: CachePlan) -> None:
        """Keep to `plan` from now on: the same backbones' caches under another budget (a resumed study's)."""
        if [cache.backbone for cache in plan.caches] != [cache.backbone for cache in self.plan.caches]:
            raise ValueError("a cache gate can only take a plan of the same backbones in the same order")
        self.plan = plan

    def _variants(self, group: int) -> list[str]:
        return [v for v in self.plan.caches[group].variants if v in self.planned]

    def _begun(self, group: int) -> bool:
        return any(self.started[v] for v in self._variants(group))

    def done(self, group: int) -> bool:
        """Whether every planned trial of the group's variants has finished."""
        return all(self.finished[v] >= self.planned[v] for v in self._variants(group))

    def on_disk(self) -> int:
        """Bytes of the caches begun and not yet deleted."""
        return sum(cache.bytes for index, cache in enumerate(self.plan.caches)
                   if cache.cached and self._begun(index) and index not in self.gone)

    def allows(self, variant: str) -> bool:
        """Whether a trial of `variant` may start now without the caches exceeding the budget; when only done
        backbones' caches stand in the way, they are condemned (and the answer is no until they are gone)."""
        group = self.plan.group_of(variant)
        if not self.plan.caches[group].cached or self._begun(group):
            return True
        waiting = [index for index, cache in enumerate(self.plan.caches) if cache.cached and not self._begun(index)]
        if waiting[0] != group:
            return False  # backbones open in order
        if self.on_disk() + self.plan.caches[group].bytes <= self.plan.budget:
            return True
        self.condemned.update(index for index, cache in enumerate(self.plan.caches)
                              if cache.cached and self._begun(index) and self.done(index) and index not in self.gone)
        return False

    def building(self, variant: str) -> bool:
        """Whether a trial of `variant` would wait now for another trial's build of the cache it reads."""
        group = self.plan.group_of(variant)
        return self.plan.caches[group].cached and self._begun(group) and group not in self.built

    def reported(self, variant: str) -> None:
        """Record that a trial of `variant` reported: its backbone's cache is built."""
        self.built.add(self.plan.group_of(variant))

    def start(self, variant: str) -> None:
        """Count a trial of `variant` as started."""
        self.started[variant] += 1

    def finish(self, variant: str) -> None:
        """Count a trial of `variant` as finished."""
        self.finished[variant] += 1

    def to_evict(self) -> list[int]:
        """Condemned groups whose caches are still on disk."""
        return sorted(self.condemned - self.gone)

    def evicted(self, group: int) -> None:
        """Record that the group's caches are deleted."""
        self.gone.add(group)


def cache_items(data) -> tuple[int, int]:
    """(train, val) items a data spec's caches hold: offline augmentation doubles train; online caches nothing."""
    if data.augment == "online":
        return 0, 0
    parts = data.split if data.kind == "pets" else data.samples
    return len(parts["train"]) * (2 if data.augment == "offline" else 1), len(parts["val"])


def estimated_items(config) -> tuple[int, int]:
    """(train, val) cache items a study will have, before its data is scanned: from the generated set's size,
    the dataset's own lists, or the real Oxford-IIIT Pet's counts (3,680 trainval, 3,669 test)."""
    search = config.search
    if search.synthetic_images:
        trainval, test = (search.synthetic_images + 1) // 2, search.synthetic_images // 2  # alternate images
    elif search.data_root and Path(search.data_root).expanduser().is_dir():
        found = find_samples(Path(search.data_root).expanduser())
        trainval, test = len(found["trainval"]), len(found["test"])
    else:
        trainval, test = 3680, 3669
    if search.augment == "online" or not search.feature_cache:
        return 0, 0
    return trainval * (2 if search.augment == "offline" else 1), test // 2


def study_cache_plan(config, size: int, train_items: int, val_items: int) -> CachePlan | None:
    """The feature-cache plan of a study with these cache items at `size` px within config.run.cache_budget
    (default: a safe share of the cache disk's free space), or None when nothing is cached."""
    if not config.search.feature_cache or not train_items:
        return None
    free = free_disk(config.run.cache_dir)
    budget = parse_size(config.run.cache_budget) if config.run.cache_budget else None
    if budget is not None and budget > free:
        print(f"[petseg] --cache-budget {config.run.cache_budget} is more than the {format_size(free)} free under "
              f"{config.run.cache_dir}; keeping within {format_size(free * DEFAULT_SHARE)} instead", flush=True)
        budget = None
    return plan_cache(config.search.variants, size, train_items, val_items, budget, free)
