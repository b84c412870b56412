"""Fine-tune one variant's head: the optimiser recipe its registry entry names, epochs, early stopping, resumable state.

No Ray here: `fit` reports each epoch through a callback, which the Ray trainable turns into
`tune.report` and a checkpoint, and which plain Python can use directly.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..metrics import metric_names
from ..models import FrozenBackboneSegmenter, build_seeded_model, get_variant
from ..models.recipes import RECIPES
from .engine import default_device, evaluate, train_one_epoch
from .features import HeadOnly, backbone_fingerprint, feature_dataset
from .trial_spec import Searched, TrialSpec


def make_optimizer(model: FrozenBackboneSegmenter, variant: str, searched: Searched, total_steps: int):
    """The optimiser recipe `variant`'s entry names (petseg.models.recipes) with the `searched` values (the recipe's
    own for those not searched) and poly decay (power 0.9) stepped per batch over `total_steps`."""
    optimizer = RECIPES[get_variant(variant).recipe](model.trainable_parameters(), **searched.given())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 - min(step, total_steps - 1) / total_steps) ** 0.9)
    return optimizer, scheduler


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """Shuffled, seeded loader for training (dropping a last batch of one, which BatchNorm rejects)."""
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator,
                      drop_last=train and len(dataset) % batch_size == 1, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


@dataclass
class Progress:
    """Best-so-far bookkeeping that travels in every checkpoint."""

    epoch: int = 0
    best_val_loss: float = math.inf
    epochs_without_improvement: int = 0
    best_val_weighted_iou: float = -math.inf
    best_epoch: int = 0
    best_head: dict = field(default_factory=dict)
    cache_build_s: float = 0.0  # seconds this trial spent building feature caches, over all its attempts


def fit(spec: TrialSpec, datasets: dict, *, report: Callable[[dict, dict, FrozenBackboneSegmenter], None],
        state: dict | None = None, num_classes: int = 3, num_workers: int = 0, device: torch.device | None = None,
        feature_cache_dir: str | None = None, say: Callable[[str], None] = print) -> Progress:
    """Train the head `spec` describes on datasets["train"], validating on datasets["val"] each epoch; the keyword
    arguments are what the running process binds (the data's classes, loader workers, device, cache folder).

    `report(metrics, state, model)` is called after every epoch; `state` (from an earlier report)
    resumes where it left off. Stops at spec.max_epochs or after spec.patience epochs without val-loss gain.
    With spec.feature_cache and a `feature_cache_dir`, the head trains on backbone features computed once
    (if the data allows: no online augmentation); otherwise the backbone runs on every batch. `say`
    receives the lines of a feature-cache build. Every report says which ("features": "cached" or "live"), the
    cache folders used ("feature_caches") and the seconds this trial spent building them ("cache_build_s").
    """
    device = device or default_device()
    seed, amp, max_epochs, patience = spec.seed, spec.amp, spec.max_epochs, spec.patience
    model = build_seeded_model(spec.variant, spec.pretrained, seed, spec.head_weights, num_classes).to(device)
    train_set, val_set, runner, cached = datasets["train"], datasets["val"], model, []
    if spec.feature_cache and feature_cache_dir is not None:
        backbone_key = backbone_fingerprint(model)  # hashing a backbone's tensors once is enough
        found = [feature_dataset(model, datasets[part], feature_cache_dir, device, amp=amp, backbone_key=backbone_key,
                                 progress=say) for part in ("train", "val")]
        if None not in found:
            train_set, val_set = cached = found
            runner = HeadOnly(model, datasets["train"].size)
    train_loader = make_loader(train_set, spec.batch_size, True, num_workers, seed)
    val_loader = make_loader(val_set, spec.batch_size, False, num_workers)
    try:
        optimizer, scheduler = make_optimizer(model, spec.variant, spec.searched, max_epochs * len(train_loader))
        progress = Progress(cache_build_s=sum(dataset.build_seconds for dataset in cached))
        if state is not None:
            model.head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            progress = Progress(**{**state["progress"], "cache_build_s": progress.cache_build_s
                                   + state["progress"].get("cache_build_s", 0.0)})

        while progress.epoch < max_epochs and progress.epochs_without_improvement < patience:
            # Seeding each epoch from (seed, epoch) makes a resumed epoch see the same batches and dropout.
            torch.manual_seed(seed * 1_000_003 + progress.epoch)
            train_loader.generator.manual_seed(seed * 1_000_003 + progress.epoch)
            train = train_one_epoch(runner, train_loader, optimizer, device, scheduler, amp)
            val = evaluate(runner, val_loader, device, num_classes, amp)
            progress.epoch += 1
            if val["loss"] < progress.best_val_loss:
                progress.best_val_loss, progress.epochs_without_improvement = val["loss"], 0
            else:
                progress.epochs_without_improvement += 1
            if val["weighted_iou"] > progress.best_val_weighted_iou:
                progress.best_val_weighted_iou, progress.best_epoch = val["weighted_iou"], progress.epoch
                progress.best_head = copy.deepcopy({k: v.cpu() for k, v in model.head.state_dict().items()})
            metrics = {
                "epoch": progress.epoch,
                **spec.searched.given(),  # lr, and any other searched value
                "current_lr": scheduler.get_last_lr()[0],
                "train_loss": train["loss"],
                "val_loss": val["loss"],
                **{f"val_{name}": val[name] for name in metric_names()},
                "best_val_weighted_iou": progress.best_val_weighted_iou,
                "best_epoch": progress.best_epoch,
                "early_stopped": progress.epochs_without_improvement >= patience and progress.epoch < max_epochs,
                "features": "cached" if cached else "live",
                "feature_caches": [str(dataset.folder) for dataset in cached],
                "cache_build_s": progress.cache_build_s,
            }
            state = {
                "head": model.head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "progress": vars(progress),
            }
            report(metrics, state, model)
    finally:
        # Persistent loader workers end when their loader goes; dropping them here ends them now, also when an
        # exception's traceback keeps this frame alive (a retry, or Tune reusing this worker for the next trial).
        del train_loader, val_loader
    return progress

