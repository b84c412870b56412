"""A token-authenticated Ray cluster on loopback that grows mid-study: compare.py --address, ray job submit, faults.

Nodes get their own loopback addresses (127.0.0.2, .3, .4: Ray rewrites 127.0.0.1), their own ports
and temp dir, and the fixture stops exactly the processes it started, also when a test fails.
"""
import json
import os
import secrets
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from petseg.node_cache import caches_size

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "experiments" / "compare.py"
RAY = str(Path(sys.executable).with_name("ray"))


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def start(args, env, log: Path) -> subprocess.Popen:
    """A `ray start ... --block` in its own process group, so it and its children stop together."""
    return subprocess.Popen([RAY, "start", *args, "--block", "--disable-usage-stats"], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Stop one node: its process group, politely then by force."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)  # a node that has not stopped by then is killed: nothing of it is read afterwards
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def alive_nodes(address: str, env: dict) -> int:
    out = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


class Cluster:
    """Head at 127.0.0.2 plus workers on further loopback addresses, all sharing one token."""

    def __init__(self, folder: Path):
        self.folder = folder
        token = folder / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.port, self.dashboard = free_port("127.0.0.2"), free_port("127.0.0.1")
        self.address = f"127.0.0.2:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        # Short: Ray's socket paths live under it. One per node: nodes sharing a temp dir delete
        # each other's job working directories.
        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))

    def node_args(self, ip: str) -> list[str]:
        """What every node needs of its own on a shared machine: address, temp dir, agent port."""
        return [f"--node-ip-address={ip}", "--num-cpus=1", f"--temp-dir={self.temp / ip}",
                f"--dashboard-agent-listen-port={free_port('127.0.0.1')}"]

    def start_head(self):
        self.nodes["127.0.0.2"] = start(
            ["--head", f"--port={self.port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard}",
             f"--ray-client-server-port={free_port('127.0.0.2')}", *self.node_args("127.0.0.2")],
            self.env, self.folder / "head.log")
        wait_for(lambda: self._port_open(), 60, "the head node's GCS port")

    def add_worker(self, ip: str, **env: str):
        """Start a node at `ip` with `env` in its environment (what a node type's setup would export)."""
        self.nodes[ip] = start([f"--address={self.address}", *self.node_args(ip)], {**self.env, **env},
                               self.folder / f"worker-{ip}.log")
        wait_for(lambda: alive_nodes(self.address, self.env) == len(self.nodes), 90, f"node {ip} to join")

    def _port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.2", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop_all(self):
        for process in reversed(list(self.nodes.values())):
            stop(process)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster (its head at 127.0.0.2); test_a_study_grows_onto_a_node_that_joins_mid_study adds one."""
    folder = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(folder)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop_all()


def pending_placement_groups(cluster) -> int:
    """Placement groups waiting for resources, through Ray's public state API (`ray list placement-groups`)."""
    listed = subprocess.run([RAY, "list", "placement-groups", "--address", cluster.address, "--format", "json",
                             "--filter", "state=PENDING"], env=cluster.env, capture_output=True, text=True, timeout=60)
    # An empty answer is the line "No resource in the cluster", not JSON.
    return len(json.loads(listed.stdout)) if listed.stdout.lstrip().startswith("[") else 0


def study_config(folder: Path, **values) -> Path:
    path = folder / f"config-{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump({"results_dir": str(folder / "results"), "cache_dir": str(folder / "cache"),
                                    **values}))
    return path


def test_a_study_grows_onto_a_node_that_joins_mid_study(cluster):
    folder = cluster.folder
    log = folder / "grow.log"
    # One CPU on the head: one trial runs, one more waits for a node (one node's worth pends on a cluster).
    driver = subprocess.Popen(
        [sys.executable, str(COMPARE), "--preset", "smoke", "--address", cluster.address, "--name", "two_nodes",
         "--variants", "denseaspp_voc,denseaspp_ade20k", "--storage-path", str(folder / "storage"),
         "--config", str(study_config(folder, num_samples=3, max_epochs=20, grace_period=20))],
        env=cluster.env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=folder)
    try:
        wait_for(lambda: pending_placement_groups(cluster) >= 1, 300, "a trial's placement group to pend")
        assert driver.poll() is None, log.read_text()[-3000:]
        # A second driver of the study (a job resubmitted with --resume while the first runs) is refused.
        second = subprocess.run([sys.executable, str(COMPARE), "--preset", "smoke", "--address", cluster.address,
                                 "--name", "two_nodes", "--storage-path", str(folder / "storage"), "--resume"],
                                env=cluster.env, capture_output=True, text=True, timeout=120, cwd=folder)
        assert second.returncode == 2 and "is being run by another driver (host " in second.stderr, second.stderr
        # What an autoscaler does for the pending demand; this node type keeps its caches on its own disk.
        cluster.add_worker("127.0.0.3", PETSEG_NODE_CACHE_DIR=str(folder / "node3-cache"),
                           PETSEG_NODE_CACHE_BUDGET="64M")
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "that the 1 node(s) fit now, one node's worth pending beyond them" in log.read_text()
    trials = pd.read_csv(folder / "results" / "two_nodes" / "all_trials.csv")
    assert set(trials["node"]) == {"127.0.0.2", "127.0.0.3"}
    assert (trials["ended_by"] != "error").all() and (trials["features"] == "cached").all()
    # Each node built the caches its trials read in its own folder, node 3 within its own budget.
    for node, cache in (("127.0.0.2", folder / "cache"), ("127.0.0.3", folder / "node3-cache")):
        keys = {key for listed in trials[trials["node"] == node]["feature_caches"] for key in listed.split(";")}
        assert keys and all((cache / "features" / key / "meta.json").is_file() for key in keys), (node, keys)
    assert 0 < caches_size(folder / "node3-cache") <= 64 * 2**20
    # every trial's TensorBoard images reached the storage path, whichever node ran it
    for trial_id in trials["trial_id"]:
        images = next((folder / "storage" / "two_nodes").glob(f"*_{trial_id}")) / "tensorboard_images"
        assert any(images.glob("events.out.tfevents.*")), trial_id


