"""One trial, typed: the variant, its searched values, its seed and its training settings.

This is what a search varies and what a trial's checkpoints carry. Where and how the trial runs (CPUs, loader
workers, cache folder and budget, device) is bound apart when it runs, so a resumed study runs its trials with
the run settings it was resumed with. In Tune a trial's config holds the spec flat (`to_json`): one key per
setting and per searched value, so `config/lr` stays a column of every result and an older study's saved
configs read as they are (`from_json`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Searched:
    """The values a study searches per variant; None: not searched, the optimiser recipe keeps its own value.

    A further searched value is one field here (a keyword its optimiser recipes take, petseg.models.recipes)
    plus its `<name>_range` in the study config (petseg.tune.config.SearchConfig).
    """

    lr: float
    weight_decay: float | None = None

    def given(self) -> dict[str, float]:
        """The values that were set, by name: what the optimiser recipe receives and each epoch reports."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    def describe(self) -> str:
        """The values as a console line shows them, e.g. "lr=1.00e-03 weight_decay=2.00e-05"."""
        return " ".join(f"{name}={value:.2e}" for name, value in self.given().items())

    @classmethod
    def from_json(cls, values) -> "Searched":
        """The searched values in `values` (a trial config, a result record or any mapping with their names);
        a missing, None or NaN one is not searched. Raises ValueError when it holds no `lr`."""
        found = {name: float(values[name]) for name in SEARCHED
                 if name in values and values[name] is not None and not math.isnan(float(values[name]))}
        if "lr" not in found:
            raise ValueError(f"a trial's searched values need an lr; got {dict(values)!r}")
        return cls(**found)


SEARCHED = tuple(f.name for f in dataclasses.fields(Searched))  # in order: lr first


@dataclass(frozen=True)
class TrialSpec:
    """Everything that defines one trial; `fit` trains exactly this."""

    variant: str
    searched: Searched
    seed: int
    max_epochs: int
    batch_size: int
    patience: int  # epochs without val-loss improvement before the trial stops itself
    pretrained: bool
    amp: bool = True  # bf16 autocast where the device has it
    feature_cache: bool = True  # train on backbone features computed once, where the data allows
    head_weights: str | None = None  # the head file this variant starts from (path or URL)
    variant_sources: tuple[str, ...] = ()  # `module:function` of user variants a worker must register
    plugins: tuple[str, ...] = ()  # modules a worker imports first: the study's own datasets, variants, metrics

    def to_json(self) -> dict:
        """The spec as a flat JSON-safe dict, as a trial's Tune config holds it; searched values not set stay out,
        and head_weights is {variant: file} (empty without one), as study configs map them."""
        return {"variant": self.variant, **self.searched.given(), "seed": self.seed, "max_epochs": self.max_epochs,
                "batch_size": self.batch_size, "patience": self.patience, "pretrained": self.pretrained,
                "amp": self.amp, "feature_cache": self.feature_cache,
                "head_weights": {self.variant: self.head_weights} if self.head_weights else {},
                "variant_sources": list(self.variant_sources), "plugins": list(self.plugins)}

    @classmethod
    def from_json(cls, config: dict) -> "TrialSpec":
        """The spec in a trial config: what `to_json` wrote, or the flat config an older study saved (head_weights
        mapping every variant of the study; no amp, feature_cache, variant_sources or plugins: their defaults). Keys that
        are no part of the spec (suggested_by, head_backbone_checked) are left. A ValueError names missing keys."""
        required = ("variant", "seed", "max_epochs", "batch_size", "patience", "pretrained")
        missing = [key for key in required if key not in config]
        if missing:
            raise ValueError(f"trial config lacks {', '.join(missing)}; got keys {sorted(config)}")
        return cls(variant=config["variant"], searched=Searched.from_json(config), seed=int(config["seed"]),
                   max_epochs=int(config["max_epochs"]), batch_size=int(config["batch_size"]),
                   patience=int(config["patience"]), pretrained=bool(config["pretrained"]),
                   amp=bool(config.get("amp", True)), feature_cache=bool(config.get("feature_cache", True)),
                   head_weights=(config.get("head_weights") or {}).get(config["variant"]),
                   variant_sources=tuple(config.get("variant_sources") or ()),
                   plugins=tuple(config.get("plugins") or ()))
