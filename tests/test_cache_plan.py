"""The feature cache within a disk budget: sizes, the backbone-by-backbone plan and the gate that keeps to it."""
import warnings

import numpy as np
import pytest
import torch

from petseg.data import build_datasets
from petseg.errors import ConfigError
from petseg.models import build_seeded_model, default_variants
from petseg.train.features import feature_dataset
from petseg.node_cache import parse_size
from petseg.tune.cache_plan import CacheGate, bytes_per_item, plan_cache

GiB = 2**30
ALL = default_variants()


def test_sizes_read_as_binary_units_and_a_bad_one_is_named():
    assert parse_size("64G") == parse_size("64GiB") == parse_size("64 gb") == 64 * GiB
    assert parse_size("1.5T") == int(1.5 * 2**40) and parse_size("500M") == 500 * 2**20 and parse_size("1024") == 1024
    with pytest.raises(ConfigError, match="'lots' is not a size"):
        parse_size("lots")


@pytest.mark.parametrize("variant", ["fcn_resnet50", "denseaspp_voc", "lraspp_mobilenet_v3_large"])
def test_the_planned_size_is_what_the_cache_takes(variant, pet_root, tmp_path):
    dataset = build_datasets(pet_root, 48, None, augment=None)["val"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_seeded_model(variant, pretrained=False, seed=0)
    cached = feature_dataset(model, dataset, tmp_path, torch.device("cpu"), amp=False, progress=lambda line: None)
    on_disk = sum(array.nbytes for array in cached.features.values()) + cached.masks.nbytes
    assert bytes_per_item(variant, 48) * len(dataset) == on_disk


def test_the_paper_scale_plan_fits_a_64_gib_disk():
    # 256 px, 3,680 training images doubled by offline augmentation, 1,834 val: ~131 GiB if all cached at once.
    plan = plan_cache(ALL, 256, 7360, 1834, budget=64 * GiB)
    assert [cache.cached for cache in plan.caches] == [True] * 4  # four distinct backbones, all from the cache
    assert sum(cache.bytes for cache in plan.caches) > 2 * 64 * GiB
    assert plan.peak <= 64 * GiB and not plan.live_variants


def test_a_backbone_over_the_budget_runs_live_and_is_said():
    plan = plan_cache(ALL, 256, 7360, 1834, budget=30 * GiB)
    assert plan.live_variants == ["fcn_resnet50", "deeplabv3_resnet50", "cutdenseaspp_voc", "cutdenseaspp_ade20k"]
    assert any("LIVE" in line and "fcn_resnet50" in line for line in plan.describe())


def test_the_gate_opens_backbones_in_order_within_the_budget_and_condemns_only_what_is_in_the_way():
    plan = plan_cache(ALL, 256, 7360, 1834, budget=64 * GiB)
    gate = CacheGate(plan, dict.fromkeys(ALL, 2))
    assert gate.allows("fcn_resnet50") and not gate.allows("deeplabv3_resnet50")  # in order
    for _ in range(2):
        gate.start("fcn_resnet50")
    assert not gate.allows("deeplabv3_resnet50")  # both ResNet50 caches would exceed 64 GiB ...
    assert gate.to_evict() == []  # ... and FCN's trials are not done: nothing to delete yet
    gate.finish("fcn_resnet50")
    gate.finish("fcn_resnet50")
    assert not gate.allows("deeplabv3_resnet50")  # FCN is done: its cache is condemned, still on disk
    assert gate.to_evict() == [0]
    gate.evicted(0)
    assert gate.to_evict() == [] and gate.allows("deeplabv3_resnet50")
    gate.start("deeplabv3_resnet50")
    gate.start("deeplabv3_resnet50")
    # ResNet50 (36.5 GiB) and DenseNet121 (18.5 GiB) fit together: the next cache builds beside the last trials.
    assert gate.allows("denseaspp_voc") and gate.allows("denseaspp_ade20k")
    assert not gate.allows("cutdenseaspp_voc")


def test_a_budget_that_holds_everything_deletes_nothing():
    plan = plan_cache(ALL, 256, 7360, 1834, budget=200 * GiB)
    gate = CacheGate(plan, dict.fromkeys(ALL, 1))
    for variant in ALL:
        assert gate.allows(variant)
        gate.start(variant)
        gate.finish(variant)
    assert gate.to_evict() == []  # a later study may reuse every cache


def test_random_weight_runs_have_four_distinct_backbones():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbones = {v: build_seeded_model(v, pretrained=False, seed=0).backbone.state_dict() for v in ALL}

    def same(a, b):
        return all(torch.equal(backbones[a][k], backbones[b][k]) for k in backbones[a])

    assert not same("fcn_resnet50", "deeplabv3_resnet50")  # different COCO-trained ResNet50s in the real study
    assert same("denseaspp_voc", "denseaspp_ade20k") and same("cutdenseaspp_voc", "cutdenseaspp_ade20k")
    assert len({np.float64(backbones[v][next(iter(backbones[v]))].sum()) for v in ALL}) == 4
