"""Opt-in torchvision variants and a user's own: build, exact counts, COCO weights offline, the multi-output feature
cache (LR-ASPP), registration from a config in a fresh process, compare.py --dry-run and benchmark's step probe."""
import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from petseg.bench.probe import step_probe
from petseg.data import build_datasets
from petseg.models import VARIANTS, build_model, count_parameters, hub_checkpoint_path, parameter_counts
from petseg.synthetic import write_dataset
from petseg.train.features import feature_dataset, list_caches
from petseg.train.training import fit
from petseg.train.trial_spec import Searched, TrialSpec
from petseg.tune.config import load_config, resolve_config

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
USER = "tests.user_variant:tiny"
# key -> (trainable, total) at 5 classes and at the study's 3
COUNTS = {
    "lraspp_mobilenet_v3_large": ((246_866, 3_218_818), (246_526, 3_218_478)),
    "deeplabv3_mobilenet_v3_large": ((8_049_413, 11_021_365), (8_048_899, 11_020_851)),
    "fcn_resnet101": ((9_440_773, 51_940_933), (9_439_747, 51_939_907)),
    "deeplabv3_resnet101": ((16_126_725, 58_626_885), (16_126_211, 58_626_371)),
}

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised:UserWarning")


def script(name: str):
    """experiments/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(key: str, num_classes: int) -> torch.nn.Module:
    """torchvision's own model of `key`, random init, no auxiliary head."""
    return getattr(torchvision.models.segmentation, key)(weights=None, weights_backbone=None, num_classes=num_classes,
                                                         aux_loss=False)


@pytest.mark.parametrize("key", list(COUNTS))
def test_opt_in_variants_build_count_and_compute_torchvisions_model(key):
    torch.manual_seed(0)
    model = build_model(key, num_classes=5, pretrained=False).eval()
    assert not VARIANTS[key].default and VARIANTS[key].recipe == "torchvision"
    assert count_parameters(model) == COUNTS[key][0] == parameter_counts(key, 5)
    assert parameter_counts(key) == COUNTS[key][1]
    assert count_parameters(model)[0] == sum(p.numel() for p in model.head.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    tv = reference(key, 5).eval()
    assert sum(p.numel() for p in tv.parameters()) == COUNTS[key][0][1]
    tv.backbone.load_state_dict(model.backbone.body.state_dict())
    tv.classifier.load_state_dict(model.head.state_dict())
    images = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, 5, 64, 72)
        torch.testing.assert_close(logits, tv(images)["out"], rtol=0, atol=0)


