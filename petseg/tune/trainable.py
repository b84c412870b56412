"""The Ray Tune function trainable: one trial = one TrialSpec (a variant and its searched values) fine-tuned."""
from __future__ import annotations

import math
import os
import tempfile
import traceback
import warnings
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs
import ray
import torch
from ray import tune
from torch.utils.tensorboard import SummaryWriter

from ..data import DataSpec, SegmentationDataset, datasets_from_spec
from ..drawing import PALETTE, palette_for, strip
from ..errors import NonFiniteLossError
from ..models.sources import load_extensions
from ..models.checkpoints import TRIAL_STATE_FILE, load_trial_state, save_trial_state
from ..metrics import metric_names
from ..node_cache import node_cache
from ..train.engine import default_device
from ..train.training import fit
from ..train.trial_spec import TrialSpec
from .config import loader_workers
from .trial_checkpoints import newest_complete

IMAGES_LOGGED = 4


def nan_metrics() -> dict[str, float]:
    """The metrics a trial reports as NaN when it ends itself in error: every one a search may rank by, so the final
    report of a diverged trial has the one Tune expects."""
    return {name: math.nan for name in ("val_loss", *(f"val_{m}" for m in metric_names()), "best_val_weighted_iou")}


class ImageLogger:
    """Writes image | ground truth | prediction strips of a few fixed val images to TensorBoard."""

    def __init__(self, trial_dir: str, dataset: SegmentationDataset, palette: torch.Tensor = PALETTE):
        # A fresh event file per (re)start: a restored trial never appends to an old file.
        self.writer = SummaryWriter(log_dir=str(Path(trial_dir) / "tensorboard_images"))
        count = min(IMAGES_LOGGED, len(dataset))
        self.images, self.targets = map(torch.stack, zip(*(dataset[i] for i in range(count))))
        self.mean, self.std = dataset.mean.flatten(), dataset.std.flatten()
        self.palette = palette

    @torch.no_grad()
    def log(self, model, epoch: int) -> None:
        """Predict the fixed images and add their strips at step `epoch`."""
        device = next(model.head.parameters()).device
        model.eval()
        predictions = model(self.images.to(device)).argmax(dim=1).cpu()
        strips = [strip(i, t, p, self.mean, self.std, self.palette)
                  for i, t, p in zip(self.images, self.targets, predictions)]
        # One row per image, so the panel reads image | truth | prediction at any image count.
        self.writer.add_image("val/image_truth_prediction", torch.cat(strips, dim=1), epoch)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file, ending the writer's thread."""
        self.writer.close()


@dataclass(frozen=True)
class RunSettings:
    """The run settings a trial reads, bound when it runs (never kept in its saved config): its CPUs (threads),
    DataLoader workers (None: its CPUs less one), cache folder and budget (which its node may override, see
    petseg.node_cache), retries of its own errors, and the variants the cache plan runs live."""

    cpus_per_trial: float
    num_workers: int | None
    cache_dir: str
    cache_budget: str | None
    max_failures: int
    live_variants: tuple[str, ...] = ()


