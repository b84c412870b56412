"""A study's plugins: modules outside petseg that, when imported, register datasets (petseg.data's registry),
variants (petseg.models.register) or metrics (petseg.metrics.register_metric). A study records their names in its
config (`plugins`) and its trials' configs, so every process it runs in (Ray workers, a resume, a later report,
predict.py and evaluate.py reading its checkpoints) imports them before it reads anything."""
from __future__ import annotations

import importlib
from collections.abc import Iterable


def load_plugins(names: Iterable[str]) -> None:
    """Import each named module (a no-op for one already imported); errors name the plugin and what to check."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - whatever the plugin raises, the message names it
            raise ValueError(f"plugin {name!r} could not be imported: {type(err).__name__}: {err} "
                             "(is its folder on PYTHONPATH, on every node?)") from err

