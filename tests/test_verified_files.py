"""Damaged caches and checkpoints are named: a cache is rebuilt, a checkpoint refused; neither is read silently."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from ray import tune

from petseg.disk import META, cached_arrays
from petseg.errors import CheckpointError
from petseg.models.checkpoints import (ENDED_STATE_FILE, TRIAL_STATE_FILE, compact_ended_state, load_trial_state,
                                      save_trial_state)

SPECS = {"features": ((64, 32), np.float16), "masks": ((64, 8), np.uint8)}


class Builds:
    """A fill that writes known values and counts how often it ran."""

    def __init__(self):
        self.count = 0

    def __call__(self, arrays):
        self.count += 1
        arrays["features"][:] = np.arange(64 * 32, dtype=np.float16).reshape(64, 32) / 100
        arrays["masks"][:] = 2


def build(folder, builds):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = cached_arrays(folder, SPECS, builds, {"what": "test"})
    return arrays, [str(w.message) for w in caught]


def truncate(path):
    os.truncate(path, path.stat().st_size // 2)


def scribble(path):
    data = bytearray(path.read_bytes())
    data[-200:] = os.urandom(200)
    path.write_bytes(bytes(data))


def zero_half(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


def test_an_intact_cache_is_read_without_a_rebuild_and_records_its_files(tmp_path):
    builds = Builds()
    build(tmp_path / "cache", builds)
    arrays, messages = build(tmp_path / "cache", builds)
    assert builds.count == 1 and messages == []
    assert float(arrays["features"][1, 0]) == pytest.approx(0.32, abs=1e-3)
    files = json.loads((tmp_path / "cache" / META).read_text())["files"]
    assert set(files) == set(SPECS) and all(len(f["sha256"]) == 64 for f in files.values())


@pytest.mark.parametrize("damage,reason", [(truncate, "bytes, .* when built"), (scribble, "sha256 differs"),
                                           (zero_half, "sha256 differs")], ids=["truncated", "random", "zeroed"])
def test_a_damaged_cache_is_named_and_rebuilt(tmp_path, damage, reason):
    builds = Builds()
    build(tmp_path / "cache", builds)
    damage(tmp_path / "cache" / "features.npy")
    arrays, messages = build(tmp_path / "cache", builds)
    assert builds.count == 2, "the damaged cache was read instead of rebuilt"
    assert len(messages) == 1 and str(tmp_path / "cache" / "features.npy") in messages[0]
    assert "rebuilding it" in messages[0]
    import re
    assert re.search(reason, messages[0]), messages[0]
    assert float(arrays["features"][1, 0]) == pytest.approx(0.32, abs=1e-3)  # the rebuilt values, not the damage
    assert build(tmp_path / "cache", builds)[1] == [] and builds.count == 2


def test_a_cache_without_checksums_is_rebuilt(tmp_path):
    builds = Builds()
    build(tmp_path / "cache", builds)
    meta = tmp_path / "cache" / META
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "files"}))
    _, messages = build(tmp_path / "cache", builds)
    assert builds.count == 2 and "records no file checksums" in messages[0]


class Folder:
    """A Tune-checkpoint stand-in: as_directory() yields a folder."""

    def __init__(self, path):
        self.path = path

    def as_directory(self):
        from contextlib import nullcontext
        return nullcontext(self.path)


def test_a_trial_state_round_trips_and_a_damaged_one_is_refused_naming_the_file(tmp_path):
    state = {"head": {"w": torch.arange(1000.0)}, "progress": {"epoch": 3}}
    save_trial_state(tmp_path, state, {"variant": "fcn_resnet50"})
    loaded = load_trial_state(Folder(tmp_path))
    assert loaded["progress"] == {"epoch": 3} and torch.equal(loaded["head"]["w"], state["head"]["w"])
    path = tmp_path / TRIAL_STATE_FILE
    for damage, reason in ((zero_half, "checksum"), (truncate, "bytes")):
        save_trial_state(tmp_path, state, {"variant": "fcn_resnet50"})
        damage(path)
        with pytest.raises(CheckpointError, match=f"{path}.*damaged.*{reason}"):
            load_trial_state(Folder(tmp_path))


def test_an_unreadable_trial_state_without_a_checksum_is_named_too(tmp_path):
    (tmp_path / TRIAL_STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{tmp_path / TRIAL_STATE_FILE}: not a readable torch checkpoint"):
        load_trial_state(Folder(tmp_path))


def test_an_ended_trial_keeps_its_heads_progress_and_config_and_drops_what_only_a_resume_needs(tmp_path):
    head = {"w": torch.randn(256, 256)}
    state = {"head": head, "optimizer": {"state": {0: {"momentum_buffer": torch.randn(256, 256)}}},
             "scheduler": {"last_epoch": 3}, "progress": {"epoch": 3, "best_head": head}}
    save_trial_state(tmp_path, state, {"variant": "a"})
    checkpoint = tune.Checkpoint.from_directory(str(tmp_path))
    freed = compact_ended_state(checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENDED_STATE_FILE, ENDED_STATE_FILE + ".sha256"]
    assert freed > 256 * 256 * 4  # the momentum buffer
    kept = load_trial_state(checkpoint)
    assert set(kept) == {"head", "progress", "config"} and torch.equal(kept["progress"]["best_head"]["w"], head["w"])
    assert compact_ended_state(checkpoint) == 0  # once
    (tmp_path / ENDED_STATE_FILE).write_bytes(b"cut")
    with pytest.raises(CheckpointError, match=f"{tmp_path / ENDED_STATE_FILE} is damaged"):
        load_trial_state(checkpoint)
