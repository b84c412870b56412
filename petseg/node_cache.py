"""A node's own feature-cache folder and budget, and the room a new cache needs, made on the node that builds it.

Each node of a cluster keeps its own copies of the caches its trials read, on its own disk. Where they go and how
much they may take is decided on that node: PETSEG_NODE_CACHE_DIR and PETSEG_NODE_CACHE_BUDGET in the environment
of its `ray start` (so a node type with a big scratch disk says so where it is defined; a relative folder is
taken from the home folder), else the study's
--cache-dir and --cache-budget, else a safe share of what the node's cache disk holds free plus what its caches
already take. Before a cache is built, the least recently used caches that no trial on the node reads are
deleted until it fits; when it cannot fit, the trial runs its backbone live.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .disk import disk_free, file_lock, folder_size, owned_by_this_process
from .errors import ConfigError

NODE_DIR_ENV, NODE_BUDGET_ENV = "PETSEG_NODE_CACHE_DIR", "PETSEG_NODE_CACHE_BUDGET"
DEFAULT_SHARE = 0.8  # of the free space plus the caches' own, when no budget is given
MARGIN = 1.1  # free space a build needs beyond its size (file-system overhead, other writers)
FEATURES = "features"
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, name: str = "cache_budget (--cache-budget)") -> int:
    """Bytes of a size like "64G", "64GiB", "500M" or "1024" (binary units); a ConfigError names a bad one."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"{name} {text!r} is not a size; give e.g. 64G, 500M or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(size: float) -> str:
    """Bytes in binary units: "36.0 GiB", "7.7 MiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


@dataclass(frozen=True)
class NodeCache:
    """One node's cache folder, its feature-cache budget and where that came from, its free disk and its caches."""

    node: str
    folder: str
    budget: int
    source: str
    free: int
    used: int

    def describe(self) -> str:
        """One line: node, folder, budget and its source, free disk."""
        return (f"node {self.node}: caches in {self.folder}, budget {format_size(self.budget)} ({self.source}; "
                f"{format_size(self.free)} free, {format_size(self.used)} in caches now)")


def node_cache(study_folder: str, study_budget: str | None, node: str = "") -> NodeCache:
    """This node's cache folder and budget (see the module docstring), measured here."""
    # A trial runs in its own folder, so a relative PETSEG_NODE_CACHE_DIR is taken from the home folder, never there.
    folder = (Path.home() / Path(os.environ.get(NODE_DIR_ENV) or study_folder).expanduser()).resolve()
    used = caches_size(folder)
    free = disk_free(folder)
    if os.environ.get(NODE_BUDGET_ENV):
        budget, source = parse_size(os.environ[NODE_BUDGET_ENV], f"{NODE_BUDGET_ENV} on node {node or 'here'}"), \
            f"{NODE_BUDGET_ENV} set on the node"
    elif study_budget:
        budget, source = parse_size(study_budget), "--cache-budget"
    else:
        budget, source = int((free + used) * DEFAULT_SHARE), f"{DEFAULT_SHARE:.0%} of free plus cached"
    if budget > free + used:
        budget, source = int((free + used) * DEFAULT_SHARE), f"{source} is over the free disk: {DEFAULT_SHARE:.0%} of it"
    return NodeCache(node, str(folder), budget, source, free, used)


def caches_size(folder: Path) -> int:
    """Bytes of the feature caches (complete or being built) under a cache folder."""
    root = folder / FEATURES
    return sum(folder_size(entry) for entry in root.iterdir() if entry.is_dir()) if root.is_dir() else 0


def lease_path(cache: Path) -> Path:
    """The file a reader of `cache` holds a shared lock on (kept beside it, never deleted with it)."""
    return cache.with_name(cache.name + ".lease")


class Lease:
    """A shared lock on a cache for as long as a trial reads it, so no eviction on its node deletes it meanwhile;
    taking it marks the cache as just used (eviction goes least recently used first)."""

    def __init__(self, cache: Path):
        path = lease_path(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_SH)  # waits while an eviction deletes the cache
        os.utime(path)

    def release(self) -> None:
        """Let the cache be evicted again."""
        self.handle.close()


def make_room(node: NodeCache, cache: Path, needed: int) -> bool:
    """Reserve `needed` bytes on this node for building `cache` within its budget and free disk, deleting the least
    recently used caches no trial reads until they fit; False (nothing reserved) when they cannot. The reservation
    counts as cached bytes until release_room, so builds started side by side on the node all keep to the budget."""
    root = Path(node.folder) / FEATURES
    with file_lock(root.parent / "locks" / "budget.lock"):
        reap_abandoned(root)
        victims = [victim for victim in least_recently_used(root, keep=cache) if not leased(victim)]
        # Delete nothing for a build that could not fit even with every unread cache gone.
        if not fits(node, root, needed - sum(folder_size(victim) for victim in victims)):
            return False
        for victim in victims:
            if fits(node, root, needed):
                break
            evict(victim)
        if not fits(node, root, needed):
            return False
        reservation = reservation_path(cache)
        reservation.mkdir(parents=True, exist_ok=True)
        # A sparse file: it takes no disk, but its size counts in caches_size until the build's own files exist.
        with open(reservation / "bytes", "wb") as handle:
            handle.truncate(needed)
        return True


def release_room(cache: Path) -> None:
    """Drop the reservation make_room made for `cache` (built or not)."""
    shutil.rmtree(reservation_path(cache), ignore_errors=True)


_HOST = socket.gethostname()
_OWNED = re.compile(r"\.(?:reserved|building)-(?P<host>.+)-(?P<pid>\d+)$")


def reservation_path(cache: Path) -> Path:
    """The folder that stands for `cache`'s bytes while this process builds it."""
    return owned_by_this_process(cache, "reserved")


def reap_abandoned(root: Path) -> None:
    """Delete reservations and half-built caches of this host's processes that no longer run (a killed trial)."""
    for entry in root.iterdir() if root.is_dir() else ():
        owner = _OWNED.search(entry.name)
        if owner and owner["host"] == _HOST and not process_alive(int(owner["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fits(node: NodeCache, root: Path, needed: int) -> bool:
    """Whether `needed` more bytes keep this node's caches within its budget and its disk's free space."""
    return caches_size(root.parent) + needed <= node.budget and disk_free(root) >= needed * MARGIN


def least_recently_used(root: Path, keep: Path) -> list[Path]:
    """Complete caches under `root` other than `keep`, least recently used (leased) first."""
    caches = [entry for entry in root.iterdir() if entry.is_dir() and entry != keep
              and (entry / "meta.json").is_file()] if root.is_dir() else []
    return sorted(caches, key=last_used)


def last_used(cache: Path) -> float:
    """When a trial last took a lease on `cache` (else when it was built)."""
    lease = lease_path(cache)
    return lease.stat().st_mtime if lease.exists() else (cache / "meta.json").stat().st_mtime


@contextmanager
def unleased(cache: Path):
    """Yields whether no trial holds a lease on `cache`, keeping new leases out for the block while none does."""
    with open(lease_path(cache), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def leased(cache: Path) -> bool:
    """Whether a trial holds a lease on `cache` now."""
    with unleased(cache) as free:
        return not free


def evict(cache: Path) -> bool:
    """Delete `cache` unless a trial holds a lease on it; whether it was deleted."""
    with unleased(cache) as free:
        if free:
            shutil.rmtree(cache, ignore_errors=True)
        return free
