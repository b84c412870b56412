"""Stopping a study on a signal: Ctrl-C (SIGINT), SIGTERM (`ray job stop`, Kubernetes, systemd) and SIGHUP (a
closed terminal) all end it the same way.

During a search each of them becomes Ray Tune's own stop, which saves the experiment one last time, so
`--resume` continues it; outside a search (data preparation, the report) it ends the command at once.
Either way the entry script prints why it stopped and the resume command, and exits 128 + the signal
number (130, 143, 129), as a shell reports a process ended by that signal.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
FORWARDED = (signal.SIGTERM, signal.SIGHUP)  # Tune handles SIGINT itself; these become it
_received: list[int] = []
_searching = threading.Event()


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived outside a search: the command stops where it was."""

    def __init__(self, signum: int):
        super().__init__("the command stopped where it was, outside the search")
        self.signum = signum


def _on_signal(signum, frame):
    _received.append(signum)
    if _searching.is_set():
        os.kill(os.getpid(), signal.SIGINT)  # Tune's own stop, with its final save
    else:
        raise Stopped(signum)


def install() -> None:
    """Make SIGTERM and SIGHUP stop this process as Ctrl-C does (call once in an entry script's main thread)."""
    for signum in FORWARDED:
        signal.signal(signum, _on_signal)


@contextmanager
def search_running():
    """While the block runs a Tune search, SIGTERM and SIGHUP become Tune's Ctrl-C stop (main thread only)."""
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.getsignal(signum) for signum in FORWARDED} if main else {}
    if main:
        install()
    _received.clear()
    _searching.set()
    try:
        yield
    finally:
        _searching.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def last_signal() -> int:
    """The stop signal the last search received (SIGINT when none other was: Tune took a Ctrl-C itself)."""
    return _received[-1] if _received else signal.SIGINT


def signal_of(err: BaseException) -> int:
    """The signal that ended a command with `err` (a SearchInterrupted, Stopped or KeyboardInterrupt)."""
    return getattr(err, "signum", signal.SIGINT)


def stop_message(err: BaseException, consequence: str, resume: str) -> str:
    """What an entry script prints when a signal stopped it: the signal, why, what was not written, how to resume."""
    signum = signal_of(err)
    reason = str(err) or "before the search finished"
    return f"\ninterrupted by {NAMES.get(signum, f'signal {signum}')}: {reason}. {consequence} Continue with:\n  {resume}"
