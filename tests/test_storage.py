"""Storage on an object store: petseg's own files and Tune's on a real S3-compatible server (moto, on 127.0.0.1),
reached the way AWS tools are (AWS_* variables, AWS_ENDPOINT_URL); a smoke study killed, resumed and reported from
the URI."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest
import yaml

from petseg.errors import StudyError
from petseg.models.checkpoints import ENDED_STATE_FILE
from petseg.tune.config import load_config, resolve_config
from petseg.tune.storage import Location, check_writable

REPO = Path(__file__).resolve().parents[1]
BUCKET = "petseg"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The endpoint of a moto S3 server on 127.0.0.1 holding an empty bucket BUCKET, with the AWS variables set for
    this process and the commands it starts (credentials, region, endpoint; no instance metadata lookups)."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not (found := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert server.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        endpoint = found.group(1)
        with pytest.MonkeyPatch.context() as env:
            for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                                "AWS_EC2_METADATA_DISABLED": "true"}.items():
                env.setenv(name, value)
            env.delenv("AWS_PROFILE", raising=False)
            creator, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{BUCKET}?allow_bucket_creation=true")
            creator.create_dir(BUCKET)
            yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def server_keys(endpoint: str, prefix: str) -> set[str]:
    """The object keys under `prefix` in BUCKET, listed by a client of its own (not petseg's filesystem)."""
    client = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing",
                                     region="us-east-1")
    listing = client.get_file_info(pyarrow.fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True,
                                                           allow_not_found=True))
    return {info.path.removeprefix(f"{BUCKET}/") for info in listing if info.type == pyarrow.fs.FileType.File}


def test_a_location_on_s3_reads_and_writes_objects_on_the_server(s3):
    location = Location.at(f"s3://{BUCKET}/unit") / "study" / "notes.txt"
    assert str(location) == f"s3://{BUCKET}/unit/study/notes.txt" and not location.is_local
    assert not location.exists()
    location.write_text("epoch 1\n")
    assert location.exists() and location.read_text() == "epoch 1\n"
    assert (Location.at(f"s3://{BUCKET}/unit") / "study").is_dir()
    assert server_keys(s3, "unit") == {"unit/study/notes.txt"}
    location.unlink()
    assert not location.exists()


def test_the_study_lock_holds_on_a_bucket(s3):
    from petseg.tune.study_lock import LOCK_FILE, StudyLock
    folder = Location.at(f"s3://{BUCKET}/locks/study")
    with StudyLock(folder, "study 'dup'", settle_s=0.2):
        assert server_keys(s3, "locks") == {f"locks/study/{LOCK_FILE}"}  # written whole: no scratch object left
        with pytest.raises(StudyError, match=r"study 'dup' is being run by another driver \(host "):
            StudyLock(folder, "study 'dup'", settle_s=0.2).acquire()
    assert server_keys(s3, "locks") == set()


def test_a_saved_config_reads_back_from_s3(s3):
    config = resolve_config("smoke", overrides={"storage_path": f"s3://{BUCKET}/ray", "name": "cfg"})
    saved = Location.at(config.run.storage_path) / "cfg" / "petseg_config.yaml"
    saved.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_config(saved) == config


def test_a_local_location_is_the_resolved_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = Location.at("ray") / "study" / "file.txt"
    assert location.is_local and str(location) == str(tmp_path / "ray" / "study" / "file.txt")
    location.write_text("x")  # its folders are made, as Tune makes them
    assert (tmp_path / "ray" / "study" / "file.txt").read_text() == "x"


def test_check_writable_leaves_no_probe_and_names_the_uri_and_variables_when_refused(s3):
    check_writable(Location.at(f"s3://{BUCKET}/probe"), "storage path")
    assert server_keys(s3, "probe") == set()
    with pytest.raises(StudyError) as refused:
        check_writable(Location.at("s3://no-such-bucket/ray"), "storage path")
    message = str(refused.value)
    assert message.startswith("cannot write to storage path s3://no-such-bucket/ray: ")
    assert "NO_SUCH_BUCKET" in message and "AWS_ACCESS_KEY_ID" in message and "AWS_ENDPOINT_URL" in message


