"""Study configuration: what is searched and where it runs, typed defaults, presets, YAML overrides, one
validating loader; saved as a plain dict with every result."""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


from ..disk import default_cache_dir
from ..data.source import get_source, study_kinds
from ..errors import ConfigError, WeightsUnavailableError
from ..node_cache import parse_size
from ..models import (VARIANTS, build_seeded_model, default_variants, find_head_weights, get_variant,
                      resolve_variants, weights_cache_dir)
from ..models.recipes import RECIPES
from ..models.sources import load_extensions
from ..train.trial_spec import SEARCHED, TrialSpec
from .search_space import DEFAULT_SAMPLER, SAMPLERS, random_start
from .storage import Location
from .yaml_file import read_yaml

SEEDS_SUFFIX = "-seeds"  # a study's seed repeats are the Ray experiment <name>-seeds
# A folder name holds 255 bytes; Ray's own files and petseg's suffixes need room beside the study's name.
MAX_NAME_BYTES = 200


@dataclass
class SearchConfig:
    """What a study searches and compares: variants, data, training and the search (Ray's TuneConfig side)."""

    preset: str = "paper"  # which preset the defaults came from (set by resolve_config; "paper" is compared to the paper)
    # Registry keys; `module:function` names of a user's variant and installed `petseg.variants` entry points are
    # resolved to keys by resolve_config, which records the user functions read in variant_sources.
    variants: list[str] = field(default_factory=default_variants)
    variant_sources: list[str] = field(default_factory=list)
    # Modules imported in every process of the study before anything is read: each registers datasets, variants
    # or metrics of its own (petseg.plugins).
    plugins: list[str] = field(default_factory=list)
    dataset: str = "pets"  # a registered study dataset: "pets" (Oxford-IIIT Pet), "folder" (images/, masks/,
    # classes.txt under data_root), or one a plugin registers
    data_root: str | None = None
    download: bool = False
    split_ratio: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.25])  # folder without splits/
    synthetic_images: int = 0  # > 0: generate a dataset of this many images under the cache dir
    image_size: int = 256
    batch_size: int = 8
    max_epochs: int = 10
    patience: int = 3  # epochs without val-loss improvement before a trial stops itself
    num_samples: int = 8  # learning rates tried per variant
    sampler: str = DEFAULT_SAMPLER  # "gp" (default), "tpe" or "random": see petseg.tune.search_space
    # Searched head learning rate, log-uniform, per optimiser recipe (Adam vs SGD scale differently).
    lr_range: dict[str, list[float]] = field(
        default_factory=lambda: {"denseaspp": [1e-5, 1e-2], "torchvision": [1e-4, 1e-1]})
    # Opt-in: weight decay searched too, log-uniform, for the recipes given a range (the others keep their own:
    # Adam 1e-5, SGD 1e-4). Each searched value of petseg.train.trial_spec.Searched has a <name>_range here.
    weight_decay_range: dict[str, list[float]] = field(default_factory=dict)
    grace_period: int = 2
    reduction_factor: int = 2
    augment: str = "offline"
    asha: bool = True  # off: every trial runs until max_epochs or its own early stop
    # Speed: backbone features computed once (offline augmentation only), images decoded once, bf16 autocast.
    feature_cache: bool = True
    decoded_cache: bool = True
    amp: bool = True
    pretrained: bool = True
    # variant key -> path or URL, or a folder of <variant>-*.pth files; see resolve_head_weights.
    head_weights: dict[str, str] | str = field(default_factory=dict)
    # Without it, a pretrained study refuses to start when a VOC / ADE20K head file is missing; with it,
    # those variants run with random-init heads and every table and figure says so.
    allow_random_heads: bool = False
    # Set by the study when it opens the head files, not a setting: variant -> whether its file carried the
    # backbone the head was trained on and that matched this model's (false: a head-only file, unchecked).
    head_backbone_checked: dict[str, bool] = field(default_factory=dict)
    timing_repeats: int = 3  # timed passes over the test split per model; the median is reported
    seed: int = 0
    seeds: int = 0  # > 0: retrain each variant's best configuration with this many more seeds


