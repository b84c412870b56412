"""Pretrained weights: torchvision's cache for downloads, safe loading, head tensors loaded by name and shape
into a head and checked against the backbone they were trained on."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..disk import file_lock
from ..errors import HeadWeightsError, WeightsUnavailableError


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


# The head's last 1x1 conv: its class count differs between datasets, so it loads whole or not at all.
CLASSIFIER = ("block.1.weight", "block.1.bias")


@dataclass
class LoadReport:
    """Which checkpoint tensors were loaded into a head, which were skipped and why, and the backbone check."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    not_head: int = 0  # tensors outside the head (the checkpoint's backbone and others): never loaded
    backbone: str = "not in the file, so unchecked"
    backbone_checked: bool = False  # the file carried its backbone and it equals this model's

    def __str__(self) -> str:
        lines = [f"head weights from {self.source}: loaded {len(self.loaded)} tensors, "
                 f"skipped {len(self.skipped)}, left at init {len(self.missing)}, "
                 f"ignored {self.not_head} non-head tensors (the frozen backbone keeps its own weights); "
                 f"the file's backbone: {self.backbone}"]
        lines += [f"  skipped head.{key}: {reason}" for key, reason in self.skipped]
        lines += [f"  left at init {key}" for key in self.missing]
        return "\n".join(lines)


def load_head(head: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Copy the tensors whose name and shape fit `head` (the classifier's weight and bias only together).

    Raises HeadWeightsError naming `source` when no tensor fits: that file holds no head of this kind.
    """
    report = LoadReport(source)
    own = head.state_dict()
    matched = {}
    for name, value in tensors.items():
        if name not in own:
            report.skipped.append((name, "no such tensor in this head"))
        elif own[name].shape != value.shape:
            report.skipped.append((name, f"shape {tuple(value.shape)} != {tuple(own[name].shape)}"))
        else:
            matched[name] = value
    if any(name in tensors for name in CLASSIFIER) and not all(name in matched for name in CLASSIFIER):
        for name in CLASSIFIER:
            if matched.pop(name, None) is not None:
                report.skipped.append((name, "its classifier partner does not fit, so both stay at init"))
    if not matched:
        raise HeadWeightsError(
            f"{source}: none of its {len(tensors)} head tensors (head.*) fits this head; it is not a "
            "checkpoint of this variant's head (public DenseASPP layout: head.dense_aspp_block.aspp_<rate>.* and "
            "head.block.1.*). Pass the file pretrain_heads.py wrote for this variant")
    head.load_state_dict(matched, strict=False)
    report.loaded = [f"head.{name}" for name in matched]
    report.missing = [name for name in own if name not in matched]
    return report


def _same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str | None:
    """None when `theirs` holds exactly our tensors (BatchNorm counters aside), else what differs."""
    def counted(state):
        return {k for k in state if not k.endswith("num_batches_tracked")}

    missing, extra = sorted(counted(ours) - counted(theirs)), sorted(counted(theirs) - counted(ours))
    if missing or extra:
        return (f"its tensor names differ ({len(missing)} of ours absent, e.g. {missing[:2]}; {len(extra)} "
                f"unknown, e.g. {extra[:2]}): another architecture")
    for name in sorted(counted(ours)):
        if theirs[name].shape != ours[name].shape or not torch.equal(theirs[name].to(ours[name].dtype), ours[name]):
            return f"its weights differ (first at {name})"
    return None


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """A short sha256 of named tensors, to tell two sets of weights apart in a message."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state if not k.endswith("num_batches_tracked")):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def check_head_backbone(features: nn.Module, file_backbone: dict[str, torch.Tensor], report: LoadReport,
                        ours: str) -> None:
    """Refuse a head trained on another backbone than `features` (described as `ours`); note the check in `report`.

    A head learns the features of the backbone it was trained on; on another backbone it is a
    different, unvalidated model. A file without backbone tensors cannot be checked.
    """
    if not file_backbone:
        return
    own = features.state_dict()
    difference = _same_tensors(own, file_backbone)
    if difference is not None:
        raise HeadWeightsError(
            f"{report.source} was trained on another backbone than this model's: {difference}. The file's backbone "
            f"is sha256 {tensors_digest(file_backbone)}; this model's is {ours} (sha256 {tensors_digest(own)}). "
            "A head only fits the backbone it was trained on: pretrain it on this one (experiments/pretrain_heads.py "
            "with the same --pretrained / --no-pretrained and seed) or pass the file made for it")
    report.backbone = f"the same as this model's ({ours})"
    report.backbone_checked = True


_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the published DenseNet files' 'norm.1' style keys to the module names 'norm1'."""
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed
