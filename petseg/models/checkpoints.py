"""Every checkpoint format petseg writes and reads (always with torch.load(weights_only=True)).

- trial state: `state.pt` in each Tune checkpoint: head, optimiser, scheduler, progress and the
  trial config, so a restored trial continues where it stopped; once the trial has ended, `ended.pt`
  instead: the same without optimiser and scheduler (compact_ended_state);
- best checkpoint: `results/<name>/checkpoints/<variant>.pt`: variant, lr, epoch, the best head, the
  trial config and the data spec, for the report, predict.py and evaluate.py;
- head file: `<variant>-<first 8 hex of its sha256>.pth` in the public DenseASPP layout, `features.*`
  (the frozen backbone it was trained on) and `head.*`, for the VOC / ADE20K variants.

Trial states and best checkpoints are written with a `<file>.sha256` beside them (size and digest, written
last): a file that was cut short or changed is refused with its name, never loaded.

A model is rebuilt from a saved trial config by petseg.models.model_from_config.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import pyarrow.fs
import torch

from ..data import PARTS
from ..disk import file_sha256
from ..errors import CheckpointError
from .registry import VARIANTS
from .sources import load_extensions
from .segmenter import FrozenBackboneSegmenter
from .weights import rename_legacy_densenet_keys

TRIAL_STATE_FILE = "state.pt"
ENDED_STATE_FILE = "ended.pt"  # an ended trial's state without what only its resume needs
RESUME_ONLY = ("optimizer", "scheduler")
BEST_KEYS = ("variant", "lr", "epoch", "head", "config", "data")
# Inside a best checkpoint: what model_from_config rebuilds the model with, and what inference resizes and
# normalises photos with and evaluate.py splits the dataset with.
BEST_CONFIG_KEYS = ("pretrained", "seed")
BEST_DATA_KEYS = ("size", "mean", "std", "split")
HEAD_PREFIX = "head."
# The public DenseASPP code saved its backbone as `pretrained.features.*` (older releases) or
# `features.*` (the original code, and what petseg writes).
BACKBONE_PREFIXES = ("pretrained.features.", "features.")
# torch.load's failures on a file that is not a readable checkpoint.
_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)


CHECKSUM_SUFFIX = ".sha256"


def save_verified(value, path: Path) -> None:
    """torch.save `value` to `path`, then its size and sha256 beside it (written last: present means complete)."""
    torch.save(value, path)
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    checksum.write_text(json.dumps({"bytes": path.stat().st_size, "sha256": file_sha256(path)}))


def load_verified(path: Path, remedy: str):
    """torch.load(weights_only) of `path` after checking it against its checksum file (when it has one, as every
    file petseg writes does); a CheckpointError names a damaged or unreadable file and `remedy`."""
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    if checksum.is_file():
        try:
            expected = json.loads(checksum.read_text())
            size, digest = int(expected["bytes"]), str(expected["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{checksum}: an unreadable checksum file ({err}); {remedy}") from err
        found = path.stat().st_size if path.is_file() else 0
        if found != size:
            raise CheckpointError(f"{path} is damaged: {found:,} bytes, {size:,} when written; {remedy}")
        if file_sha256(path) != digest:
            raise CheckpointError(f"{path} is damaged: its checksum differs from the one written with it; {remedy}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err}); {remedy}") from err


def save_trial_state(folder: str | Path, state: dict, config: dict) -> None:
    """Write a trial's training state and its config into a checkpoint folder."""
    save_verified({**state, "config": config}, Path(folder) / TRIAL_STATE_FILE)


def load_trial_state(checkpoint) -> dict | None:
    """The training state in a Tune checkpoint (anything with as_directory()), or None when starting fresh; the
    compacted state of an ended trial (compact_ended_state) where that is all it holds."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / TRIAL_STATE_FILE
        if not path.is_file() and (Path(folder) / ENDED_STATE_FILE).is_file():
            path = Path(folder) / ENDED_STATE_FILE
        return load_verified(path, "this trial's checkpoint cannot be used; rerun the "
                             "trial (delete its folder and --resume) or restore the file from a copy")


def compact_ended_state(checkpoint) -> int:
    """Rewrite an ended trial's checkpoint without what only a resume of it needs (optimizer and scheduler state),
    keeping its heads, progress and config for the report, the seeds, predict.py and pretraining; returns the
    bytes freed. The compact file is written (checksum last) before the full one is deleted: a kill in between
    leaves both, and the full one is read."""
    filesystem, folder = checkpoint.filesystem, checkpoint.path.rstrip("/")
    full = filesystem.get_file_info(f"{folder}/{TRIAL_STATE_FILE}")
    if full.type == pyarrow.fs.FileType.NotFound:
        return 0  # compacted already
    state = load_trial_state(checkpoint)
    before = full.size
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / ENDED_STATE_FILE
        save_verified({key: value for key, value in state.items() if key not in RESUME_ONLY}, local)
        after = local.stat().st_size
        for name in (ENDED_STATE_FILE, ENDED_STATE_FILE + CHECKSUM_SUFFIX):
            pyarrow.fs.copy_files(str(Path(scratch) / name), f"{folder}/{name}",
                                  source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem)
    for name in (TRIAL_STATE_FILE, TRIAL_STATE_FILE + CHECKSUM_SUFFIX):
        try:
            filesystem.delete_file(f"{folder}/{name}")
        except FileNotFoundError:
            continue
    return before - after


def save_best_checkpoint(path: str | Path, variant: str, lr: float, epoch: int, head: dict, config: dict,
                         data: dict) -> Path:
    """Write a variant's best checkpoint (its best head with the trial config and the data spec as a dict)."""
    save_verified({"variant": variant, "lr": lr, "epoch": epoch, "head": head, "config": config, "data": data},
                  Path(path))
    return Path(path)


