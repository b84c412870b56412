"""Ray's public API only: no private Ray module or attribute in petseg/, one documented exception, and a guard
that fails when a Ray upgrade drops something petseg relies on."""
import inspect
import re
import tomllib
from pathlib import Path

import pytest
import ray
from ray.tune import ExperimentAnalysis
from ray.tune.experiment import Trial

from petseg.tune.cluster import NODE_ADDRESS_OPTION, node_address_option

REPO = Path(__file__).resolve().parents[1]
# Private Ray modules and the private attributes of Ray objects that petseg once read or might be tempted to.
FORBIDDEN = re.compile(r"ray(\.\w+)*\._(private|internal)\b|internal_kv|\.run_metadata\b"
                       r"|checkpoint_manager|\._brackets\b|\._rungs\b|\._trial_info\b|\.local_path\b"
                       r"|\._ot_study\b|(?<!get)_node_ip_address")
# The one exception: ray.init's hidden node-address option, named once, in cluster.py.
ALLOWED = {("petseg/tune/cluster.py", 'NODE_ADDRESS_OPTION = "_node_ip_address"')}


def test_the_package_uses_no_private_ray_module_or_attribute():
    found = []
    for path in sorted((REPO / "petseg").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            relative = path.relative_to(REPO).as_posix()
            if FORBIDDEN.search(line) and (relative, line.strip()) not in ALLOWED:
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "private Ray names in petseg/:\n" + "\n".join(found)


def test_the_guard_catches_what_it_forbids():
    for line in ("from ray._private import state", "from ray.air._internal.util import RunnerThread", "trial.run_metadata.num_failures", "scheduler._brackets[0]",
                 "print(trial.local_path)", "internal_kv._internal_kv_get(key)",
                 "cpm = trial.run_metadata.checkpoint_manager", 'ray.init(_node_ip_address="127.0.0.2")'):
        assert FORBIDDEN.search(line), line
    for line in ("trial.path", "trial.checkpoint", "trial.num_failures", "ray.util.get_node_ip_address()"):
        assert not FORBIDDEN.search(line), line


def test_the_installed_ray_is_the_pinned_one():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    assert ray.__version__ == pinned, (f"Ray {ray.__version__} is installed but petseg is tested on {pinned}: run "
                                       "this file and the cluster tests before moving the pin")


def test_ray_init_still_takes_the_hidden_node_address_option():
    """The one private name petseg uses: ray.init pops it from its hidden keyword arguments (an unknown keyword is
    a RuntimeError). If an upgrade drops it, find Ray's new way to start a local node on a loopback address."""
    assert node_address_option("127.0.0.2") == {NODE_ADDRESS_OPTION: "127.0.0.2"}
    source = inspect.getsource(ray.init)
    assert f'kwargs.pop("{NODE_ADDRESS_OPTION}"' in source, f"ray.init no longer handles {NODE_ADDRESS_OPTION}"
    assert "Unknown keyword argument" in source  # what a dropped option would become


def test_the_public_trial_and_analysis_surface_petseg_reads_is_there():
    for name in ("path", "checkpoint", "num_failures", "last_result"):
        assert isinstance(inspect.getattr_static(Trial, name), property), name
    assert callable(Trial.get_error)
    assert isinstance(inspect.getattr_static(ExperimentAnalysis, "trial_dataframes"), property)
    from ray.tune.result import AUTO_RESULT_KEYS

    assert "checkpoint_dir_name" in AUTO_RESULT_KEYS  # how a checkpoint is matched with its result row


def test_a_request_no_node_fits_waits_on_a_cluster_and_is_refused_on_the_local_ray(monkeypatch, capsys):
    """No autoscaler probe (it read ray._private): a cluster may grow, by its autoscaler or by a node joined by
    hand, so the study waits for a node that fits; the embedded local Ray never grows."""
    from petseg.errors import StudyError
    from petseg.tune import cluster
    from petseg.tune.config import StudyConfig

    monkeypatch.setattr(cluster.ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}},
                                                       {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    wants_gpu = StudyConfig.from_flat({"gpus_per_trial": 1.0, "address": "10.0.0.5:6379"})
    cluster.check_resources(wants_gpu)
    assert "no node has 2 CPU, 1 GPU for a trial yet (the nodes have: 4 CPU, 0 GPU); the study waits" in \
        capsys.readouterr().out
    with pytest.raises(StudyError, match="a trial asks for 2 CPU, 1 GPU on one node, but the nodes have only: 4 CPU"):
        cluster.check_resources(wants_gpu.replace(address=None))
    cluster.check_resources(StudyConfig.from_flat({"cpus_per_trial": 4.0}))  # fits: nothing said
    assert capsys.readouterr().out == ""
