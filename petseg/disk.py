"""What petseg keeps on disk, shared by processes on a node: its cache folder, file locks, JSON values and
memory-mapped arrays computed once (built under a lock, published atomically, verified when read).

A cached array's size, sha256 and modification time are recorded in meta.json, written last. Every read
checks the sizes (a truncated file), and re-hashes a file whose modification time changed since (bytes
written over it); a damaged cache is named in a warning and rebuilt, never read."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

META = "meta.json"


def default_cache_dir() -> Path:
    """Where petseg keeps generated datasets, statistics and caches: $PETSEG_CACHE or ~/.cache/petseg."""
    return Path(os.environ.get("PETSEG_CACHE", Path.home() / ".cache" / "petseg"))


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created if absent) across processes on this node."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_json(cache_dir: str | Path | None, name: str, compute: Callable[[], dict]) -> dict:
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


def disk_free(folder: Path) -> int:
    """Free bytes on the file system that holds `folder` (or its nearest existing parent)."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    return shutil.disk_usage(existing).free


def cached_arrays(folder: Path, specs: dict[str, tuple[tuple[int, ...], np.dtype]],
                  fill: Callable[[dict[str, np.ndarray]], None], meta: dict,
                  room: Callable[[int], bool] | None = None, allocated: Callable[[], None] | None = None,
                  margin: float = 1.1) -> dict[str, np.ndarray] | None:
    """Memory-mapped arrays of `specs` {name: (shape, dtype)} in `folder`, built by `fill` if absent.

    Concurrent callers build once: one holds the lock and builds, the others wait and then read. A damaged
    cache (see the module docstring) is rebuilt. Returns None, building nothing, when room(bytes) says there is
    no room for the arrays (default: the disk lacks their size times `margin`). allocated() is called once the
    build's files exist at their full size (so a reservation standing in for them can go).
    """
    if not (folder / META).is_file() or damage(folder, specs):
        with file_lock(folder.with_name(folder.name + ".lock")):
            problem = damage(folder, specs) if (folder / META).is_file() else None
            if problem:
                warnings.warn(f"cache {folder} is damaged ({problem}); rebuilding it", stacklevel=2)
                shutil.rmtree(folder)
            if not (folder / META).is_file():
                needed = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs.values())
                if not (room(needed) if room else disk_free(folder.parent) >= needed * margin):
                    return None
                _build(folder, specs, fill, {**meta, "bytes": needed}, allocated)
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in specs}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path, names) -> dict:
    """Size, sha256 and modification time of each array file in `folder`."""
    files = {}
    for name in names:
        path = folder / f"{name}.npy"
        stat = path.stat()
        files[name] = {"bytes": stat.st_size, "sha256": file_sha256(path), "mtime_ns": stat.st_mtime_ns}
    return files


def damage(folder: Path, specs) -> str | None:
    """What is wrong with the complete cache in `folder` (a file missing, truncated or changed since it was
    built), or None when it is as built."""
    try:
        files = json.loads((folder / META).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / META} is unreadable or records no file checksums"
    for name in specs:
        path, recorded = folder / f"{name}.npy", files.get(name)
        if recorded is None or not path.is_file():
            return f"{path} is missing"
        stat = path.stat()
        if stat.st_size != recorded["bytes"]:
            return f"{path} has {stat.st_size:,} bytes, {recorded['bytes']:,} when built"
        if stat.st_mtime_ns != recorded["mtime_ns"] and file_sha256(path) != recorded["sha256"]:
            return f"{path} was changed since it was built (its sha256 differs)"
    return None


def owned_by_this_process(folder: Path, what: str) -> Path:
    """`folder`'s sibling `<name>.<what>-<host>-<pid>`: named by host and process, so a node can tell (and delete)
    what its killed processes left (petseg.node_cache.reap_abandoned)."""
    return folder.with_name(f"{folder.name}.{what}-{socket.gethostname()}-{os.getpid()}")


def _build(folder: Path, specs, fill, meta: dict, allocated: Callable[[], None] | None = None) -> None:
    scratch = owned_by_this_process(folder, "building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        arrays = {name: np.lib.format.open_memmap(scratch / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                  for name, (shape, dtype) in specs.items()}
        if allocated:
            allocated()
        fill(arrays)
        for array in arrays.values():
            array.flush()
        del arrays  # unmapped before the files are hashed
        # meta.json marks a complete cache and records how to tell it intact: written last, then the folder
        # appears in one rename (which keeps the files' modification times).
        (scratch / META).write_text(json.dumps({**meta, "files": _manifest(scratch, specs)}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def folder_size(folder: Path) -> int:
    """Bytes used by the files under `folder` (files deleted meanwhile, e.g. by another trial, count as 0)."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk skips folders that vanish while it walks
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total
