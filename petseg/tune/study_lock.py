"""One driver per study: a lock file in the study's folder on the storage path, held for the driver's life.

A second driver of the same study (two started together, a resume submitted while the first runs, a job
retried by Kubernetes) is refused at once, naming the holder. The holder rewrites its heartbeat every
HEARTBEAT_S seconds; its lock is taken over when it is stale: its process is gone (same host), it has not
beaten for STALE_S seconds (any host, e.g. a head node that died), or the lock was copied with the study. Works alike on a folder, NFS and an object
store: the lock is written whole, read back after SETTLE_S, and checked on every beat, so of two drivers that
wrote it together only the one whose lock stands goes on; one that finds its lock taken stops its study as
SIGTERM would (resumable).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pathlib import Path

from ..errors import StudyError
from ..node_cache import process_alive
from .storage import Location

LOCK_FILE = "petseg_driver_lock.json"
HEARTBEAT_S = 15.0
STALE_S = 90.0  # six missed heartbeats
SETTLE_S = 1.0  # how long a driver waits before reading back a lock it wrote


@dataclass(frozen=True)
class Holder:
    """The driver that holds a study's lock: where it runs, since when, and when it last beat."""

    host: str
    pid: int
    started: float
    beat: float
    token: str
    folder: str = ""  # the study folder it was written in: a lock found in a copy of the study is not its own

    def stale(self, now: float, folder: str, stale_s: float = STALE_S) -> bool:
        """Whether the holder is gone: its process ended (on this host), it has not beaten for stale_s, or the
        lock came with a copy of the study into `folder`."""
        return ((self.host == socket.gethostname() and not process_alive(self.pid)) or now - self.beat > stale_s
                or self.folder != folder)

    def describe(self, now: float) -> str:
        """"host H, pid P, started T, last heartbeat N s ago"."""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}, started {started}, last heartbeat {now - self.beat:.0f} s ago"


def read_holder(lock: Location) -> Holder | None:
    """The holder recorded in `lock`; None when there is none. An unreadable lock (half written, damaged) has a
    holder that never beat, so it is stale."""
    if not lock.exists():
        return None
    try:
        return Holder(**json.loads(lock.read_text()))
    except (OSError, ValueError, TypeError):
        return Holder(host="?", pid=0, started=0.0, beat=0.0, token="", folder="")


class StudyLock:
    """The lock of the study in `folder` (a context manager): acquired on entry, heartbeat while held, released
    on exit. `what` names the study in messages; `on_lost` runs when another driver took the lock."""

    def __init__(self, folder: Location, what: str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 settle_s: float = SETTLE_S, on_lost: Callable[[], None] | None = None):
        self.folder, self.lock, self.what = folder, folder / LOCK_FILE, what
        self.created: list[Path] = []  # folders made for the lock, deepest first (removed again if left empty)
        self.heartbeat_s, self.stale_s, self.settle_s = heartbeat_s, stale_s, settle_s
        self.on_lost = on_lost or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        now = time.time()
        self.mine = Holder(socket.gethostname(), os.getpid(), now, now, secrets.token_hex(8), str(folder))
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def refusal(self, holder: Holder) -> StudyError:
        """The error of a driver that finds the study held by `holder`."""
        return StudyError(
            f"{self.what} is being run by another driver ({holder.describe(time.time())}; lock {self.lock}); "
            f"wait for it to end or stop it (Ctrl-C, `ray job stop`), then --resume. A driver that died is taken "
            f"over once its process is gone (same host) or after {self.stale_s:.0f} s without a heartbeat")

    def check_free(self) -> Holder | None:
        """Raise a StudyError naming the live driver that holds the lock, if one does; else the stale holder
        (None when there is none)."""
        holder = read_holder(self.lock)
        if holder and not holder.stale(time.time(), self.mine.folder, self.stale_s):
            raise self.refusal(holder)
        return holder

    def acquire(self) -> None:
        """Take the lock, or raise a StudyError naming the live driver that holds it."""
        holder = self.check_free()
        if self.folder.is_local:
            self.created = [path for path in [Path(self.folder.path), *Path(self.folder.path).parents]
                            if not path.exists()]
        if holder:
            print(f"[petseg] taking over the lock of {self.what} from a driver that is gone "
                  f"({holder.describe(time.time())})", flush=True)
        self._write(self.mine)
        time.sleep(self.settle_s)  # a driver that wrote at the same moment has overwritten ours by now
        standing = read_holder(self.lock)
        if standing is None or standing.token != self.mine.token:
            raise self.refusal(standing or self.mine)
        self.thread = threading.Thread(target=self._beat, name="petseg-study-lock", daemon=True)
        self.thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this driver's."""
        self.stopped.set()
        if self.thread:
            self.thread.join()
        holder = read_holder(self.lock)
        if holder and holder.token == self.mine.token:
            self.lock.unlink()
        for folder in self.created:  # a driver stopped before its study wrote anything (bad input) leaves none
            try:
                folder.rmdir()
            except OSError:  # not empty: the study wrote there
                break

    def _write(self, holder: Holder) -> None:
        # Written beside the lock and moved over it, so a reader never sees half a lock.
        scratch = Location(self.lock.filesystem, f"{self.lock.path}.{holder.token}.tmp", self.lock.scheme)
        scratch.write_text(json.dumps(asdict(holder)))
        self.lock.filesystem.move(scratch.path, self.lock.path)

    def _beat(self) -> None:
        while not self.stopped.wait(self.heartbeat_s):
            try:
                holder = read_holder(self.lock)
                if holder is None or holder.token != self.mine.token:
                    print(f"[petseg] error: another driver took over the lock of {self.what} "
                          f"({holder.describe(time.time()) if holder else 'the lock was deleted'}); stopping this "
                          "one, its trials resumable", flush=True)
                    self.on_lost()
                    return
                self._write(Holder(**{**asdict(self.mine), "beat": time.time()}))
            except OSError as err:  # storage briefly unreachable: the next beat tries again
                print(f"[petseg] warning: could not renew the lock of {self.what} ({err})", flush=True)

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