def test_a_uri_pyarrow_cannot_open_is_named():
    with pytest.raises(StudyError, match=r"storage path nosuch://bucket/ray cannot be opened: .*s3://bucket"):
        Location.at("nosuch://bucket/ray")


def compare(*args, folder: Path, **popen):
    """compare.py with this checkout first on the path and the S3 variables of the `s3` fixture."""
    command = [sys.executable, str(REPO / "experiments" / "compare.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=folder, env=env, text=True, **popen)


def test_compare_refuses_a_bucket_it_cannot_write_before_anything_starts(s3, tmp_path):
    run = compare("--preset", "smoke", "--storage-path", "s3://no-such-bucket/ray", "--results-dir",
                  str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), folder=tmp_path,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2, out[-2000:] + err[-2000:]
    assert "cannot write to storage path s3://no-such-bucket/ray" in err and "AWS_ENDPOINT_URL" in err
    assert "Traceback" not in err and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def smoke_on_s3(s3, tmp_path_factory):
    """The smoke study on s3://BUCKET/ray, its driver killed (SIGKILL, with the local Ray it started) once trials
    have saved checkpoints, then resumed to its end. Returns (folder, the resumed run's stdout)."""
    folder = tmp_path_factory.mktemp("s3study")
    # One of the smoke study's variants: the storage is what is under test here.
    args = ["--preset", "smoke", "--variants", "denseaspp_voc", "--storage-path", f"s3://{BUCKET}/ray",
            "--results-dir", str(folder / "results"), "--cache-dir", str(folder / "cache")]
    console = folder / "killed.txt"
    with console.open("w") as out:
        killed = compare(*args, folder=folder, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and len(re.findall(r" epoch \d+/", console.read_text())) < 2:
            assert killed.poll() is None, "the study finished before it could be killed"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    assert "search finished" not in console.read_text()
    run = compare(*args, "--resume", folder=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, out[-3000:] + err[-3000:]
    return folder, out


def test_a_smoke_study_killed_and_resumed_on_s3_writes_the_full_comparison_and_keeps_everything_on_the_server(smoke_on_s3, s3):
    folder, out = smoke_on_s3
    comparison = pd.read_csv(folder / "results" / "smoke" / "comparison.csv")
    assert len(comparison) == 1 and comparison["test_weighted_iou"].between(0, 1).all()
    trials = pd.read_csv(folder / "results" / "smoke" / "all_trials.csv")
    assert len(trials) == 2 and set(trials["ended_by"]) <= {"max epochs", "early stopping", "ASHA"}
    # Everything is on the server: petseg's files beside Tune's state and every trial's checkpoints.
    keys = server_keys(s3, "ray/smoke")
    assert {"ray/smoke/petseg_config.yaml", "ray/smoke/petseg_data.json"} <= keys
    assert any(re.fullmatch(r"ray/smoke/experiment_state-.*\.json", key) for key in keys)
    for trial_id in trials["trial_id"]:
        # Ended trials' checkpoints are compacted on the bucket too (see test_verified_files).
        assert any(re.search(rf"_{trial_id}/checkpoint_\d+/{re.escape(ENDED_STATE_FILE)}$", key) for key in keys), trial_id
    assert f"full config in s3://{BUCKET}/ray/smoke/petseg_config.yaml" in out
    assert not list(folder.glob("s3*")), "a local folder was made for the URI"


def test_report_rebuilds_the_results_from_the_s3_uri(smoke_on_s3):
    folder, _ = smoke_on_s3
    rebuilt = folder / "rebuilt"
    run = subprocess.run([sys.executable, str(REPO / "experiments" / "report.py"), "--name", "smoke",
                          "--storage-path", f"s3://{BUCKET}/ray", "--results-dir", str(rebuilt)],
                         capture_output=True, text=True, timeout=300, cwd=folder,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]

    def measured(results):  # all but the wall-clock timings, which differ from run to run
        frame = pd.read_csv(results / "smoke" / "comparison.csv")
        return frame.drop(columns=[c for c in frame if c.startswith("prediction_")])

    pd.testing.assert_frame_equal(measured(folder / "results"), measured(rebuilt))
