"""The results folder of one study, and only that study's: claimed by a marker file, replaced whole.

A report is written into a staging folder beside results/<name>/ and swapped in only once complete, so a
report that fails halfway leaves the previous one intact, and files of an earlier report (a checkpoint of a
variant no longer scored) never mix with the new ones. A folder that holds another study's results, or
files petseg did not write, is refused unless the user asks to overwrite it.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import StudyError

MARKER = "study.json"  # which study the folder's results belong to, and whether the report is partial


def owner(folder: Path) -> str | None:
    """The study whose results `folder` holds (None when it is absent or empty); "" when it holds other files."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    try:
        return str(json.loads((folder / MARKER).read_text())["study"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_results_folder(folder: Path, study: str, overwrite: bool = False) -> None:
    """Raise StudyError, before any work, when `folder` holds another study's results (or files petseg did not
    write) and `overwrite` is off."""
    found = owner(folder)
    if found is None or found == study or overwrite:
        return
    what = f"the results of another study ({found})" if found else "files that are not a petseg study's results"
    raise StudyError(f"results folder {folder} holds {what}; pass --overwrite to clear it and write this study's "
                     "results there, or choose another --name or --results-dir")


@contextmanager
def replacing(folder: Path, study: str, overwrite: bool = False):
    """Yield an empty staging folder to write the report into; on success it replaces `folder` whole (claimed for
    `study`), on an error it is removed and `folder` is left as it was."""
    check_results_folder(folder, study, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def write_marker(folder: Path, study: str, **facts) -> None:
    """Claim `folder` for `study`, with facts about its report (e.g. whether it is partial)."""
    (folder / MARKER).write_text(json.dumps({"study": study, **facts}, indent=1))


def read_marker(folder: Path) -> dict:
    """What write_marker recorded in `folder` ({} when nothing was)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
