"""The feature cache within a disk budget: how big each backbone's cache is, which backbones are cached and
in what order their variants run, and the peak disk use that order reaches on a node.

Every node keeps its own caches within its own budget (petseg.node_cache, measured on that node); the order
below keeps to the smallest budget of the nodes known when the study starts, and a node that joins later
plans for itself when its trials build caches.

Variants that share a backbone share its cache. The search runs one backbone's variants while its cache
exists and lets the next backbone's trials start (and build their cache) alongside the last trials of
the previous one only when both caches fit the budget together; a done backbone's cache is deleted when
the next one needs the room. A backbone whose cache alone exceeds the budget runs live (no cache), said
before the study.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..data import get_source
from ..models import VARIANTS, build_seeded_model
from ..node_cache import NODE_BUDGET_ENV, NODE_DIR_ENV, NodeCache, format_size, node_cache, parse_size
from .cluster import trial_request
from .concurrency import fits_on

FEATURE_BYTES = 2  # the cache stores features in fp16


def bytes_per_item(variant: str, size: int) -> int:
    """Disk bytes one image takes in `variant`'s backbone cache at `size` px: fp16 features (of every output of a
    backbone with several) plus a uint8 mask.

    The feature shapes come from a forward pass on the meta device: no weights, no memory, no time.
    """
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        features = build_seeded_model(variant, pretrained=False, seed=0).backbone(torch.empty(1, 3, size, size))
    outputs = features.values() if isinstance(features, dict) else [features]
    return sum(math.prod(output.shape[1:]) for output in outputs) * FEATURE_BYTES + size * size


@dataclass(frozen=True)
class BackboneCache:
    """One backbone's cache: the variants that read it, its size on disk, and whether it fits the budget."""

    backbone: str
    variants: tuple[str, ...]
    bytes: int
    cached: bool


@dataclass(frozen=True)
class CachePlan:
    """The backbones in the order their variants run, the budget the order keeps to, the nodes it was measured on
    (their own budgets), and the peak disk use of that order on a node."""

    caches: tuple[BackboneCache, ...]
    budget: int
    nodes: tuple[NodeCache, ...] = ()

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
        """The plan as lines: each backbone's size and fate in order, the peak on a node within the budget, then
        each node's own folder and budget."""
        lines = [f"{index + 1}. {cache.backbone:<26} {format_size(cache.bytes):>10}  "
                 f"{'cached' if cache.cached else 'LIVE (alone over the budget)'}: {', '.join(cache.variants)}"
                 for index, cache in enumerate(self.caches)]
        budget = (f"a budget of {format_size(self.budget)}{' (the smallest node budget)' if len(self.nodes) > 1 else ''}"
                  if self.budget < sys.maxsize else "no common budget (no node can run a trial yet)")
        lines.append(f"peak feature-cache use per node {format_size(self.peak)} within {budget}; all caches at once "
                     f"would take {format_size(sum(cache.bytes for cache in self.caches))}")
        lines += [node.describe() for node in self.nodes]
        lines.append(f"each node keeps its own copies within its own budget (set {NODE_BUDGET_ENV} / {NODE_DIR_ENV} "
                     "where a node starts); nodes that join later measure and plan for themselves")
        return lines


def plan_cache(variants: list[str], size: int, train_items: int, val_items: int, budget: int,
               nodes: tuple[NodeCache, ...] = ()) -> CachePlan:
    """The cache plan of `variants` at `size` px for train + val items within `budget` bytes, backbones in the
    registry's order; `nodes`: the nodes' own caches the budget was taken from."""
    caches = []
    for backbone in dict.fromkeys(VARIANTS[v].backbone_id for v in variants):
        members = tuple(v for v in variants if VARIANTS[v].backbone_id == backbone)
        size_on_disk = bytes_per_item(members[0], size) * (train_items + val_items)
        caches.append(BackboneCache(backbone, members, size_on_disk, size_on_disk <= budget))
    return CachePlan(tuple(caches), budget, tuple(nodes))


class CacheGate:
    """Which variants may start trials now, so that the caches on disk stay within the plan's budget.

    Cached backbones open one after another in the plan's order: the next one opens while earlier ones are
    on disk only if all their caches fit the budget together. A backbone is done when all its variants'
    trials have finished; its cache stays (a later study may reuse it) until the next backbone needs the
    room, and is then condemned: the searcher deletes it, after which the next backbone opens.
    Live backbones are always open. A backbone is building from its first trial's start until one of its
    trials reports (its cache exists on that trial's node): a trial started meanwhile would likely wait for a
    build. Each node keeps its own copies within its own budget (petseg.node_cache).
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
        """Record that a trial of `variant` reported: its backbone's cache is built (on that trial's node)."""
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
    parts = data.split if data.split else data.samples
    return len(parts["train"]) * (2 if data.augment == "offline" else 1), len(parts["val"])


def estimated_items(config) -> tuple[int, int]:
    """(train, val) cache items a study will have, before its data is scanned: as its dataset's source counts them
    (from the generated set's size, the tree's own lists, or the real dataset's known counts)."""
    search = config.search
    train, val = get_source(search.dataset).image_counts(search.data_root, search.synthetic_images, search.seed,
                                                         search.split_ratio)
    if search.augment == "online" or not search.feature_cache:
        return 0, 0
    return train * (2 if search.augment == "offline" else 1), val


def measured_nodes(config) -> list[NodeCache]:
    """The cache folder and budget of each alive node that can run a trial, measured on it by a task pinned there;
    a node that does not answer within a minute is left out (it plans for itself when its trials build)."""
    nodes = [node for node in ray.nodes() if node["Alive"] and fits_on(trial_request(config), node["Resources"])]
    measure = ray.remote(num_cpus=0)(node_cache)
    pending = [measure.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
        config.run.cache_dir, config.run.cache_budget, node["NodeManagerAddress"]) for node in nodes]
    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=60)
    return ray.get(ready)


def study_cache_plan(config, size: int, train_items: int, val_items: int,
                     nodes: list[NodeCache] | None = None) -> CachePlan | None:
    """The feature-cache plan of a study with these cache items at `size` px, or None when nothing is cached.

    Its budget is the smallest of `nodes`' own (default: this machine's, measured here); with no node able to run
    a trial yet (a cluster that grows), --cache-budget or else no bound: each node keeps to its own as it builds.
    """
    if not config.search.feature_cache or not train_items:
        return None
    if nodes is None:
        nodes = [node_cache(config.run.cache_dir, config.run.cache_budget, "here")]
    if nodes:
        budget = min(node.budget for node in nodes)
    else:
        budget = parse_size(config.run.cache_budget) if config.run.cache_budget else sys.maxsize
    return plan_cache(config.search.variants, size, train_items, val_items, budget, tuple(nodes))