@dataclass
class RunConfig:
    """Where and how a study runs and keeps its files (Ray's RunConfig side): a resume takes it from its own
    command line, except max_worker_losses and Tune's own verbosity, which Tune keeps with the saved search."""

    name: str = "paper"
    address: str | None = None
    # The local Ray binds here; Ray rewrites 127.0.0.1 to the outward address, other loopbacks it keeps.
    ray_node_ip: str = field(default_factory=lambda: "127.0.0.2" if sys.platform == "linux" else "127.0.0.1")
    storage_path: str = "ray_results"
    results_dir: str = "results"
    cache_dir: str = field(default_factory=lambda: str(default_cache_dir()))
    cpus_per_trial: float = 2.0
    gpus_per_trial: float = 0.0
    num_workers: int | None = None  # DataLoader workers per trial; None: one fewer than cpus_per_trial
    max_failures: int = 1  # retries of a trial whose own code raised, in its worker from its last checkpoint
    # Restarts of a trial whose worker was lost (its node died or was preempted), elsewhere from its last checkpoint.
    max_worker_losses: int = 5
    # Trials started at once: what the nodes alive fit (recounted as they join or leave) plus max_pending_trials
    # waiting beyond them, which an autoscaler sees as demand (None: one node's worth on a cluster, none on the
    # local Ray, which cannot grow); never more than max_concurrent_trials (0: no cap). See tune.concurrency.
    max_pending_trials: int | None = None
    max_concurrent_trials: int = 0
    # Peak disk for the backbones' feature caches, e.g. "64G" (None: a safe share of the cache disk's free space).
    cache_budget: str | None = None
    verbose: bool = False  # Ray's and Tune's own console output, and every trial's log lines
    # Identify data files by their contents too (sha256), not only size and mtime, wherever caches are keyed.
    verify_data: bool = False
    # The embedded local Ray (no address): GPUs it advertises (None: those it finds), its Prometheus
    # metrics export (off unless asked), and running it without token authentication (refused unless asked).
    local_gpus: float | None = None
    ray_metrics: bool = False
    allow_unauthenticated_ray: bool = False
    # Clear a results folder that holds another study's results (or other files) instead of refusing it.
    overwrite: bool = False


SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))
# The TrialSpec fields a study sets alike for all its trials, each named as the SearchConfig field it comes from.
TRIAL_SETTINGS = tuple(f.name for f in dataclasses.fields(TrialSpec) if f.name not in ("variant", "searched"))
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
FIELD_TYPES = {**typing.get_type_hints(SearchConfig), **typing.get_type_hints(RunConfig)}


