"""A user's own variants: functions outside petseg that return a VariantSpec, named `module:function` (in a config's
`variants`, `--variants`) or published as a `petseg.variants` entry point. A study records the names it read
(`variant_sources`) so that any process (a Ray worker, a later report or resume) can register them again."""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from ..plugins import load_plugins
from .registry import VARIANTS, VariantSpec, register

ENTRY_POINT_GROUP = "petseg.variants"


def is_source(name: str) -> bool:
    """Whether `name` names a user's function (`module:function`) rather than a registry key."""
    return ":" in name


def register_source(source: str) -> VariantSpec:
    """Import `module:function`, call it and register the VariantSpec it returns; errors say what is wrong."""
    module_name, _, function_name = source.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"variant source {source!r} is not 'module:function'")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"variant source {source!r}: {err} (is its folder on PYTHONPATH, on every node?)") from err
    try:
        spec = function()
    except Exception as err:  # noqa: BLE001 - whatever the user's code raises, the message names where it ran
        raise ValueError(f"variant source {source!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(spec, VariantSpec):
        raise ValueError(f"variant source {source!r} returned a {type(spec).__name__}, not a petseg.models.VariantSpec")
    return register(dataclasses.replace(spec, source=source))


def register_sources(sources: Iterable[str]) -> list[str]:
    """Register each `module:function` not yet registered from there; returns their variant keys in order."""
    registered = {spec.source: key for key, spec in VARIANTS.items() if spec.source}
    return [registered.get(source) or register_source(source).key for source in sources]


def entry_point_sources() -> dict[str, str]:
    """Entry-point name (what a config's `variants` may say) -> `module:function`, of every installed
    `petseg.variants` entry point."""
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_variants(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(registry keys, user sources read) of a study's `variants`: keys, `module:function` names, or the names of
    installed `petseg.variants` entry points. Unknown keys are left for validation to report."""
    keys, sources = [], []
    installed = None
    for name in names:
        if not is_source(name) and name not in VARIANTS:
            installed = entry_point_sources() if installed is None else installed
            name = installed.get(name, name)
        if is_source(name):
            keys += register_sources([name])
            sources.append(name)
        else:
            keys.append(name)
    return keys, sources


def load_extensions(config: Mapping) -> None:
    """What a fresh process needs before it reads a study's datasets, variants or metrics: the plugins a saved
    (study or trial) config names imported, and its `module:function` user variants registered."""
    load_plugins(config.get("plugins", ()))
    register_sources(config.get("variant_sources", ()))