def load_best_checkpoint(path: str | Path) -> dict:
    """Read a best checkpoint (weights_only) and check it has what inference needs; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass results/<name>/checkpoints/<variant>.pt "
                              "of a finished study")
    checkpoint = load_verified(path, "rebuild it with experiments/report.py")
    missing = [key for key in BEST_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a petseg best checkpoint (missing {missing}); use a file from "
                              "results/<name>/checkpoints/ or rebuild it with experiments/report.py")
    if isinstance(checkpoint["config"], dict):  # a user's variant, dataset or metric is known again
        try:
            load_extensions(checkpoint["config"])
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from err
    if not isinstance(checkpoint["variant"], str) or checkpoint["variant"] not in VARIANTS:
        raise CheckpointError(f"{path}: unknown variant {checkpoint['variant']!r}; this petseg knows "
                              f"{', '.join(VARIANTS)}")
    problems = _best_problems(checkpoint)
    if problems:
        raise CheckpointError(f"{path}: a broken best checkpoint: {'; '.join(problems)}; restore the file the "
                              "study wrote or rebuild it with experiments/report.py")
    return checkpoint


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _best_problems(checkpoint: dict) -> list[str]:
    """What a best checkpoint (all BEST_KEYS present) lacks or holds wrongly for inference, one phrase each."""
    problems = [f"{key} is {checkpoint[key]!r}, not a number" for key in ("lr", "epoch")
                if not _is_number(checkpoint[key])]
    head = checkpoint["head"]
    if not isinstance(head, dict) or not all(isinstance(value, torch.Tensor) for value in head.values()):
        problems.append("head is not a dict of tensors")
    for section, keys in (("config", BEST_CONFIG_KEYS), ("data", BEST_DATA_KEYS)):
        values = checkpoint[section]
        if not isinstance(values, dict):
            problems.append(f"{section} is a {type(values).__name__}, not a dict")
        elif any(key not in values for key in keys):
            problems.append(f"{section} lacks {', '.join(repr(key) for key in keys if key not in values)}")
    if problems:  # the values themselves are checked once they are all there
        return problems
    return _config_problems(checkpoint["config"]) + _data_problems(checkpoint["data"])


def _config_problems(config: dict) -> list[str]:
    """What is wrong with a best checkpoint's config['pretrained'] and config['seed']."""
    problems = []
    if not isinstance(config["pretrained"], bool):
        problems.append(f"config['pretrained'] is {config['pretrained']!r}, not true or false")
    if not _is_integer(config["seed"]):
        problems.append(f"config['seed'] is {config['seed']!r}, not an integer")
    return problems


def _data_problems(data: dict) -> list[str]:
    """What is wrong with a best checkpoint's data['size'], ['mean'], ['std'] and ['split']."""
    problems = []
    if not _is_integer(data["size"]) or data["size"] < 1:
        problems.append(f"data['size'] is {data['size']!r}, not a positive integer")
    for key in ("mean", "std"):
        values = data[key]
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(map(_is_number, values))):
            problems.append(f"data[{key!r}] is {values!r}, not 3 numbers (red, green, blue)")
        elif key == "std" and 0 in values:
            problems.append(f"data['std'] is {values!r}; photos are divided by it, so none may be 0")
    split = data["split"]
    if not (isinstance(split, dict) and all(isinstance(split.get(part), list) for part in PARTS)):
        problems.append(f"data['split'] lacks the lists of image names under {', '.join(map(repr, PARTS))}")
    return problems


def split_head_checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict, dict, int]:
    """(backbone tensors, head tensors, count of other tensors) of a public-layout checkpoint, prefixes removed."""
    backbone, head, other = {}, {}, 0
    for key, value in state.items():
        prefix = next((p for p in BACKBONE_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            backbone[key[len(prefix):]] = value
        elif key.startswith(HEAD_PREFIX):
            head[key[len(HEAD_PREFIX):]] = value
        else:
            other += 1
    return rename_legacy_densenet_keys(backbone), head, other


def public_head_state(model: FrozenBackboneSegmenter) -> dict[str, torch.Tensor]:
    """A DenseASPP model's head in the public layout, with the frozen backbone it was trained on as features.*."""
    return {**{f"features.{k}": v for k, v in model.backbone.features.state_dict().items()},
            **{f"{HEAD_PREFIX}{k}": v for k, v in model.head.state_dict().items()}}


def save_head_file(state: dict[str, torch.Tensor], folder: str | os.PathLike, stem: str) -> Path:
    """Save `state` as <folder>/<stem>-<first 8 hex of the file's sha256>.pth, the name torchvision gives its files.

    Written under a temporary name and renamed once complete, so no reader sees a partial file.
    """
    # Serialised in memory: torch.save names its archive after the file, and a temporary name would
    # make equal heads hash differently.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    content = buffer.getbuffer()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    scratch = folder / f".{path.name}.{os.getpid()}.tmp"
    scratch.write_bytes(content)
    os.replace(scratch, path)
    return path
