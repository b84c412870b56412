"""A study's plugins: modules imported first in every process, named in its config and its trials' configs."""
import sys

import pytest

from petseg.metrics import REGISTRY
from petseg.plugins import load_plugins
from petseg.tune.config import ConfigError, load_config, resolve_config

PLUGIN = '''
from petseg.metrics import Metric, register_metric

register_metric(Metric("{name}", "background recall", lambda s: s["true_positive"][:, 0] / s["gt_pixels"][:, 0],
                       headline=False))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin module on sys.path that registers a metric when imported; both undone afterwards."""
    name = f"plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PLUGIN.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = dict(REGISTRY)
    yield name
    REGISTRY.clear()
    REGISTRY.update(saved)
    sys.modules.pop(name, None)


def test_a_configs_plugins_are_imported_before_it_resolves_and_travel_with_every_trial(plugin):
    assert plugin not in REGISTRY
    config = resolve_config("smoke", overrides={"plugins": [plugin]})
    assert plugin in REGISTRY
    assert config.trial_params()["plugins"] == [plugin]
    saved = config.to_dict()
    assert saved["search"]["plugins"] == [plugin]
    REGISTRY.pop(plugin)
    sys.modules.pop(plugin)
    load_config(saved)  # a fresh process (a report, a resume) imports it again from the saved config
    assert plugin in REGISTRY


def test_a_plugin_that_cannot_be_imported_is_named_with_what_to_check():
    with pytest.raises(ConfigError, match=r"plugin 'no_such_plugin' could not be imported: ModuleNotFoundError.*"
                                          r"PYTHONPATH, on every node"):
        resolve_config("smoke", overrides={"plugins": ["no_such_plugin"]})
    with pytest.raises(ValueError, match=r"plugin 'petseg.plugins.nothing' could not be imported"):
        load_plugins(["petseg.plugins.nothing"])
