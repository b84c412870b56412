"""One driver per study: the lock refuses a second driver naming the holder, is taken over from a driver that is
gone, and a driver whose lock another took stops."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from petseg.errors import StudyError
from petseg.tune.storage import Location
from petseg.tune.study_lock import LOCK_FILE, StudyLock, read_holder


def lock_of(folder, **timing) -> StudyLock:
    return StudyLock(Location.at(folder), "study 'dup'", **{"settle_s": 0.0, **timing})


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_second_driver_is_refused_naming_the_holder_and_may_go_on_once_it_released(tmp_path):
    with lock_of(tmp_path):
        holder = read_holder(Location.at(tmp_path) / LOCK_FILE)
        with pytest.raises(StudyError) as refused:
            lock_of(tmp_path).acquire()
        message = str(refused.value)
        assert "study 'dup' is being run by another driver" in message
        assert f"host {socket.gethostname()}, pid {holder.pid}, started " in message and "--resume" in message
    assert not (tmp_path / LOCK_FILE).exists()  # released
    with lock_of(tmp_path):
        pass


def write_holder(study, **fields) -> None:
    now = time.time()
    record = {"host": socket.gethostname(), "pid": dead_pid(), "started": now, "beat": now, "token": "old",
              "folder": str(study), **fields}
    (study / LOCK_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize("holder", [{}, {"host": "elsewhere", "beat": time.time() - 600}, {"token": None},
                                    {"pid": os.getpid(), "folder": "/the/original/study"}])
def test_a_lock_of_a_driver_that_is_gone_is_taken_over(tmp_path, capsys, holder):
    # Its process ended on this host; another host's driver silent for 10 minutes; a damaged lock file; the lock of
    # a live driver that came with a copy of its study.
    if holder.get("token", "") is None:
        (tmp_path / LOCK_FILE).write_text('{"host": "half wr')
    else:
        write_holder(tmp_path, **holder)
    with lock_of(tmp_path) as lock:
        assert read_holder(Location.at(tmp_path) / LOCK_FILE).token == lock.mine.token
    assert "taking over the lock of study 'dup' from a driver that is gone" in capsys.readouterr().out


def test_a_live_driver_on_another_host_is_waited_for_until_its_heartbeat_is_stale(tmp_path):
    write_holder(tmp_path, host="head-1", pid=1, beat=time.time() - 30)
    with pytest.raises(StudyError, match="host head-1, pid 1, .* last heartbeat 30 s ago"):
        lock_of(tmp_path).acquire()
    with lock_of(tmp_path, stale_s=20):
        pass


def test_the_holder_beats_and_stops_its_study_when_another_driver_took_the_lock(tmp_path):
    lost = threading.Event()
    lock = lock_of(tmp_path, heartbeat_s=0.05, on_lost=lost.set)
    with lock:
        first = read_holder(Location.at(tmp_path) / LOCK_FILE).beat
        time.sleep(0.3)
        assert read_holder(Location.at(tmp_path) / LOCK_FILE).beat > first  # heartbeats
        write_holder(tmp_path, pid=12345, token="other")  # a driver that judged this one stale
        assert lost.wait(5)
    assert read_holder(Location.at(tmp_path) / LOCK_FILE).token == "other"  # not deleted on release: not ours


def test_two_drivers_writing_at_once_leave_one_holder(tmp_path):
    # Both find no lock and write theirs; read back after the settle time, only the standing one goes on.
    locks = [lock_of(tmp_path, settle_s=0.5) for _ in range(2)]
    outcomes = []

    def run(lock):
        try:
            lock.acquire()
            outcomes.append("held")
        except StudyError:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for lock in locks:
        lock.release()
    assert sorted(outcomes) == ["held", "refused"]


def test_a_driver_that_wrote_nothing_but_its_lock_leaves_no_folder(tmp_path):
    with lock_of(tmp_path / "storage" / "study"):
        assert (tmp_path / "storage" / "study" / LOCK_FILE).is_file()
    assert list(tmp_path.iterdir()) == []  # bad input found under the lock: nothing written
    with lock_of(tmp_path / "storage" / "study"):
        (tmp_path / "storage" / "study" / "experiment_state.json").write_text("{}")
    assert list((tmp_path / "storage" / "study").iterdir()) == [tmp_path / "storage" / "study" / "experiment_state.json"]
