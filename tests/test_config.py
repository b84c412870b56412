"""Config layering (preset < YAML < flags) and its checks."""
import pytest
import yaml

from petseg.config import ConfigError, loader_workers, resolve_config


def test_yaml_overrides_preset_and_flags_override_yaml(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"max_epochs": 5, "num_samples": 3}))
    config = resolve_config("smoke", path, {"num_samples": 7, "name": None})
    assert (config.image_size, config.max_epochs, config.num_samples, config.name) == (64, 5, 7, "smoke")


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