def typed(name: str, value, annotation, source: str = ""):
    """`value` as field `name`'s type, or a ConfigError naming the field, what it got and what it takes.

    YAML reads 1e-5 (no dot) as a string: numeric strings are taken as numbers. Booleans never pass
    as numbers, fractions never as whole numbers, and NaN or infinity never as any number.
    """
    def fail(wanted: str):
        raise ConfigError(f"{name}{source} must be {wanted}, got {value!r} ({type(value).__name__})")

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return typed(name, value, option, source)
            except ConfigError:
                continue
        fail(" or ".join(_describe(a) for a in options) + (" (or left out)" if type(None) in args else ""))
    if annotation is bool:
        return value if isinstance(value, bool) else fail("true or false")
    if annotation in (int, float):
        number = _number(value)
        if number is None:
            fail(_describe(annotation))
        if annotation is int:
            return int(number) if float(number).is_integer() else fail("a whole number")
        return float(number)
    if annotation is str:
        return value if isinstance(value, str) else fail("a string")
    if origin is list:
        if not isinstance(value, list):
            fail(f"a list ({_describe(annotation)}), e.g. [{'a, b' if args[0] is str else '1e-5, 1e-2'}]")
        return [typed(f"{name}[{index}]", item, args[0], source) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail(_describe(annotation))
        return {typed(f"{name} key", key, args[0], source): typed(f"{name}[{key!r}]", item, args[1], source)
                for key, item in value.items()}
    raise TypeError(f"no check for {name}'s type {annotation}")


def _number(value) -> float | int | None:
    """A finite int or float from a number or numeric string, else None (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def _describe(annotation) -> str:
    """A type as a message says it: "a whole number", "a list of strings", ..."""
    names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    if annotation in names:
        return names[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    if origin is dict:
        return f"a mapping of {_describe(args[0]).removeprefix('a ')}s to {_describe(args[1]).removeprefix('a ')}s"
    return str(annotation)


@dataclass
class StudyConfig:
    """Everything a study depends on: what it searches and where it runs. Read and written flat (one key per
    field, as in a YAML config or the flags); saved as {"search": ..., "run": ...}."""

    search: SearchConfig = field(default_factory=SearchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_flat(cls, values: dict, source: str = "") -> "StudyConfig":
        """The config with `values` (field -> value, either part) over the defaults, each value checked against
        its field's type; unknown keys and wrong types are a ConfigError naming the field."""
        values = checked_values(values, source)
        return cls(SearchConfig(**{k: v for k, v in values.items() if k in SEARCH_FIELDS}),
                   RunConfig(**{k: v for k, v in values.items() if k in RUN_FIELDS}))

    def replace(self, **values) -> "StudyConfig":
        """A copy with some fields (of either part) changed."""
        return StudyConfig.from_flat({**self.to_flat(), **values})

    def to_flat(self) -> dict:
        """Every field of both parts in one dict."""
        return {**dataclasses.asdict(self.search), **dataclasses.asdict(self.run)}

    def to_dict(self) -> dict:
        """A plain YAML/JSON-safe dict: {"search": {...}, "run": {...}}."""
        return {"search": dataclasses.asdict(self.search), "run": dataclasses.asdict(self.run)}

    def trial_params(self) -> dict:
        """What every trial's config holds besides the variant and the values its searcher suggests (a flat dict Tune
        merges them into): the TrialSpec's settings (head_weights for every variant) and the head files' check,
        search settings only, since Tune keeps trial configs as they were when a study is resumed."""
        search = self.search
        return {**{name: getattr(search, name) for name in TRIAL_SETTINGS},
                "head_backbone_checked": search.head_backbone_checked}


def load_config(source: dict | str | os.PathLike | Location) -> StudyConfig:
    """The one way a saved config is read: a dict or YAML file (a path, or a Location on the study's storage),
    nested ({"search", "run"}) or flat, validated."""
    values = source if isinstance(source, dict) else read_yaml(source if isinstance(source, Location) else Path(source))
    where = "" if isinstance(source, dict) else f" in {source}"
    config = StudyConfig.from_flat(flattened(values, where), where)
    try:  # a fresh process knows the study's plugins and user variants again
        load_extensions(dataclasses.asdict(config.search))
    except ValueError as err:
        raise ConfigError(f"{err}{where}") from err
    validate(config)
    return config


PRESETS: dict[str, dict] = {
    "paper": {},
    "smoke": {
        "name": "smoke",
        "synthetic_images": 24,
        "image_size": 64,
        "batch_size": 4,
        "max_epochs": 2,
        "patience": 2,
        "num_samples": 2,
        "grace_period": 1,
        "pretrained": False,
        "cpus_per_trial": 1.0,
    },
}


def resolve_config(preset: str = "paper", yaml_file: str | os.PathLike | None = None,
                   overrides: dict | None = None) -> StudyConfig:
    """Preset, then the YAML file, then `overrides` (flags; None values ignored), validated. A mapping value
    (lr_range, weight_decay_range, head_weights) merges key by key over the one below it: `lr_range: {denseaspp: [...]}` changes
    that recipe's range and keeps the other's. `variants` may name a user's variant as `module:function` or an
    installed `petseg.variants` entry point: it is registered, and recorded in variant_sources. `plugins` are
    imported before anything else is resolved."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    values = StudyConfig.from_flat(PRESETS[preset]).to_flat()  # the defaults too, so mappings merge over them
    layers = [({k: v for k, v in (overrides or {}).items() if v is not None}, " (a flag)")]
    if yaml_file is not None:
        layers.insert(0, (flattened(read_yaml(Path(yaml_file)), f" in {yaml_file}"), f" in {yaml_file}"))
    for layer, where in layers:
        for name, value in checked_values(layer, where).items():
            below = values.get(name)
            values[name] = {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
    values["preset"] = preset  # a record of where the defaults came from, not a setting
    try:  # plugins first: they may register the variants, dataset and metrics the rest names
        load_extensions(values)
        values["variants"], read = resolve_variants(values["variants"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    values["variant_sources"] = list(dict.fromkeys(values["variant_sources"] + read))
    config = StudyConfig.from_flat(values)
    # Trials run in their own folders (on any node): a relative cache dir, from the flag, the YAML or
    # $PETSEG_CACHE, would give every trial caches of its own. It means the folder this command ran in.
    config = config.replace(cache_dir=str(Path(config.run.cache_dir).expanduser().resolve()))
    validate(config)
    return config


def flattened(values: dict, source: str = "") -> dict:
    """One flat field -> value dict from a flat config or a nested one ({"search": ..., "run": ...}, as saved)."""
    if not values or not set(values) <= {"search", "run"}:
        return values
    parts = [values.get("search") or {}, values.get("run") or {}]
    if not all(isinstance(part, dict) for part in parts):
        raise ConfigError(f"'search' and 'run'{source} must each map config keys to values")
    return {**parts[0], **parts[1]}


def known(values: dict, source: str = "") -> dict:
    """`values` if every key is a config field, else a ConfigError listing the unknown ones and the valid keys."""
    unknown = sorted(set(values) - set(SEARCH_FIELDS) - set(RUN_FIELDS))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}{source}; valid keys: "
                          f"{', '.join(sorted(SEARCH_FIELDS + RUN_FIELDS))}")
    return values


def checked_values(values: dict, source: str = "") -> dict:
    """`values` with each one as its field's type; unknown keys or wrong types are a ConfigError naming the
    field and `source` (where the value came from)."""
    return {name: typed(name, value, FIELD_TYPES[name], source) for name, value in known(values, source).items()}


def check_name(name: str, flag: str = "name (--name)") -> str:
    """`name` if it can name a study's folders (one non-empty path segment that fits a file name), else a
    ConfigError saying why; checked before anything starts, so no work is orphaned by a name that fails later."""
    if not name or not name.strip():
        raise ConfigError(f"{flag} is empty; give the study a name, e.g. --name pets-2026")
    if name in (".", "..") or any(char in name for char in "/\\\0"):
        raise ConfigError(f"{flag} {name!r} is not one folder name (it holds a path separator, NUL or is . / ..); "
                          "use letters, digits, '-', '_' and '.'")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"{flag} is {len(name.encode())} bytes long; use at most {MAX_NAME_BYTES} (folder names "
                          f"hold 255, and petseg adds suffixes such as {SEEDS_SUFFIX!r})")
    return name


def validate(config: StudyConfig) -> None:
    """Raise ConfigError naming the first unusable value and what to do about it."""
    check_name(config.run.name)
    choices = f"choose from: {', '.join(VARIANTS)}, or a function of yours as module:function"
    if not config.search.variants:
        raise ConfigError(f"no variants selected; {choices}")
    unknown = [v for v in config.search.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; {choices}")
    for name in SEARCHED:
        for recipe, bounds in getattr(config.search, f"{name}_range").items():
            if recipe not in RECIPES:
                raise ConfigError(f"{name}_range has unknown recipe {recipe!r}; use {' and '.join(map(repr, RECIPES))}")
            if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
                raise ConfigError(f"{name}_range for {recipe} is {bounds}: give [low, high] with 0 < low < high")
    needed = sorted({VARIANTS[v].recipe for v in config.search.variants} - set(config.search.lr_range))
    if needed:
        raise ConfigError(f"lr_range has no range for {', '.join(needed)}, which the selected variants train; "
                          "give lr_range: {" + ", ".join(f"{r}: [low, high]" for r in RECIPES) + "}")
    positive = ("image_size", "batch_size", "max_epochs", "patience", "num_samples", "grace_period",
                "timing_repeats")
    for name in positive:
        if getattr(config.search, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config.search, name)}")
    if config.search.reduction_factor < 2:
        raise ConfigError(f"reduction_factor must be at least 2, got {config.search.reduction_factor}")
    if config.search.sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {config.search.sampler!r}")
    if config.search.augment not in ("offline", "online", "none"):
        raise ConfigError(f"augment must be offline, online or none, got {config.search.augment!r}")
    if not isinstance(config.search.head_weights, (dict, str)):
        raise ConfigError("head_weights must map variant keys to checkpoint files, or name a folder; "
                          f"got {config.search.head_weights!r}")
    if isinstance(config.search.head_weights, str) and not Path(config.search.head_weights).expanduser().is_dir():
        raise ConfigError(f"head_weights (--head-weights) {config.search.head_weights} is not a folder; pass the folder "
                          "holding <variant>-<hash>.pth head checkpoints (experiments/pretrain_heads.py --output)")
    if config.run.num_workers is not None and config.run.num_workers < 0:
        raise ConfigError(f"num_workers must be 0 or more (or left out), got {config.run.num_workers}")
    if config.search.seeds < 0:
        raise ConfigError(f"seeds must be 0 or more, got {config.search.seeds}")
    if config.run.max_concurrent_trials < 0:
        raise ConfigError(f"max_concurrent_trials must be 0 (no cap) or more, got {config.run.max_concurrent_trials}")
    if config.run.max_pending_trials is not None and config.run.max_pending_trials < 0:
        raise ConfigError(f"max_pending_trials (--max-pending-trials) must be 0 or more (or left out: one node's "
                          f"worth on a cluster), got {config.run.max_pending_trials}")
    if config.run.cpus_per_trial <= 0 or config.run.gpus_per_trial < 0:
        raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0 "
                          f"(got {config.run.cpus_per_trial}, {config.run.gpus_per_trial})")
    if config.run.cache_budget is not None:
        parse_size(config.run.cache_budget)  # raises a ConfigError naming a size it cannot read
    if config.run.local_gpus is not None and config.run.local_gpus < 0:
        raise ConfigError(f"local_gpus must be 0 or more (or left out to detect them), got {config.run.local_gpus}")
    if config.run.max_failures < 0:
        raise ConfigError(f"max_failures must be 0 or more (retries of a failed trial), got {config.run.max_failures}; "
                          "a negative value would retry a failing trial forever")
    if config.run.max_worker_losses < 0:
        raise ConfigError(f"max_worker_losses must be 0 or more (restarts of a trial whose node was lost), got "
                          f"{config.run.max_worker_losses}; a negative value would restart a trial forever")
    if config.search.dataset not in study_kinds():  # asked now: a plugin's dataset registers after this loads
        raise ConfigError(f"dataset (--dataset) must be one of {', '.join(study_kinds())}, got "
                          f"{config.search.dataset!r}; a dataset of yours is known once the module that registers "
                          "it is imported")
    if config.search.download and not get_source(config.search.dataset).downloads:
        raise ConfigError(f"download (--download) cannot fetch a {config.search.dataset} dataset; it is read from "
                          "--data-root as it is")
    ratio = config.search.split_ratio
    if len(ratio) != 3 or min(ratio) <= 0 or abs(sum(ratio) - 1) > 1e-6:
        raise ConfigError(f"split_ratio must be three fractions above 0 (train, val, test) adding up to 1, got {ratio}")
    if config.search.synthetic_images and config.search.synthetic_images < 4:
        raise ConfigError(f"synthetic_images must be 0 (a real dataset) or at least 4 (one image for each of train, "
                          f"val and test, and a spare), got {config.search.synthetic_images}")
    if config.search.synthetic_images < 0:
        raise ConfigError(f"synthetic_images must be 0 or more, got {config.search.synthetic_images}")


def loader_workers(num_workers: int | None, cpus_per_trial: float) -> int:
    """DataLoader workers per trial: num_workers if set, else the trial's CPUs less the one that trains."""
    return num_workers if num_workers is not None else max(0, int(cpus_per_trial) - 1)


def lr_bounds(config: StudyConfig, variant: str) -> tuple[float, float]:
    """The log-uniform learning-rate range searched for `variant` (by its entry's optimiser recipe)."""
    return search_ranges(config, variant)["lr"]


def search_ranges(config: StudyConfig, variant: str) -> dict[str, tuple[float, float]]:
    """Searched value -> its log-uniform range for `variant` (by its entry's optimiser recipe), in the order of
    petseg.train.trial_spec.Searched: lr always, each other one where its `<name>_range` covers the recipe."""
    recipe = get_variant(variant).recipe
    ranges = {name: getattr(config.search, f"{name}_range").get(recipe) for name in SEARCHED}
    return {name: (float(bounds[0]), float(bounds[1])) for name, bounds in ranges.items() if bounds is not None}


def resolve_head_weights(config: StudyConfig) -> dict[str, str]:
    """variant -> head checkpoint for the selected VOC / ADE20K variants, each found once.

    A dict entry wins; a folder gives its newest <variant>-*.pth; otherwise, with pretrained weights,
    the newest one in petseg's weights cache ($TORCH_HOME/hub/checkpoints). Variants without any stay out.
    """
    given = config.search.head_weights if isinstance(config.search.head_weights, dict) else {}
    resolved = {}
    for variant in config.search.variants:
        if variant in given:
            resolved[variant] = str(given[variant])
        elif VARIANTS[variant].head_dataset is not None:
            if isinstance(config.search.head_weights, str):
                found = find_head_weights(variant, config.search.head_weights)
            else:  # random-init runs (pretrained: false) stay random unless told otherwise
                found = find_head_weights(variant) if config.search.pretrained else None
            if found is not None:
                resolved[variant] = str(found)
    return resolved


def head_search_folder(config: StudyConfig) -> Path:
    """Where resolve_head_weights looks for head files: the --head-weights folder, else the weights cache."""
    return Path(config.search.head_weights).expanduser() if isinstance(config.search.head_weights, str) else weights_cache_dir()


def missing_heads(config: StudyConfig, resolved: dict[str, str]) -> list[str]:
    """The selected VOC / ADE20K variants of a pretrained study that found no head file."""
    return [v for v in config.search.variants
            if config.search.pretrained and VARIANTS[v].head_dataset is not None and v not in resolved]


def missing_heads_message(config: StudyConfig, missing: list[str]) -> str:
    """Why the study will not start without these head files, and the commands that make them."""
    datasets = sorted({VARIANTS[v].head_dataset for v in missing})
    wanted = ", ".join(f"{v} ({VARIANTS[v].head_pretraining} head, a {v}-*.pth file)" for v in missing)
    commands = {"voc": "python experiments/pretrain_heads.py --dataset voc --data-root ~/data/voc --sbd-root "
                       "~/data/sbd --download",
                "ade20k": "python experiments/pretrain_heads.py --dataset ade20k --data-root ~/data/ade20k --download"}
    return (f"no head file for {wanted} in {head_search_folder(config)}. Without it the head starts from random "
            "init and the comparison would not be the paper's. Make the heads with:\n  "
            + "\n  ".join(commands[d] for d in datasets)
            + "\n(they are written to $TORCH_HOME/hub/checkpoints, where the study looks; or pass --output DIR "
            "there and --head-weights DIR here), or pass --allow-random-heads to run these variants with "
            "random-init heads, labelled \"random init\" in every table and figure")


def check_head_files(config: StudyConfig, heads: dict[str, str] | None = None) -> dict[str, bool]:
    """Load every head file (config.search.head_weights, or `heads`) into its variant once, in the driver
    before any trial: a file that is unreadable, holds no such head or was trained on another backbone
    raises ConfigError naming it. Returns variant -> whether the file's backbone was checked (a head-only
    file cannot be)."""
    checked = {}
    for variant, path in (config.search.head_weights if heads is None else heads).items():
        try:
            model = build_seeded_model(variant, config.search.pretrained, config.search.seed, head_weights=path)
        except WeightsUnavailableError as err:
            raise ConfigError(f"head file for {variant}: {err}") from err
        checked[variant] = model.head_load.backbone_checked
    return checked


def search_plan(config: StudyConfig, variant: str) -> str:
    """One line saying how `variant`'s learning rate (and any other searched value) is searched and its trials
    stopped."""
    ranges = ", ".join(f"{name} log-uniform [{low:g}, {high:g}]" for name, (low, high) in
                       search_ranges(config, variant).items())
    search = config.search
    return (f"{search.num_samples} trials, {ranges} ({SAMPLERS[search.sampler]}, "
            f"{random_start(search.num_samples, search.sampler)}, seed {search.seed}); "
            f"ASHA of its own (grace {search.grace_period}, factor {search.reduction_factor}, "
            f"max {search.max_epochs} epochs); early stop after {search.patience} epochs without val-loss gain")
