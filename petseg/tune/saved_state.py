"""Tune's own saved driver state in a study's folder, checked before a resume.

Tune copies its state files (trials, search generator, searcher) from the driver's staging folder to the storage
path after each checkpoint; a driver killed during that copy can leave the newest of them empty. Tune then fails
to restore the run and starts the search over in the same folder, mixing two runs. A resume refuses that instead,
naming the file.
"""
from __future__ import annotations

import pyarrow.fs

from ..errors import StudyError
from .storage import Location

STATE_FILES = ("experiment_state-", "search_gen_state-", "searcher-state-")  # each + a session time + suffix


def empty_state_files(experiment: Location) -> list[str]:
    """The newest of each of Tune's state files in the folder that is empty (what a resume would read)."""
    infos = experiment.filesystem.get_file_info(pyarrow.fs.FileSelector(experiment.path, allow_not_found=True))
    files = [info for info in infos if info.type == pyarrow.fs.FileType.File]
    empty = []
    for prefix in STATE_FILES:
        mine = sorted((info for info in files if info.base_name.startswith(prefix)), key=lambda i: i.base_name)
        if mine and mine[-1].size == 0:  # session times sort by name, so the last is what Tune loads
            empty.append(mine[-1].path)
    tuner = [info for info in files if info.base_name == "tuner.pkl" and info.size == 0]
    return empty + [info.path for info in tuner]


def check_saved_state(experiment: Location, name: str) -> None:
    """Refuse (StudyError naming the files) a resume whose saved Tune state was left empty by a killed copy."""
    empty = empty_state_files(experiment)
    if empty:
        raise StudyError(f"cannot resume study {name!r}: {', '.join(empty)} is empty (the driver was killed while "
                         "Tune copied its saved state there), and Tune would start the search over in the same "
                         "folder. Start the study again under another --name (its feature caches are reused)")
