"""A node's own cache folder and budget: where they come from, the room a build makes (least recently used caches
no trial reads go first), reservations of builds side by side, and the leftovers of killed builds."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from petseg import node_cache as nc
from petseg.node_cache import (NODE_BUDGET_ENV, NODE_DIR_ENV, Lease, NodeCache, caches_size, make_room, node_cache,
                               reap_abandoned, release_room)
from petseg.tune.cache_plan import plan_cache
from petseg.tune.config import resolve_config

MiB = 2**20
GiB = 2**30


@pytest.fixture
def disk(monkeypatch):
    """A node disk with 10 GiB free, whatever this machine has."""
    monkeypatch.setattr(nc, "disk_free", lambda folder: 10 * GiB)
    monkeypatch.delenv(NODE_DIR_ENV, raising=False)
    monkeypatch.delenv(NODE_BUDGET_ENV, raising=False)


def test_the_node_budget_comes_from_its_environment_then_the_study_then_its_free_disk(disk, tmp_path, monkeypatch):
    default = node_cache(str(tmp_path), None, "n1")
    assert default.budget == int(10 * GiB * nc.DEFAULT_SHARE) and "of free plus cached" in default.source
    assert node_cache(str(tmp_path), "2G", "n1").budget == 2 * GiB
    monkeypatch.setenv(NODE_BUDGET_ENV, "3G")
    monkeypatch.setenv(NODE_DIR_ENV, str(tmp_path / "scratch"))
    own = node_cache(str(tmp_path), "2G", "n1")
    assert own.budget == 3 * GiB and own.folder == str(tmp_path / "scratch") and NODE_BUDGET_ENV in own.source
    assert "node n1: caches in" in own.describe() and "budget 3.0 GiB" in own.describe()
    monkeypatch.setenv(NODE_DIR_ENV, "scratch/petseg")  # not inside whatever folder a trial runs in
    assert node_cache(str(tmp_path), None, "n1").folder == str((Path.home() / "scratch" / "petseg").resolve())
    monkeypatch.setenv(NODE_BUDGET_ENV, "1T")  # more than the disk holds: a safe share of it instead
    assert node_cache(str(tmp_path), None, "n1").budget == int(10 * GiB * nc.DEFAULT_SHARE)
    monkeypatch.setenv(NODE_BUDGET_ENV, "lots")
    with pytest.raises(Exception, match=f"{NODE_BUDGET_ENV} on node n1 'lots' is not a size"):
        node_cache(str(tmp_path), None, "n1")


def built_cache(root, name: str, size: int, used: float) -> "os.PathLike":
    """A complete cache of `size` bytes under root/features, last used at `used` (seconds since the epoch)."""
    folder = root / "features" / name
    folder.mkdir(parents=True)
    (folder / "features.npy").write_bytes(b"\0" * size)
    (folder / "meta.json").write_text(json.dumps({"bytes": size}))
    os.utime(folder / "meta.json", (used, used))
    return folder


def test_a_build_evicts_the_least_recently_used_caches_no_trial_reads(disk, tmp_path):
    old = built_cache(tmp_path, "old", 4 * MiB, 1000)
    older = built_cache(tmp_path, "older", 4 * MiB, 500)
    read = built_cache(tmp_path, "read", 4 * MiB, 100)  # the oldest, but a trial reads it
    lease = Lease(read)
    node = NodeCache("n1", str(tmp_path), 14 * MiB, "test", 10 * GiB, 12 * MiB)
    new = tmp_path / "features" / "new"
    assert make_room(node, new, 5 * MiB)  # 12 + 5 > 14: one cache must go, and only one
    assert read.exists() and old.exists() and not older.exists()
    assert caches_size(tmp_path) >= 13 * MiB  # the reservation counts until the build's own files exist
    release_room(new)
    assert caches_size(tmp_path) < 9 * MiB
    assert not make_room(node, new, 11 * MiB)  # 4 MiB stay leased: no room, so nothing deleted or reserved
    assert read.exists() and old.exists() and 8 * MiB <= caches_size(tmp_path) < 9 * MiB
    lease.release()
    assert make_room(node, new, 9 * MiB) and not read.exists() and old.exists()  # unleased, it goes first


def test_builds_side_by_side_on_a_node_share_its_budget(disk, tmp_path):
    node = NodeCache("n1", str(tmp_path), 10 * MiB, "test", 10 * GiB, 0)
    first, second = tmp_path / "features" / "a", tmp_path / "features" / "b"
    assert make_room(node, first, 6 * MiB)
    assert not make_room(node, second, 6 * MiB)  # the first build's reservation holds its 6 MiB
    release_room(first)
    assert make_room(node, second, 6 * MiB)


def test_leftovers_of_killed_builds_on_this_host_are_deleted_and_live_ones_kept(tmp_path):
    root = tmp_path / "features"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    gone = [root / f"x.building-{host}-{dead}", root / f"y.reserved-{host}-{dead}"]
    kept = [root / f"z.building-{host}-{os.getpid()}", root / f"w.building-otherhost-{dead}", root / "done"]
    for folder in gone + kept:
        folder.mkdir(parents=True)
    reap_abandoned(root)
    assert [f.exists() for f in gone] == [False, False] and all(f.exists() for f in kept)


def test_the_study_plan_keeps_to_the_smallest_node_budget_and_names_every_node(tmp_path):
    from petseg.tune.cache_plan import study_cache_plan
    config = resolve_config("smoke", overrides={"cache_dir": str(tmp_path)})
    nodes = [NodeCache("10.0.0.1", "/a", 40 * GiB, "test", 90 * GiB, 0),
             NodeCache("10.0.0.2", "/b", 20 * GiB, "test", 30 * GiB, GiB)]
    plan = study_cache_plan(config, 256, 7360, 1834, nodes)
    assert plan.budget == 20 * GiB and plan == plan_cache(config.search.variants, 256, 7360, 1834, 20 * GiB,
                                                          tuple(nodes))
    text = "\n".join(plan.describe())
    assert "(the smallest node budget)" in text and "node 10.0.0.1: caches in /a" in text
    assert "node 10.0.0.2: caches in /b, budget 20.0 GiB" in text
    growing = study_cache_plan(resolve_config("smoke", overrides={"cache_budget": "5G"}), 256, 7360, 1834, [])
    assert growing.budget == 5 * GiB  # no node can run a trial yet: the study's own budget
