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
    ({"storage_path": "s3://bucket/petseg"}, "is a URI"),
    ({"seeds": -1}, "seeds must be 0 or more"),
    ({"num_workers": -2}, "num_workers must be 0 or more"),
    ({"max_concurrent_trials": -1}, "max_concurrent_trials"),
    ({"epochs": 3}, "unknown config keys ['epochs']"),
])
def test_unusable_values_are_named(values, message):
    with pytest.raises(ConfigError) as err:
        resolve_config("smoke", overrides=values)
    assert message in str(err.value)


def test_loader_workers_follow_the_trial_cpus_unless_set():
    assert loader_workers(None, 4) == 3
    assert loader_workers(None, 1) == 0
    assert loader_workers(2, 8) == 2
