"""What a resumed search takes from the command line it is resumed with, and a restore whose checkpoint is gone."""
import shutil

import torch
from ray import tune

from petseg.models.checkpoints import save_trial_state
from petseg.tune.cache_plan import CacheGate, plan_cache
from petseg.tune.config import resolve_config
from petseg.tune.groups import VariantSearcher, searchers_run_with
from petseg.tune.trial_checkpoints import remove_stand_ins, stand_in_for_lost
from petseg.tune.runner import trial_settings
from petseg.tune.storage import Location
from petseg.tune.trainable import RunSettings, restored_state

GiB = 2**30
RESNETS = ["fcn_resnet50", "deeplabv3_resnet50"]  # two ResNet50 caches of 36.5 GiB each at paper scale


def resnet_searcher(budget: int) -> VariantSearcher:
    plan = plan_cache(RESNETS, 256, 7360, 1834, budget=budget)
    return VariantSearcher({v: (1e-4, 1e-2) for v in RESNETS}, num_samples=2, metric="m", mode="max",
                           gate=CacheGate(plan, dict.fromkeys(RESNETS, 2)))


def test_a_restored_searcher_keeps_to_the_cache_budget_it_is_resumed_with(tmp_path):
    started = resnet_searcher(200 * GiB)  # both caches fit at once
    assert started.suggest("t0")["variant"] == "fcn_resnet50"  # backbones open in order
    started.save(str(tmp_path / "searcher.pkl"))

    # Tune unpickles the searcher the study started with, then restores its saved state into it.
    kept = resnet_searcher(200 * GiB)
    kept.restore(str(tmp_path / "searcher.pkl"))
    assert kept.suggest("t1")["variant"] == "deeplabv3_resnet50"  # its cache may build beside FCN's
    resumed = resnet_searcher(200 * GiB)
    with searchers_run_with(plan_cache(RESNETS, 256, 7360, 1834, budget=64 * GiB)):
        resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.gate.plan.budget == 64 * GiB and resumed.gate.started == {"fcn_resnet50": 1, "deeplabv3_resnet50": 0}
    assert resumed.suggest("t1")["variant"] == "fcn_resnet50"  # both would exceed 64 GiB: FCN's trials first
    assert not resumed.gate.allows("deeplabv3_resnet50")


def test_trials_read_run_settings_from_the_driver_not_from_their_saved_config():
    config = resolve_config("smoke", overrides={"cache_dir": "/fast/cache", "cpus_per_trial": 3, "num_workers": 1,
                                                "max_failures": 4})
    assert {"cache_dir", "cpus_per_trial", "num_workers", "max_failures"}.isdisjoint(config.trial_params())
    plan = plan_cache(RESNETS, 256, 7360, 1834, budget=30 * GiB)  # each cache alone is too big
    assert trial_settings(config, plan) == RunSettings(cpus_per_trial=3.0, num_workers=1, cache_dir="/fast/cache",
                                                       cache_budget=None, max_failures=4, live_variants=tuple(RESNETS))


def test_a_trial_restores_its_checkpoint_or_starts_over_when_it_is_gone(tmp_path):
    folder = tmp_path / "checkpoint_000002"
    folder.mkdir()
    save_trial_state(folder, {"progress": {"epoch": 2}, "head": {"w": torch.ones(2)}}, {"variant": "a"})
    checkpoint = tune.Checkpoint.from_directory(str(folder))
    said = []
    state = restored_state(checkpoint, said.append)
    assert state["progress"] == {"epoch": 2} and torch.equal(state["head"]["w"], torch.ones(2)) and not said
    shutil.rmtree(folder)  # gone, and no newer one: nothing to go on from
    assert restored_state(checkpoint, said.append) is None
    assert len(said) == 1 and str(folder) in said[0] and "starts over" in said[0]


def trial_with_checkpoints(trial, *epochs: int) -> None:
    for epoch in epochs:
        folder = trial / f"checkpoint_{epoch - 1:06d}"
        folder.mkdir(parents=True)
        save_trial_state(folder, {"progress": {"epoch": epoch}}, {"variant": "a"})


def test_a_study_naming_a_deleted_checkpoint_resumes_its_trial_from_the_newest_one(tmp_path):
    # Tune kept one checkpoint: it wrote checkpoint_000003, deleted checkpoint_000002, and the driver died before
    # the study naming checkpoint_000003 was saved. Another trial's snapshot names a checkpoint whose upload a kill
    # cut off (nothing on storage), a third one that is there.
    experiment = tmp_path / "study"
    trial_with_checkpoints(experiment / "a_1", 4)
    trial_with_checkpoints(experiment / "c_3", 2)
    named = [tune.Checkpoint.from_directory(str(experiment / trial / f"checkpoint_{index:06d}"))
             for trial, index in (("a_1", 2), ("b_2", 0), ("c_3", 1))]
    written = stand_in_for_lost(Location.at(experiment), named)
    assert written == [str(experiment / "a_1" / "checkpoint_000002"), str(experiment / "b_2" / "checkpoint_000000")]
    said = []
    assert restored_state(named[0], said.append)["progress"] == {"epoch": 4}  # Tune's restore finds a folder
    assert "goes on from" in said[0] and said[0].endswith("checkpoint_000003")
    assert restored_state(named[1], said.append) is None and "starts over" in said[1]
    assert stand_in_for_lost(Location.at(experiment), named) == []  # written once
    remove_stand_ins(Location.at(experiment))
    assert sorted(p.name for p in (experiment / "a_1").iterdir()) == ["checkpoint_000003"]
    assert list((experiment / "b_2").iterdir()) == []
    assert (experiment / "c_3" / "checkpoint_000001" / "state.pt").is_file()
