"""SIGTERM and SIGHUP stop a study as Ctrl-C does: Tune's own stop during a search, the command elsewhere."""
import os
import signal
import time

import pytest

from petseg.errors import SearchInterrupted
from petseg.tune import stopping


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def deliver(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.2)  # the handler runs in the main thread at its next step


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_during_a_search_the_signal_becomes_tunes_ctrl_c_stop(handlers, signum):
    seen = []
    signal.signal(signal.SIGINT, lambda s, f: seen.append(s))  # what Tune's handler would get
    before = {s: signal.getsignal(s) for s in stopping.FORWARDED}
    with stopping.search_running():
        deliver(signum)
    assert seen == [signal.SIGINT]
    assert stopping.last_signal() == signum
    # after the search, the handlers it replaced are back
    assert {s: signal.getsignal(s) for s in stopping.FORWARDED} == before


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_outside_a_search_the_command_stops_with_the_signals_exit_code(handlers, signum, code):
    stopping.install()
    with pytest.raises(stopping.Stopped) as caught:
        deliver(signum)
    assert 128 + stopping.signal_of(caught.value) == code
    message = stopping.stop_message(caught.value, "No comparison was written.", "python compare.py --resume")
    assert f"interrupted by {stopping.NAMES[signum]}: the command stopped where it was" in message
    assert message.rstrip().endswith("python compare.py --resume")


def test_a_search_with_no_other_signal_was_stopped_by_ctrl_c_and_every_reason_is_said():
    with stopping.search_running():
        pass
    assert stopping.last_signal() == signal.SIGINT
    message = stopping.stop_message(KeyboardInterrupt(), "No comparison was written.", "resume")
    assert "interrupted by Ctrl-C (SIGINT): before the search finished. No comparison" in message  # never ": ."
    stopped = SearchInterrupted("search 'x' stopped with 1 of 4 trials finished", signal.SIGTERM)
    assert 128 + stopping.signal_of(stopped) == 143
    assert "interrupted by SIGTERM: search 'x' stopped with 1 of 4" in stopping.stop_message(stopped, "", "")