@pytest.mark.parametrize("key", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_coco_weights_load_from_the_torch_cache_with_new_classifiers(key, tmp_path, monkeypatch):
    """The real pretrained path, offline: the COCO file is read from torchvision's cache (a random stand-in here)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    aux = {} if key.startswith("lraspp") else {"aux_loss": True}
    published = getattr(torchvision.models.segmentation, key)(weights=None, weights_backbone=None, num_classes=21,
                                                              **aux).state_dict()
    path = hub_checkpoint_path(VARIANTS[key].head_weights)
    path.parent.mkdir(parents=True)
    torch.save(published, path)
    model = build_model(key, num_classes=5)
    for name, value in model.backbone.body.state_dict().items():
        assert torch.equal(value, published[f"backbone.{name}"]), name
    new = ("low_classifier", "high_classifier") if key.startswith("lraspp") else ("4",)
    for name, value in model.head.state_dict().items():
        if name.split(".")[0] in new:
            assert value.shape[0] == 5, name
        else:
            assert torch.equal(value, published[f"classifier.{name}"]), name
    assert not any("aux" in name for name in model.state_dict())


def test_lraspp_caches_both_levels_and_trains_as_it_does_live(tmp_path):
    root = write_dataset(tmp_path / "data", num_images=12, size=48, seed=3)
    datasets = build_datasets(root, 48, None, augment="offline", seed=0)

    def history(cache_dir):
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(TrialSpec("lraspp_mobilenet_v3_large", Searched(1e-2), seed=0, max_epochs=2, batch_size=4,
                          patience=2, pretrained=False, amp=False), datasets,
                report=lambda m, s, _: out.append((m["train_loss"], m["val_loss"], m["features"])),
                feature_cache_dir=cache_dir, device=CPU)
        return out

    live, cached = history(None), history(tmp_path / "cache")
    assert {row[2] for row in live} == {"live"} and {row[2] for row in cached} == {"cached"}
    np.testing.assert_allclose([row[:2] for row in cached], [row[:2] for row in live], rtol=5e-3)
    folders = [folder for folder, _ in list_caches(tmp_path / "cache")]
    assert len(folders) == 2  # train and val
    for folder in folders:
        assert sorted(p.name for p in folder.glob("*.npy")) == ["features_high.npy", "features_low.npy", "masks.npy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("lraspp_mobilenet_v3_large", pretrained=False).eval()
    cache = feature_dataset(model, datasets["val"], tmp_path / "again", CPU, amp=False, progress=lambda line: None)
    features, mask = cache[0]
    with torch.no_grad():
        live_features = model.features(datasets["val"][0][0][None])
    assert set(features) == {"low", "high"} and mask.shape == (48, 48)
    for name in ("low", "high"):  # stored in fp16, read back as float32
        torch.testing.assert_close(features[name], live_features[name][0], rtol=1e-3, atol=1e-3)


def test_a_user_variant_resolves_through_the_config_and_again_in_a_fresh_process(tmp_path):
    config = resolve_config("smoke", overrides={"variants": [USER, "lraspp_mobilenet_v3_large"]})
    assert config.search.variants == ["tiny", "lraspp_mobilenet_v3_large"]
    assert config.search.variant_sources == [USER]
    assert config.trial_params()["variant_sources"] == [USER]
    assert VARIANTS["tiny"].source == USER and VARIANTS["tiny"].backbone_id == "tinyconv_random"
    assert parameter_counts("tiny") == (2_403, 6_163)
    saved = tmp_path / "config.yaml"
    saved.write_text(json.dumps(config.to_dict()))  # YAML reads JSON
    code = (f"from petseg.tune.config import load_config; from petseg.models import build_model, count_parameters; "
            f"c = load_config({str(saved)!r}); print(c.search.variants, count_parameters(build_model('tiny', 3, False)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout
    assert out.strip() == "['tiny', 'lraspp_mobilenet_v3_large'] (2403, 6163)"
    assert load_config(config.to_dict()).search.variants == ["tiny", "lraspp_mobilenet_v3_large"]


def test_an_installed_entry_point_names_a_user_variant(monkeypatch):
    from importlib.metadata import EntryPoint

    from petseg.models import sources

    point = EntryPoint(name="my-tiny", value=USER, group=sources.ENTRY_POINT_GROUP)
    monkeypatch.setattr(sources, "entry_points", lambda group: [point] if group == sources.ENTRY_POINT_GROUP else [])
    config = resolve_config("smoke", overrides={"variants": ["my-tiny"]})
    assert config.search.variants == ["tiny"] and config.search.variant_sources == [USER]


def test_a_bad_user_variant_is_a_config_error():
    from petseg.errors import ConfigError

    with pytest.raises(ConfigError, match="tests.user_variant:nothing"):
        resolve_config("smoke", overrides={"variants": ["tests.user_variant:nothing"]})
    with pytest.raises(ConfigError, match="unknown variant"):
        resolve_config("smoke", overrides={"variants": ["not_a_variant"]})


def test_compare_dry_run_prints_the_counts_of_opt_in_and_user_variants(capsys):
    compare = script("compare")
    assert compare.main(["--preset", "smoke", "--dry-run", "--variants", f"lraspp_mobilenet_v3_large,{USER}"]) == 0
    out = capsys.readouterr().out
    assert "lraspp_mobilenet_v3_large LR-ASPP" in out and "trainable    246,526  total  3,218,478" in out
    assert "tiny" in out and "trainable      2,403  total      6,163" in out


def test_the_benchmark_step_probe_runs_a_multi_output_backbone():
    probe = step_probe("lraspp_mobilenet_v3_large", 1e-2, batch_size=2, size=64, repeats=1, device=CPU)
    assert probe.ratio > 0 and probe.live_flop > probe.cached_flop > 0