def test_ray_job_submit_runs_the_study(cluster):
    folder = cluster.folder
    entrypoint = (f"{sys.executable} experiments/compare.py --preset smoke --name job --variants fcn_resnet50 "
                  f"--storage-path {folder / 'storage'} --config {study_config(folder, num_samples=1)}")
    run = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard}",
                          "--working-dir", str(REPO), "--", *entrypoint.split()],
                         env=cluster.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "succeeded" in run.stdout
    assert len(pd.read_csv(folder / "results" / "job" / "comparison.csv")) == 1


def test_driver_without_the_token_is_refused(cluster):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    run = subprocess.run(
        [sys.executable, str(COMPARE), "--preset", "smoke", "--address", cluster.address, "--name", "intruder",
         "--storage-path", str(cluster.folder / "storage"), "--config", str(study_config(cluster.folder))],
        env=env, capture_output=True, text=True, timeout=300, cwd=cluster.folder)
    assert run.returncode == 2
    assert f"the Ray cluster at {cluster.address} refused this driver" in run.stderr
    assert "RAY_AUTH_MODE=token" in run.stderr


def results_by_trial(experiment: Path) -> dict[str, list[dict]]:
    """Every reported result line per trial id, read from the trials' result.json files."""
    out = {}
    for trial in experiment.glob("*_*"):
        lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").is_file() else []
        out[trial.name.rsplit("_", 1)[1]] = [json.loads(line) for line in lines if line.strip()]
    return out


def test_killed_node_trials_resume_elsewhere_from_their_checkpoint(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_head()
        cluster.add_worker("127.0.0.3")
        cluster.add_worker("127.0.0.4")
        experiment = tmp_path / "storage" / "node_loss"
        driver = subprocess.Popen(
            [sys.executable, str(COMPARE), "--preset", "smoke", "--address", cluster.address, "--name",
             "node_loss", "--variants", "denseaspp_voc,cutdenseaspp_voc", "--storage-path", str(tmp_path / "storage"),
             # No retries of the trials' own errors: a lost node must not need any.
             "--config", str(study_config(tmp_path, max_epochs=4, grace_period=4, patience=4, max_failures=0,
                                          max_worker_losses=2))],
            env=cluster.env, stdout=(tmp_path / "driver.log").open("w"), stderr=subprocess.STDOUT, cwd=tmp_path)

        workers, doomed = ("127.0.0.3", "127.0.0.4"), []

        def a_trial_on_a_worker_node_has_an_epoch():  # Ray places trials as it likes: either worker will do
            doomed[:] = [r["node"] for rs in results_by_trial(experiment).values() for r in rs[-1:]
                         if r.get("node") in workers and r["epoch"] < 4][:1]
            return bool(doomed)

        wait_for(a_trial_on_a_worker_node_has_an_epoch, 300, "a trial on a worker node to checkpoint an epoch")
        before = results_by_trial(experiment)
        victims = [t for t, rs in before.items() if rs and rs[-1]["node"] == doomed[0] and rs[-1]["epoch"] < 4]
        stop(cluster.nodes.pop(doomed[0]))  # the node and everything it runs
        assert victims, before  # a trial was mid-way on the node when it went
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        cluster.stop_all()

    trials = pd.read_csv(tmp_path / "results" / "node_loss" / "all_trials.csv").set_index("trial_id")
    assert (trials["ended_by"] != "error").all() and len(trials) == 4
    after = results_by_trial(experiment)
    for trial_id in victims:
        assert trials.loc[trial_id, "worker_losses"] >= 1 and trials.loc[trial_id, "failures"] == 0
        assert trials.loc[trial_id, "node"] != doomed[0]
        epochs = [r["epoch"] for r in after[trial_id]]
        assert epochs[-1] == 4  # finished all its epochs elsewhere
        checkpointed = max(r["epoch"] for r in before[trial_id])
        # resumed from its last checkpoint: nothing before it was trained again
        assert min(e for e in epochs[len(before[trial_id]):]) >= checkpointed
        print(f"node loss: trial {trial_id} had {checkpointed} epoch(s); epochs recomputed: "
              f"{len(epochs) - len(set(epochs))}; results lost: 0")


def test_out_of_memory_trial_is_retried_then_reported(tmp_path):
    env = {**os.environ, "PETSEG_TEST_OOM_VARIANT": "denseaspp_voc",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "oom_hook"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(COMPARE), "--preset", "smoke", "--name", "oom", "--variants", "denseaspp_voc,fcn_resnet50",
         "--storage-path", str(tmp_path / "storage"),
         "--config", str(study_config(tmp_path, num_samples=1, max_failures=2))],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "results" / "oom" / "all_trials.csv").set_index("variant")
    assert trials.loc["denseaspp_voc", "ended_by"] == "error"
    assert trials.loc["denseaspp_voc", "failures"] == 3  # the first attempt and two retries
    assert trials.loc["denseaspp_voc", "worker_losses"] == 0  # retried in its worker, never Tune's to retry
    assert "OutOfMemoryError" in trials.loc["denseaspp_voc", "error"]
    assert trials.loc["fcn_resnet50", "ended_by"] == "max epochs"
