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


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)  # ~600 bytes that plain YAML expands into 9**9 strings
    assert len(path.read_bytes()) < 1000
    with pytest.raises(ConfigError, match=r"bomb.yaml is not valid YAML: an alias \(\*a\)") as err:
        resolve_config("smoke", path)
    assert len(str(err.value)) < 500  # the message names the line, not the expansion


def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("max_epochs: 3\nnum_samples: 2\nmax_epochs: 5\n")
    with pytest.raises(ConfigError, match=r"twice.yaml is not valid YAML: key 'max_epochs' is given twice(.|\n)*line 3"):
        resolve_config("smoke", path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("lr_range:\n  denseaspp: [1.0e-5, 1.0e-2]\n  denseaspp: [1.0e-4, 1.0e-1]\n")
    with pytest.raises(ConfigError, match="key 'denseaspp' is given twice"):
        resolve_config("smoke", nested)


@pytest.mark.parametrize("content,message", [
    ("max_epochs: 3\n".encode("utf-16"), "is not UTF-8 text"),
    (bytes(range(256)) * 4, "is not UTF-8 text"),
    (b"max_epochs: 3\x00\x00", "holds NUL bytes"),
    (b"x: " + b"1" * (1 << 20), "a config is a short YAML mapping"),
], ids=["utf-16", "binary", "nul", "huge"])
def test_a_file_that_is_not_yaml_text_is_named(tmp_path, content, message):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"config file {path}.*{message}"):
        resolve_config("smoke", path)


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("max_epochs: 3\n".encode("utf-8-sig"))
    assert resolve_config("smoke", path).search.max_epochs == 3


def test_the_studys_own_saved_config_is_accepted_by_config(tmp_path):
    saved = resolve_config("smoke", overrides={"num_samples": 3, "name": "mine", "max_epochs": 4})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved.to_dict(), sort_keys=False))  # what a study writes as config.yaml
    again = resolve_config("smoke", path, {"max_epochs": 5})
    assert (again.search.num_samples, again.run.name, again.search.max_epochs) == (3, "mine", 5)
    assert again.replace(max_epochs=4) == saved
    path.write_text(yaml.safe_dump({"search": [1, 2], "run": {}}))
    with pytest.raises(ConfigError, match="'search' and 'run' in .*config.yaml must each map"):
        resolve_config("smoke", path)


@pytest.mark.parametrize("name,message", [
    ("", "is empty"), ("   ", "is empty"), ("../escape", "not one folder name"), ("a/b", "not one folder name"),
    ("..", "not one folder name"), ("x" * 300, "300 bytes long"), ("é" * 101, "202 bytes long"),
])
def test_a_study_name_that_cannot_name_one_folder_is_refused_before_anything_runs(name, message):
    with pytest.raises(ConfigError, match=f"name \\(--name\\).*{message}"):
        resolve_config("smoke", overrides={"name": name})


def test_ordinary_names_pass():
    for name in ("smoke", "pets-2026.v2", "x" * 200, "étude"):
        assert resolve_config("smoke", overrides={"name": name}).run.name == name


def test_a_relative_cache_dir_means_the_folder_the_command_ran_in(tmp_path, monkeypatch):
    """Trials run in their own folders: a relative cache dir left relative would give each trial its own caches."""
    monkeypatch.chdir(tmp_path)
    assert resolve_config("smoke", overrides={"cache_dir": "rel/cache"}).run.cache_dir == str(tmp_path / "rel/cache")
    monkeypatch.setenv("PETSEG_CACHE", "from-env")
    config = resolve_config("smoke")
    assert config.run.cache_dir == str(tmp_path / "from-env")
    from petseg.tune.runner import trial_settings

    assert trial_settings(config, None).cache_dir == str(tmp_path / "from-env")  # what every trial is given
    monkeypatch.chdir(tmp_path.parent)  # resolved once: a later working directory changes nothing
    assert config.replace(max_epochs=3).run.cache_dir == str(tmp_path / "from-env")


