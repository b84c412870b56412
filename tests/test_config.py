"""Config layering (preset < YAML < flags) and its checks."""
import dataclasses

import pytest
import yaml

from petseg.tune.config import ConfigError, load_config, loader_workers, resolve_config


def test_yaml_overrides_preset_and_flags_override_yaml(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"max_epochs": 5, "num_samples": 3}))
    config = resolve_config("smoke", path, {"num_samples": 7, "name": None})
    search = config.search
    assert (search.image_size, search.max_epochs, search.num_samples, config.run.name) == (64, 5, 7, "smoke")


def test_a_saved_config_is_read_back_through_the_same_checks(tmp_path):
    config = resolve_config("smoke", overrides={"num_samples": 3, "cpus_per_trial": 1.5})
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config
    flat = tmp_path / "flat.yaml"  # configs saved before the search / run split were flat
    flat.write_text(yaml.safe_dump(config.to_flat()))
    assert load_config(flat) == config
    path.write_text(yaml.safe_dump({**config.to_dict(), "run": {**config.to_dict()["run"], "cpus_per_trial": -1}}))
    with pytest.raises(ConfigError, match="cpus_per_trial must be > 0"):
        load_config(path)


def test_each_field_belongs_to_what_is_searched_or_to_where_it_runs():
    config = resolve_config("smoke")
    assert config.search.max_epochs == 2 and config.run.cpus_per_trial == 1.0
    assert not set(dataclasses.asdict(config.search)) & set(dataclasses.asdict(config.run))
    moved = config.replace(storage_path="/elsewhere", max_epochs=4)
    assert (moved.run.storage_path, moved.search.max_epochs, moved.search.image_size) == ("/elsewhere", 4, 64)
    assert {"variant", "lr"}.isdisjoint(config.trial_params())  # the searcher adds those


@pytest.mark.parametrize("values,message", [
    ({"seeds": -1}, "seeds must be 0 or more"),
    ({"num_workers": -2}, "num_workers must be 0 or more"),
    ({"max_concurrent_trials": -1}, "max_concurrent_trials"),
    ({"epochs": 3}, "unknown config keys ['epochs']"),
    ({"max_epochs": "two"}, "max_epochs must be a whole number, got 'two'"),
    ({"image_size": 64.5}, "image_size must be a whole number, got 64.5"),
    ({"asha": "no"}, "asha must be true or false, got 'no'"),
    ({"max_failures": -5}, "max_failures must be 0 or more"),
    ({"variants": "fcn_resnet50"}, "variants must be a list"),
    ({"cpus_per_trial": float("nan")}, "cpus_per_trial must be a finite number, got nan"),
    ({"gpus_per_trial": float("inf")}, "gpus_per_trial must be a finite number"),
    ({"lr_range": {"denseaspp": [1e-5, "fast"], "torchvision": [1e-4, 1e-1]}}, "lr_range['denseaspp'][1] must be"),
    ({"lr_range": {"denseaspp": [1e-5, 1e-2]}}, "lr_range has no range for torchvision"),
    ({"num_workers": True}, "num_workers must be a whole number (or left out)"),
    ({"head_weights": 3}, "head_weights must be"),
    ({"synthetic_images": 2}, "synthetic_images must be 0 (a real dataset) or at least 4"),
])
def test_unusable_values_are_named(values, message):
    with pytest.raises(ConfigError) as err:
        resolve_config("smoke", overrides=values)
    assert message in str(err.value).replace(" (a flag)", "")  # overrides are what flags give


def test_yaml_numbers_read_as_strings_are_numbers(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("lr_range: {denseaspp: [1e-5, 1e-2], torchvision: [1e-4, 1e-1]}\nmax_epochs: 3.0\n")
    assert yaml.safe_load(path.read_text())["lr_range"]["denseaspp"][0] == "1e-5"  # YAML's own reading
    config = resolve_config("smoke", path)
    assert config.search.lr_range == {"denseaspp": [1e-5, 1e-2], "torchvision": [1e-4, 1e-1]}
    assert config.search.max_epochs == 3 and isinstance(config.search.max_epochs, int)
    path.write_text("max_epochs: two\n")
    with pytest.raises(ConfigError, match=f"max_epochs in {path} must be a whole number"):
        resolve_config("smoke", path)


def test_loader_workers_follow_the_trial_cpus_unless_set():
    assert loader_workers(None, 4) == 3
    assert loader_workers(None, 1) == 0
    assert loader_workers(2, 8) == 2
