"""Pretrained weights: torchvision's cache for downloads, safe loading, head checkpoints by name and shape."""
from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..filelock import file_lock


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


def is_url(source: str | os.PathLike) -> bool:
    """True when `source` is an http(s) or file URL rather than a local path."""
    return urlparse(str(source)).scheme in ("http", "https", "file")


def weights_cache_dir() -> Path:
    """torchvision's weights cache, which petseg shares: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_checkpoint_path(url: str) -> Path:
    """Where torchvision's cache keeps the file of `url`: $TORCH_HOME/hub/checkpoints/<name>."""
    return weights_cache_dir() / os.path.basename(urlparse(url).path)


def find_head_weights(variant: str, search_dir: str | os.PathLike | None = None) -> Path | None:
    """The newest `<variant>-*.pth` head checkpoint in search_dir (default the weights cache), or None."""
    folder = Path(search_dir).expanduser() if search_dir is not None else weights_cache_dir()
    found = [path for path in folder.glob(f"{variant}-*.pth") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def fetch_checkpoint(url: str) -> Path:
    """Return the cached file for `url`, downloading it (hash-checked as torchvision does) if absent."""
    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    # torchvision file names end in the sha256 prefix of their content: check it after download.
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        with file_lock(path.with_name(path.name + ".lock")):  # trials on one node download once
            if not path.is_file():
                torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
        raise WeightsUnavailableError(
            f"could not download {url} ({err}). Without network, download that file elsewhere and "
            f"place it at {path} (torchvision's cache, $TORCH_HOME/hub/checkpoints), or run with "
            "pretrained=False / `pretrained: false` for random weights."
        ) from err
    return path


def save_hashed_checkpoint(state: dict[str, torch.Tensor], folder: str | os.PathLike, stem: str) -> Path:
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


def load_state_dict_file(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a path or URL with `weights_only=True`; errors name the file."""
    path = fetch_checkpoint(str(source)) if is_url(source) else Path(source)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"{path} is not a PyTorch state dict loadable with weights_only=True ({err})"
        ) from err
    # Training scripts often wrap the state dict or prefix it with DataParallel's "module.".
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


@dataclass
class LoadReport:
    """Which checkpoint tensors were loaded into a module, and which were skipped and why."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    not_head: int = 0  # tensors outside the head (the checkpoint's backbone): never loaded

    def __str__(self) -> str:
        lines = [f"head weights from {self.source}: loaded {len(self.loaded)} tensors, "
                 f"skipped {len(self.skipped)}, left at init {len(self.missing)}, "
                 f"ignored {self.not_head} non-head tensors (the frozen backbone keeps its own weights)"]
        lines += [f"  skipped {key}: {reason}" for key, reason in self.skipped]
        lines += [f"  left at init {key}" for key in self.missing]
        return "\n".join(lines)


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str) -> LoadReport:
    """Copy tensors `prefix + name` of `state` into `module` where name and shape match; report the rest."""
    report = LoadReport(source)
    own = module.state_dict()
    matched = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            report.not_head += 1
            continue
        name = key[len(prefix):]
        if name not in own:
            report.skipped.append((key, "no such tensor in this head"))
        elif own[name].shape != value.shape:
            report.skipped.append((key, f"shape {tuple(value.shape)} != {tuple(own[name].shape)}"))
        else:
            matched[name] = value
            report.loaded.append(key)
    module.load_state_dict(matched, strict=False)
    report.missing = [name for name in own if name not in matched]
    return report


_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the published DenseNet files' 'norm.1' style keys to the module names 'norm1'."""
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed
