"""Feature cache: same training as the live path, keys that cannot go stale, one build across processes."""
import multiprocessing
import warnings

import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from petseg.data import BACKGROUND, build_datasets
from petseg.train.description import module_description
from petseg.train.features import feature_dataset, feature_key, list_caches, main as features_main
from petseg.synthetic import write_dataset
from petseg.models import FrozenBackboneSegmenter, build_seeded_model
from petseg.train.training import fit
from petseg.train.trial_spec import Searched, TrialSpec

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
        fit(TrialSpec(variant, Searched(1e-3), seed=0, max_epochs=3, batch_size=4, patience=3, pretrained=False,
                      amp=False),  # fp32 compute: only the fp16 cache differs
            datasets, report=lambda m, s, _: out.append((m["train_loss"], m["val_loss"], m["val_weighted_iou"])),
            feature_cache_dir=cache_dir, device=CPU)
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
    with pytest.warns(UserWarning, match="no room under .* on the disk for the feature cache"):
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
    import PIL
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
        lambda: monkeypatch.setattr(PIL, "__version__", "9.9.9"),  # Pillow decodes and resizes the images
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


def tiny_backbone(ceil_mode=False, eps=1e-5, groups=1, bias=True, align_corners=False):
    """A five-layer backbone, the same weights for the same arguments (ceil_mode, eps and align_corners
    leave the weights alone)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.BatchNorm2d(4, eps=eps), nn.ReLU(),
                         nn.MaxPool2d(2, ceil_mode=ceil_mode), nn.Conv2d(4, 4, 3, padding=1, groups=groups),
                         nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners))


def tiny_model(**layers):
    return FrozenBackboneSegmenter(tiny_backbone(**layers), nn.Identity())


@pytest.mark.parametrize("change", [{"ceil_mode": True}, {"eps": 1e-3}, {"groups": 2}, {"bias": False},
                                    {"align_corners": True}], ids=lambda change: next(iter(change)))
def test_every_layer_hyperparameter_is_in_the_key(root, change):
    val = build_datasets(root, 48, None, seed=0)["val"]
    # The same weights key for all: only the backbone's description can tell them apart.
    key = lambda backbone: feature_key(backbone, "same weights", val, "fp32", 1.0)  # noqa: E731
    assert key(tiny_backbone()) == key(tiny_backbone()), "the same backbone built twice must hit"
    assert key(tiny_backbone(**change)) != key(tiny_backbone())


def test_a_pooling_layer_with_another_ceil_mode_misses_the_cache(root, tmp_path):
    val = build_datasets(root, 48, None, seed=0)["val"]
    feature_dataset(tiny_model(), val, tmp_path, CPU)
    feature_dataset(tiny_model(), val, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 1
    # 48 px pools to 24 either way, so weights, feature shape and output stride all stay the same.
    feature_dataset(tiny_model(ceil_mode=True), val, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 2


def rotation(degrees=90, mask_fill=BACKGROUND):
    return v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR,
                             fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill})


# Each replaces one of the paper's augmentations (rotation, flip, jitter, blur) by one other parameter.
AUGMENTATION_CHANGES = {
    "rotation degrees": (0, lambda: rotation(degrees=45)),
    "rotation mask fill": (0, lambda: rotation(mask_fill=0)),
    "flip p": (1, lambda: v2.RandomHorizontalFlip(0.25)),
    "jitter brightness": (2, lambda: v2.ColorJitter(brightness=(0, 1.5), contrast=(0, 2), saturation=(0, 2), hue=0.1)),
    "jitter hue": (2, lambda: v2.ColorJitter(brightness=(0, 2), contrast=(0, 2), saturation=(0, 2), hue=0.2)),
    "blur kernel": (3, lambda: v2.GaussianBlur(5, sigma=(0.1, 2.0))),
    "blur sigma": (3, lambda: v2.GaussianBlur(3, sigma=(0.1, 1.0))),
}


def offline_train(root):
    return build_datasets(root, 48, None, augment="offline", seed=0)["train"]


@pytest.mark.parametrize("change", AUGMENTATION_CHANGES, ids=str)
def test_every_augmentation_parameter_is_in_the_key(root, change):
    key = lambda dataset: feature_key(tiny_backbone(), "same weights", dataset, "fp32", 1.0)  # noqa: E731
    assert key(offline_train(root)) == key(offline_train(root)), "the same pipeline built twice must hit"
    changed = offline_train(root)
    position, transform = AUGMENTATION_CHANGES[change]
    changed.augmentation.transforms[position] = transform()
    assert key(changed) != key(offline_train(root))


def test_normalisation_and_transform_order_are_in_the_key(root):
    key = lambda dataset: feature_key(tiny_backbone(), "same weights", dataset, "fp32", 1.0)  # noqa: E731
    other_mean = offline_train(root)
    other_mean.mean = other_mean.mean + 0.01
    flipped_first = offline_train(root)
    transforms = flipped_first.augmentation.transforms
    transforms[0], transforms[1] = transforms[1], transforms[0]
    assert len({key(offline_train(root)), key(other_mean), key(flipped_first)}) == 3


def test_another_jitter_misses_the_cache_whose_copies_it_would_change(root, tmp_path):
    feature_dataset(tiny_model(), offline_train(root), tmp_path, CPU)
    paper = feature_dataset(tiny_model(), offline_train(root), tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 1
    darker = offline_train(root)
    darker.augmentation.transforms[2] = AUGMENTATION_CHANGES["jitter brightness"][1]()
    rebuilt = feature_dataset(tiny_model(), darker, tmp_path, CPU)
    assert len(list_caches(tmp_path)) == 2
    # The old cache would have been stale: the originals agree, the augmented copies do not.
    originals = len(darker.samples)
    assert torch.equal(rebuilt[0][0], paper[0][0])
    assert not all(torch.equal(rebuilt[index][0], paper[index][0]) for index in range(originals, len(darker)))


TINY_MODULE = '''
from torch import nn


class Scale(nn.Module):
    """{doc}"""

    def forward(self, x):
        return {body}  # {comment}
'''


def _load_scale(folder, monkeypatch, **text):
    folder.mkdir()
    (folder / "tiny_scale.py").write_text(TINY_MODULE.format(**text))
    spec = importlib.util.spec_from_file_location("tiny_scale", folder / "tiny_scale.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tiny_scale", module)  # where inspect looks for the class's source
    spec.loader.exec_module(module)
    return module.Scale()


def test_the_code_of_a_backbone_module_outside_torch_is_in_the_description(tmp_path, monkeypatch):
    describe = lambda name, **text: module_description(_load_scale(tmp_path / name, monkeypatch, **text))  # noqa: E731
    doubling = describe("a", doc="Doubles.", body="2 * x", comment="twice")
    assert describe("b", doc="Multiplies by two.", body="2 * x", comment="two times") == doubling, \
        "a reworded docstring or comment must not rebuild a cache"
    assert describe("c", doc="Doubles.", body="3 * x", comment="twice") != doubling


def _key_here(root):
    return feature_key(model().backbone, "same weights", offline_train(root), "fp32", 8.0)


def test_the_key_is_the_same_in_another_process(root):
    # A spawned process has its own hash seed and memory layout.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_key_here, [root]) == [_key_here(root)]


def test_only_the_trial_that_builds_a_cache_reports_build_seconds_and_a_resume_keeps_them(root, tmp_path):
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)

    def trial(variant, max_epochs=1, state=None):
        reports = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(TrialSpec(variant, Searched(1e-3), seed=0, max_epochs=max_epochs, batch_size=4, patience=3,
                          pretrained=False, amp=False), datasets,
                report=lambda m, s, _: reports.append((m, s)), feature_cache_dir=tmp_path, device=CPU, state=state)
        return reports[-1]

    built, built_state = trial("denseaspp_voc")
    read, _ = trial("denseaspp_ade20k")  # the same seeded random DenseNet121: it reads the caches just built
    assert built["cache_build_s"] > 0 and read["cache_build_s"] == 0
    assert len(built["feature_caches"]) == 2 and read["feature_caches"] == built["feature_caches"]
    resumed, _ = trial("denseaspp_voc", max_epochs=2, state=built_state)
    assert resumed["epoch"] == 2 and resumed["cache_build_s"] == built["cache_build_s"]
