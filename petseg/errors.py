"""The errors petseg raises on purpose, all under PetsegError, so an entry script catches one type.

Each message names the file, flag or value at fault and says what to do about it.
"""
from __future__ import annotations

import signal

from pathlib import Path


class PetsegError(Exception):
    """Base of every error petseg raises on purpose."""


class ConfigError(PetsegError, ValueError):
    """A configuration value is unusable; the message names it and says what to do."""


class DatasetError(PetsegError, ValueError):
    """An unusable dataset file or tree; the message names the file and says what to do."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class WeightsUnavailableError(PetsegError, RuntimeError):
    """Pretrained weights could not be found locally nor downloaded, or cannot be read."""


class HeadWeightsError(WeightsUnavailableError):
    """A head checkpoint cannot be used for this model: nothing fits, or it belongs to another backbone."""


class CheckpointError(PetsegError, ValueError):
    """A checkpoint is missing or is not a petseg best checkpoint; the message names the file."""


class NonFiniteLossError(PetsegError, FloatingPointError):
    """Training produced a NaN or infinite loss; the run cannot continue meaningfully."""


class StudyError(PetsegError, RuntimeError):
    """The study cannot start or continue; the message says what to change."""


class SearchInterrupted(StudyError):
    """A search stopped (Ctrl-C, SIGTERM, SIGHUP) before every trial finished; its state is saved and --resume
    continues it. `signum` is the signal that stopped it."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
