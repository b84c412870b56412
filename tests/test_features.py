"""Feature cache: same training as the live path, keys that cannot go stale, one build across processes."""
import multiprocessing
import warnings

import numpy as np
import pytest
import torch

from petseg.data import build_datasets
from petseg.train.features import feature_dataset, list_caches, main as features_main
from petseg.synthetic import write_dataset
from petseg.models import build_seeded_model
from petseg.train.training import fit

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("feat"), num_images=16, size=48, seed=2)


def model(variant="denseaspp_voc", seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_seeded_model(variant, pretrained=False, seed=seed)


def history(datasets, cache_dir, variant):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(variant, 1e-3, datasets, max_epochs=3, batch_size=4, patience=3, pretrained=False, seed=0,
            report=lambda m, s, _: out.append((m["train_loss"], m["val_loss"], m["val_weighted_iou"])),
            feature_cache_dir=cache_dir, device=CPU, amp=False)  # fp32 compute: only the fp16 cache differs
    return np.array(out)


@pytest.mark.parametrize("variant", ["denseaspp_voc", "fcn_resnet50"])
def test_cached_features_follow_the_live_loss_trajectory(root, tmp_path, variant):
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)
    live = history(datasets, None, variant)
    cached = history(datasets, tmp_path, variant)
    assert len(list_caches(tmp_path)) == 2  # train (with its offline copies) and val
    # fp16 features: the same run to within half-precision rounding, epoch by epoch
    np.testing.assert_allclose(cached[:, :2], live[:, :2], rtol=5e-3)
    np.testing.assert_allclose(cached[:, 2], live[:, 2], atol=5e-3)


def test_features_equal_the_backbone_output(root, tmp_path):
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)
    net = model()
    cached = feature_dataset(net, datasets["train"], tmp_path, CPU, amp=False)
    assert len(cached) == len(datasets["train"]) == 2 * len(datasets["train"].samples)
    for index in (0, len(cached) - 1):  # an original and an offline augmented copy
        image, mask = datasets["train"][index]
        features, cached_mask = cached[index]
        expected = net.features(image[None])[0]
        torch.testing.assert_close(features, expected, rtol=1e-3, atol=1e-3)
        assert torch.equal(cached_mask, mask)


