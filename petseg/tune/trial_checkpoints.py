"""A study's trial checkpoints on storage: those of ended trials compacted (CompactEnded), and trials whose saved
study names a checkpoint Tune has already deleted made resumable from their newest one.

petseg keeps one checkpoint per trial: Tune registers checkpoint N, deletes N-1, and then saves the study naming N.
A driver killed between the delete and that save leaves a study naming the deleted N-1 (on an object store, where
the study's state is uploaded later, also a checkpoint whose upload the kill cut off), and Tune's restore of such a
trial fails ("does not exist on storage anymore") on every retry. Before a resume, stand_in_for_lost writes a small
stand-in folder where the named checkpoint was; the trial restored from it goes on from its newest complete one
(newest_complete) or starts over, and
Tune deletes the stand-in with its next checkpoint. Those no trial was restored from are removed after the search
(remove_stand_ins); the next resume writes them again where still needed.
"""
from __future__ import annotations

import re

import pyarrow.fs
from ray import tune

from ..errors import CheckpointError
from ..models.checkpoints import TRIAL_STATE_FILE, compact_ended_state
from .storage import Location

STAND_IN = "stand_in.txt"
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")


def _folders(filesystem: pyarrow.fs.FileSystem, path: str) -> list[pyarrow.fs.FileInfo]:
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return [info for info in infos if info.type == pyarrow.fs.FileType.Directory]


def checkpoints(filesystem: pyarrow.fs.FileSystem, trial_folder: str) -> dict[int, str]:
    """{index: path} of the checkpoint folders in a trial folder that hold a training state."""
    found = {}
    for folder in _folders(filesystem, trial_folder):
        match = _CHECKPOINT.match(folder.base_name)
        state = f"{folder.path}/{TRIAL_STATE_FILE}"
        if match and filesystem.get_file_info(state).type == pyarrow.fs.FileType.File:
            found[int(match[1])] = folder.path
    return found


def newest_complete(filesystem: pyarrow.fs.FileSystem, checkpoint_path: str) -> str | None:
    """The newest checkpoint folder beside `checkpoint_path` (in its trial folder) that holds a training state."""
    found = checkpoints(filesystem, checkpoint_path.rstrip("/").rsplit("/", 1)[0])
    return found[max(found)] if found else None


def named_checkpoints(experiment: Location) -> list[tune.Checkpoint]:
    """The checkpoint the saved study names for each of its trials (where one is named)."""
    trials = tune.ExperimentAnalysis(experiment.path, storage_filesystem=experiment.filesystem).trials
    return [trial.checkpoint for trial in trials if trial.checkpoint is not None]


def stand_in_for_lost(experiment: Location, named: list[tune.Checkpoint] | None = None) -> list[str]:
    """Write a stand-in for each checkpoint the saved study names (`named`, default named_checkpoints) that storage
    no longer has (see the module docstring); returns the stand-ins written."""
    written = []
    for named in named if named is not None else named_checkpoints(experiment):
        if named.filesystem.get_file_info(named.path).type != pyarrow.fs.FileType.NotFound:
            continue
        stand_in = Location(experiment.filesystem, f"{named.path.rstrip('/')}/{STAND_IN}", experiment.scheme)
        stand_in.write_text("Stands in for a checkpoint that was gone when the study was resumed; the trial restored "
                            "from here goes on from its newest complete checkpoint, or starts over without one.\n")
        written.append(named.path.rstrip("/"))
    return written


def remove_stand_ins(experiment: Location) -> None:
    """Delete the stand-ins still in the study's trial folders (a stand-in is written only where no checkpoint
    was, and Tune never writes into an existing one, so its folder holds nothing else)."""
    for trial in _folders(experiment.filesystem, experiment.path):
        for folder in _folders(experiment.filesystem, trial.path):
            stand_in = experiment.filesystem.get_file_info(f"{folder.path}/{STAND_IN}")
            if _CHECKPOINT.match(folder.base_name) and stand_in.type == pyarrow.fs.FileType.File:
                experiment.filesystem.delete_dir(folder.path)


class CompactEnded(tune.Callback):
    """Compacts each trial's checkpoint as it ends (finished, early stopped or stopped by ASHA): only a resume of
    the trial needs its optimizer and scheduler state, and an ended trial is never resumed."""

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Compact the ended trial's last checkpoint; a failure only costs disk, so it is said and passed over."""
        if trial.checkpoint is None:
            return
        try:
            compact_ended_state(trial.checkpoint)
        except (CheckpointError, OSError) as err:
            print(f"[petseg] warning: {trial.trial_id}'s checkpoint was not compacted ({err}); it keeps its full "
                  "size", flush=True)