def test_a_saved_config_without_a_family_the_variants_need_is_refused():
    saved = {**resolve_config("smoke").to_flat(), "lr_range": {"denseaspp": [1e-5, 1e-2]}}
    with pytest.raises(ConfigError, match="lr_range has no range for torchvision"):
        load_config(saved)


def test_a_partial_lr_range_changes_one_family_and_keeps_the_other(tmp_path):
    default = resolve_config("paper").search.lr_range
    path = tmp_path / "one_family.yaml"
    path.write_text("lr_range:\n  denseaspp: [1.0e-4, 1.0e-2]\n")
    merged = resolve_config("paper", path).search.lr_range
    assert merged == {**default, "denseaspp": [1.0e-4, 1.0e-2]}
    assert merged["torchvision"] == default["torchvision"]
    # a flag's mapping merges over the YAML's in the same way
    flagged = resolve_config("paper", path, {"lr_range": {"torchvision": [1.0e-3, 1.0e-1]}}).search.lr_range
    assert flagged == {"denseaspp": [1.0e-4, 1.0e-2], "torchvision": [1.0e-3, 1.0e-1]}


def test_image_size_is_a_flag_of_compare_and_pretrain_heads():
    import importlib.util
    from pathlib import Path

    for script in ("compare", "pretrain_heads"):
        path = Path(__file__).resolve().parents[1] / "experiments" / f"{script}.py"
        spec = importlib.util.spec_from_file_location(f"_{script}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        extra = ["--dataset", "voc", "--synthetic", "12"] if script == "pretrain_heads" else ["--preset", "smoke"]
        args = module.parse_args([*extra, "--image-size", "96"])
        variants = ["denseaspp_voc"] if script == "pretrain_heads" else None
        config = module.config_from_args(args, variants) if variants else module.config_from_args(args)
        assert config.search.image_size == 96, script


def test_weight_decay_is_searched_from_a_yaml_key_or_a_compare_flag_and_off_by_default(tmp_path):
    import importlib.util
    from pathlib import Path

    from petseg.tune.config import search_plan, search_ranges

    default = resolve_config("smoke")
    assert default.search.weight_decay_range == {} and "weight_decay" not in search_plan(default, "denseaspp_voc")
    path = tmp_path / "study.yaml"
    path.write_text("weight_decay_range: {denseaspp: [1e-6, 1e-3]}\n")
    from_yaml = resolve_config("smoke", path)
    assert search_ranges(from_yaml, "denseaspp_voc")["weight_decay"] == (1e-6, 1e-3)
    assert "weight_decay log-uniform [1e-06, 0.001]" in search_plan(from_yaml, "denseaspp_voc")
    assert "weight_decay" not in search_ranges(from_yaml, "fcn_resnet50")  # SGD keeps its own 1e-4
    script = Path(__file__).resolve().parents[1] / "experiments" / "compare.py"
    spec = importlib.util.spec_from_file_location("_compare_wd", script)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    args = compare.parse_args(["--preset", "smoke", "--weight-decay-range", "1e-5", "1e-2"])
    flagged = compare.config_from_args(args)
    assert {v: search_ranges(flagged, v)["weight_decay"] for v in ("denseaspp_voc", "fcn_resnet50")} == \
        {"denseaspp_voc": (1e-5, 1e-2), "fcn_resnet50": (1e-5, 1e-2)}
    with pytest.raises(ConfigError, match=r"weight_decay_range for denseaspp is \[0.0, 0.001\]: give \[low, high\]"):
        resolve_config("smoke", overrides={"weight_decay_range": {"denseaspp": [0, 1e-3]}})
    with pytest.raises(ConfigError, match="weight_decay_range has unknown recipe 'adamw'"):
        resolve_config("smoke", overrides={"weight_decay_range": {"adamw": [1e-6, 1e-3]}})
