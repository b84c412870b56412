"""A study from Python in one call: open (or resume) it, hold its lock, start Ray, make or reload its data,
run its search. The comparison, head pretraining and both benchmarks are built on it."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..data import DataSpec
from ..tune.cluster import ray_session
from ..tune.config import StudyConfig
from ..tune.runner import METRIC, open_study, run_search, saved_data
from ..tune.storage import Location
from ..tune.study_lock import StudyLock


@dataclass(frozen=True)
class StudyRun:
    """An open study: its config (as saved, with this run's settings), its experiment folder and its data."""

    config: StudyConfig
    path: Location
    data: DataSpec
    resume: bool


@contextmanager
def study_run(config: StudyConfig, prepare: Callable[[StudyConfig], DataSpec], resume: bool = False,
              check: Callable[[StudyConfig, Location], StudyConfig] | None = None) -> Iterator[StudyRun]:
    """Open the study and hold its lock and a Ray session while the block runs. `check(config, experiment folder)`
    runs before Ray starts (refusals that need no cluster) and returns the config to run; `prepare(config)` makes the data
    of a new study, while a resumed one reads the data spec it saved."""
    config, path = open_study(config, resume)
    with StudyLock(path, f"study {config.run.name!r}"):  # one driver per study, refused at once
        if check is not None:
            config = check(config, path)
        with ray_session(config):
            data = saved_data(path).decoded_in(config.run.cache_dir) if resume else prepare(config)
            yield StudyRun(config, path, data, resume)


def search(config: StudyConfig, prepare: Callable[[StudyConfig], DataSpec], resume: bool = False,
           fixed: list[dict] | None = None, metric: str = METRIC) -> StudyRun:
    """Run (or resume) a study's search to its end: searched trials, or exactly `fixed` (variant, lr, seed)."""
    with study_run(config, prepare, resume) as run:
        run_search(run.config, run.data, resume, metric=metric, fixed=fixed)
    return run
