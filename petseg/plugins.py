"""A study's plugins: modules outside petseg that, when imported, register datasets (petseg.data's registry),
variants (petseg.models.register) or metrics (petseg.metrics.register_metric). A study records their names in its
config (`plugins`) and its trials' configs, so every process it runs in (Ray workers, a resume, a later report,
predict.py and evaluate.py reading its checkpoints) imports them before it reads anything."""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping


def load_plugins(names: Iterable[str]) -> None:
    """Import each named module (a no-op for one already imported); errors name the plugin and what to check."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - whatever the plugin raises, the message names it
            raise ValueError(f"plugin {name!r} could not be imported: {type(err).__name__}: {err} "
                             "(is its folder on PYTHONPATH, on every node?)") from err


def load_extensions(config: Mapping) -> None:
    """What a fresh process needs before it reads a study's datasets, variants or metrics: the plugins a saved
    (study or trial) config names imported, and its `module:function` user variants registered."""
    from .models.sources import register_sources  # models imports this module: bound late

    load_plugins(config.get("plugins", ()))
    register_sources(config.get("variant_sources", ()))