def test_any_change_of_weights_size_split_or_seed_misses_the_cache(root, tmp_path):
    base = build_datasets(root, 48, None, augment="offline", seed=0)["train"]
    feature_dataset(model(), base, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 1
    feature_dataset(model(), base, tmp_path, CPU)  # identical inputs: reused
    assert len(list_caches(tmp_path)) == 1

    changed = model()
    with torch.no_grad():
        changed.backbone.features.conv0.weight[0, 0, 0, 0] += 1e-3
    feature_dataset(changed, base, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 2
    feature_dataset(model(), build_datasets(root, 40, None, augment="offline", seed=0)["train"], tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 3
    other_split = build_datasets(root, 48, None, augment="offline", seed=1)["train"]  # split and copies differ
    feature_dataset(model(), other_split, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 4
    same_split_other_seed = build_datasets(root, 48, base_split(root), augment="offline", seed=5)["train"]
    feature_dataset(model(), same_split_other_seed, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 5


def base_split(root):
    from petseg.data import find_samples, make_split
    return make_split(find_samples(root), seed=0)


def test_online_augmentation_is_never_cached(root, tmp_path):
    online = build_datasets(root, 48, None, augment="online", seed=0)["train"]
    assert feature_dataset(model(), online, tmp_path, CPU) is None
    assert list_caches(tmp_path) == []


def _build_in_process(args):
    root, cache_dir = args
    import petseg.disk as arraycache

    builds = []
    real_build = arraycache._build
    arraycache._build = lambda *a, **k: (builds.append(1), real_build(*a, **k))[1]
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)
    cached = feature_dataset(model(), datasets["val"], cache_dir, CPU)
    return len(builds), float(cached[0][0].sum())


def test_two_processes_build_once_and_both_read(root, tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build_in_process, [(root, tmp_path), (root, tmp_path)])
    assert sorted(builds for builds, _ in results) == [0, 1]
    assert results[0][1] == results[1][1]
    assert len(list_caches(tmp_path)) == 1


def test_cli_lists_and_clears(root, tmp_path, capsys):
    feature_dataset(model(), build_datasets(root, 48, None, seed=0)["val"], tmp_path, CPU)
    features_main(["--cache-dir", str(tmp_path)])
    assert "1 feature cache(s)" in capsys.readouterr().out
    features_main(["--cache-dir", str(tmp_path), "--clear"])
    assert "cleared" in capsys.readouterr().out and list_caches(tmp_path) == []


def test_no_disk_room_falls_back_to_live(root, tmp_path, monkeypatch):
    import petseg.disk as arraycache

    monkeypatch.setattr(arraycache, "disk_free", lambda folder: 1000)
    val = build_datasets(root, 48, None, seed=0)["val"]
    with pytest.warns(UserWarning, match="not enough free disk"):
        assert feature_dataset(model(), val, tmp_path, CPU) is None
    assert list_caches(tmp_path) == []


def test_decoded_cache_gives_identical_items_and_decodes_once(root, tmp_path, monkeypatch):
    import petseg.data.pets as data

    plain = build_datasets(root, 48, None, augment="offline", seed=0)["train"]
    indices = (0, len(plain) - 1)  # an original and an offline augmented copy
    expected = {index: plain[index] for index in indices}
    calls = []
    real_load = data.load_sample
    monkeypatch.setattr(data, "load_sample", lambda sample: (calls.append(sample.name), real_load(sample))[1])
    for _ in range(2):  # a second dataset (another trial) reads the files the first one wrote
        cached = data.PetSegmentation(plain.samples, 48, plain.mean.flatten().tolist(),
                                      plain.std.flatten().tolist(), augment="offline", seed=0,
                                      decoded_cache_dir=tmp_path)
        for index in indices:
            for got, want in zip(cached[index], expected[index]):
                assert torch.equal(got, want)
    assert sorted(calls) == sorted(s.name for s in plain.samples)


def test_feature_code_library_versions_and_architecture_are_in_the_key(root, tmp_path, monkeypatch):
    import petseg.data.files as files
    import petseg.train.features as features
    import torchvision

    val = build_datasets(root, 48, None, seed=0)["val"]
    feature_dataset(model(), val, tmp_path, CPU)
    feature_dataset(model(), val, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 1, "identical inputs and code reuse the cache"
    changes = [
        lambda: monkeypatch.setattr(features, "FEATURE_VERSION", features.FEATURE_VERSION + 1),
        lambda: monkeypatch.setattr(files, "INPUT_VERSION", files.INPUT_VERSION + 1),
        lambda: monkeypatch.setattr(torch, "__version__", "9.9.9"),
        lambda: monkeypatch.setattr(torchvision, "__version__", "9.9.9"),
    ]
    for count, change in enumerate(changes, start=2):
        change()
        feature_dataset(model(), build_datasets(root, 48, None, seed=0)["val"], tmp_path, CPU)
        assert len(list_caches(tmp_path)) == count
    # The same weights under another dilation (its output stride unchanged) compute other features.
    dilated = model()
    for layer in dilated.backbone.features.denseblock4.children():
        layer.conv2.dilation, layer.conv2.padding = (2, 2), (2, 2)
    feature_dataset(dilated, val, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == len(changes) + 2


def _hold_gpu_build_lock(args):
    cache_dir, gpus, hold = args
    import os
    import time

    from petseg.train.features import gpu_build_lock

    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    with gpu_build_lock(cache_dir):
        started = time.monotonic()
        time.sleep(hold)
        return started, time.monotonic()


def test_cache_builds_sharing_a_gpu_take_turns(tmp_path):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        same, same_too, other = pool.map(_hold_gpu_build_lock, [(tmp_path, "1", 1.0), (tmp_path, "1", 1.0),
                                                                 (tmp_path, "0", 1.0)])
    first, second = sorted([same, same_too])
    assert second[0] >= first[1], "two builds on GPU 1 overlapped"
    assert other[0] < max(same[1], same_too[1]), "a build on another GPU waited for them"


def test_only_the_trial_that_builds_a_cache_reports_build_seconds_and_a_resume_keeps_them(root, tmp_path):
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)

    def trial(variant, max_epochs=1, state=None):
        reports = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(variant, 1e-3, datasets, max_epochs=max_epochs, batch_size=4, patience=3, pretrained=False, seed=0,
                report=lambda m, s, _: reports.append((m, s)), feature_cache_dir=tmp_path, device=CPU, amp=False,
                state=state)
        return reports[-1]

    built, built_state = trial("denseaspp_voc")
    read, _ = trial("denseaspp_ade20k")  # the same seeded random DenseNet121: it reads the caches just built
    assert built["cache_build_s"] > 0 and read["cache_build_s"] == 0
    assert len(built["feature_caches"]) == 2 and read["feature_caches"] == built["feature_caches"]
    resumed, _ = trial("denseaspp_voc", max_epochs=2, state=built_state)
    assert resumed["epoch"] == 2 and resumed["cache_build_s"] == built["cache_build_s"]