def train_variant(config: dict, data: DataSpec, run: RunSettings, messages=None) -> None:
    """Fine-tune the head of the trial `config` holds (a TrialSpec, flat), reporting metrics and a checkpoint each
    epoch.

    The trial's own errors are retried here, in this worker, from its last checkpoint, up to run.max_failures
    times (the count travels in its checkpoints); past that the trial ends itself, reporting NaN metrics with
    the reason in `trial_error`. A non-finite loss ends it at once (`nonfinite_loss`). Tune's own retries are
    thus left to lost workers (a node that died or was preempted), which never spend this budget.
    run: the run settings of the driver that started or resumed the search (runner.trial_settings).
    messages: a Ray queue the driver prints from (a trial's own output stays in its log files).
    """
    load_extensions(config)  # a worker process imports the study's plugins and registers its user variants
    spec = TrialSpec.from_json(config)
    torch.set_num_threads(max(1, int(run.cpus_per_trial)))
    node = ray.util.get_node_ip_address()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # the GPU share Ray gave this trial, shown in all_trials.csv

    def say(line: str) -> None:
        tell(messages, f"{spec.variant} {spec.searched.describe()} on {node}: {line}")

    start = restored_state(tune.get_checkpoint(), say)  # where a restarted trial resumes, and its failures so far
    last_epoch = start["progress"]["epoch"] if start else 0
    live = not spec.feature_cache or spec.variant in run.live_variants

    def attempt(failures: int) -> None:
        nonlocal last_epoch
        datasets = datasets_from_spec(data)
        # Tune runs each trial in its own working directory on whichever node it lands, and
        # SyncConfig(sync_artifacts=True) copies that directory to the storage path. The writer is closed
        # with the attempt: a reused worker would otherwise keep one writer thread per trial it ran.
        with closing(ImageLogger(os.getcwd(), datasets["val"], palette_for(data.num_classes))) as images:
            def report(metrics: dict, state: dict, model) -> None:
                nonlocal last_epoch
                images.log(model, metrics["epoch"])
                with tempfile.TemporaryDirectory() as folder:
                    save_trial_state(folder, {**state, "failures": failures}, config)
                    tune.report({**metrics, "node": node, "gpus": gpus, "failures": failures},
                                checkpoint=tune.Checkpoint.from_directory(folder))
                last_epoch = metrics["epoch"]

            with warnings.catch_warnings():
                if data.pretraining:  # pretraining the head is the point: its random init is expected
                    warnings.filterwarnings("ignore", message=".*no head_weights given", category=UserWarning)
                try:
                    fit(spec, datasets, report=report, state=restored_state(tune.get_checkpoint(), say),
                        num_classes=data.num_classes, num_workers=loader_workers(run.num_workers, run.cpus_per_trial),
                        device=default_device(), say=say,
                        feature_cache_dir=None if live else node_cache(run.cache_dir, run.cache_budget, node))
                except NonFiniteLossError as err:
                    # Seeded training diverges the same way on every retry, so the trial ends here; the
                    # searcher and scheduler read `nonfinite_loss` as an error.
                    tune.report({"epoch": last_epoch, **nan_metrics(), "nonfinite_loss": str(err), "node": node,
                                 "failures": failures})

    failures, error = run_with_retries(attempt, start.get("failures", 0) if start else 0, run.max_failures, say)
    if error is not None:
        tune.report({"epoch": last_epoch, **nan_metrics(), "trial_error": error, "node": node, "failures": failures})


def run_with_retries(attempt: Callable[[int], None], failures: int, max_failures: int,
                     say: Callable[[str], None]) -> tuple[int, str | None]:
    """Call attempt(failures) until it returns, again after each exception it raises while the failures (counted
    on from `failures`) stay within `max_failures`. Returns the failures and, when they ran out, the last error
    as "Type: message" (None when the attempt finished). Each traceback goes to this process's log."""
    while True:
        try:
            attempt(failures)
            return failures, None
        except Exception as err:  # noqa: BLE001 - the trial's own code, whatever it raised, is retried here
            traceback.print_exc()
            failures += 1
            reason = f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')}"
            if failures > max_failures:
                return failures, reason
            say(f"failed ({reason}); retry {failures} of {max_failures} from its last checkpoint")


def restored_state(checkpoint, say) -> dict | None:
    """The training state in the checkpoint Tune restores the trial from. Where that holds none (a stand-in for
    one deleted as the driver stopped, see tune.trial_checkpoints, or one gone or half deleted) the trial goes on
    from its newest complete checkpoint, or starts over (None) without one; either is said through `say`."""
    if checkpoint is None:
        return None
    state = f"{checkpoint.path}/{TRIAL_STATE_FILE}"
    if checkpoint.filesystem.get_file_info(state).type == pyarrow.fs.FileType.File:
        return load_trial_state(checkpoint)
    newest = newest_complete(checkpoint.filesystem, checkpoint.path)
    if newest is None:
        say(f"its last saved checkpoint {checkpoint.path} is gone (the driver was stopped while saving the study); "
            "the trial starts over")
        return None
    say(f"its checkpoint {checkpoint.path} was deleted as the driver stopped; it goes on from {newest}")
    return load_trial_state(tune.Checkpoint(newest, checkpoint.filesystem))


def tell(messages, line: str) -> None:
    """Send a line to the driver's console through `messages` (a Ray queue), or print it (into the trial's log)
    when there is no queue to reach."""
    try:
        messages.put(line)
    except Exception:  # noqa: BLE001 - no queue, or the driver's node is gone: the trial's log keeps the line
        print(line, flush=True)
