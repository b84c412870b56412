"""How many trials a search keeps started at once: as many as the cluster's nodes fit now, plus a few pending
beyond them, so that an autoscaler sees their resource demand (pending placement groups) and adds nodes.

The limit is worked out whenever Tune asks for a trial, from the nodes alive then (Ray's public `ray.nodes()`),
never fixed when the study starts: a node that joins mid-study gets trials, one that leaves stops counting, and
a resumed study applies the settings it was resumed with. Every trial suggested before earlier results come
back is closer to a random draw for the search, so only a bounded number pend (README, On a cluster).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import ray

REFRESH_S = 2.0  # how long a count of the nodes is used before Ray is asked again (Tune asks in a loop)


def fits_on(request: dict[str, float], resources: dict[str, float]) -> int:
    """How many trials asking `request` one node with `resources` holds at once."""
    return min(int(resources.get(name, 0) // amount) for name, amount in request.items() if amount > 0)


@dataclass(frozen=True)
class Concurrency:
    """The run settings that bound the trials started at once.

    request: one trial's resources ({"CPU": n, "GPU": n}); pending: trials kept waiting for resources beyond
    those the nodes fit (None: one node's worth on a cluster, none on the embedded local Ray, which cannot
    grow); cap: the most trials started at once whatever the cluster fits (0: no cap).
    """

    request: dict[str, float]
    pending: int | None
    cap: int
    on_cluster: bool

    def limit(self, nodes: list[dict[str, float]]) -> int:
        """The most trials started at once with these alive nodes' total resources: what they fit plus the
        pending allowance, within the cap, and at least one (a cluster with no fitting node yet grows for it)."""
        per_node = [fits_on(self.request, resources) for resources in nodes]
        pending = self.pending if self.pending is not None else (max(per_node, default=0) or 1) * self.on_cluster
        limit = max(1, sum(per_node) + pending)
        return min(limit, self.cap) if self.cap else limit

    def describe(self, nodes: list[dict[str, float]]) -> str:
        """One line for the console: what the nodes fit now, what pends beyond it, and the cap."""
        fit = sum(fits_on(self.request, resources) for resources in nodes)
        pending = (f"{self.pending} pending beyond them" if self.pending is not None
                   else "one node's worth pending beyond them" if self.on_cluster
                   else "none pending beyond them (a local Ray cannot grow)")
        cap = f", at most {self.cap}" if self.cap else ""
        return (f"trials at once: {fit} that the {len(nodes)} node(s) fit now, {pending}{cap}; "
                "recounted as nodes join or leave")


def alive_node_resources() -> list[dict[str, float]]:
    """The total resources of each alive node of the connected Ray."""
    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


class LiveLimit:
    """Concurrency.limit over the nodes alive now, recounted at most every REFRESH_S seconds."""

    def __init__(self, concurrency: Concurrency, nodes=alive_node_resources, clock=time.monotonic):
        self.concurrency, self.nodes, self.clock = concurrency, nodes, clock
        self.value, self.read_at = 0, -float("inf")

    def __call__(self) -> int:
        """The current limit."""
        if self.clock() - self.read_at >= REFRESH_S:
            self.value, self.read_at = self.concurrency.limit(self.nodes()), self.clock()
        return self.value
