"""The cluster configurations in cluster/: valid for Ray's launcher and KubeRay, closed by token auth.

Each requirement is one check function, run on the real files; the mutation tests remove each
requirement from a copy and check that its check then fails.
"""
import copy
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster" / "aws-gpu.yaml"
KUBERAY = REPO / "cluster" / "kuberay.yaml"
README = REPO / "cluster" / "README.md"


def ray_package_dir() -> Path:
    """The installed Ray package folder, found without importing (and starting) Ray."""
    return Path(importlib.util.find_spec("ray").submodule_search_locations[0])


def ray_version() -> str:
    """Ray's version as pinned in pyproject.toml (ray[...]==X.Y.Z)."""
    pinned = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned, "pyproject.toml must pin ray[...]==X.Y.Z"
    return pinned.group(1)


@pytest.fixture(scope="module")
def launcher_schema():
    return json.loads((ray_package_dir() / "autoscaler" / "ray-schema.json").read_text())


@pytest.fixture
def aws():
    return yaml.safe_load(AWS.read_text())


@pytest.fixture
def kuberay():
    return list(yaml.safe_load_all(KUBERAY.read_text()))


# ---------------------------------------------------------------- cluster launcher (aws-gpu.yaml)

def ray_start_commands(config: dict, key: str) -> list[str]:
    """The commands of config[key] that run `ray start`."""
    commands = [c for c in config.get(key, []) if "ray start" in c]
    assert commands, f"{key} has no `ray start` command"
    return commands


def remote_token_path(config: dict) -> str:
    """The node-side path of the token file shipped by file_mounts (a secret file, not inline)."""
    mounts = {remote: local for remote, local in config.get("file_mounts", {}).items()
              if Path(remote).name == "auth_token"}
    assert len(mounts) == 1, f"file_mounts must ship one token file to .../auth_token, got {mounts}"
    (remote, local), = mounts.items()
    assert local.startswith("~/.ray/") and local != remote, \
        "the token comes from a local secret file under ~/.ray/ (e.g. ~/.ray/petseg_auth_token)"
    return remote


def check_token_mounted(config: dict) -> None:
    assert remote_token_path(config) == "~/.ray/auth_token"


def check_token_auth_in_start_commands(config: dict) -> None:
    token = remote_token_path(config).replace("~", "$HOME", 1)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in ray_start_commands(config, key):
            before_start = command.split("ray start")[0]
            assert "RAY_AUTH_MODE=token" in before_start, f"{key}: RAY_AUTH_MODE=token not set for ray start"
            assert re.search(rf"RAY_AUTH_TOKEN_PATH=({re.escape(token)}|{re.escape(remote_token_path(config))})\b",
                             before_start), f"{key}: RAY_AUTH_TOKEN_PATH must name the mounted token {token}"


def start_options(command: str) -> dict[str, str]:
    """The --name=value / --name value options of the `ray start` in a command."""
    words = shlex.split(command.split("ray start", 1)[1].split(";")[0])
    options = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            if not value and i + 1 < len(words) and not words[i + 1].startswith("--"):
                value = words[i + 1]
            options[name] = value
    return options


def check_dashboard_on_localhost(config: dict) -> None:
    for command in ray_start_commands(config, "head_start_ray_commands"):
        assert start_options(command).get("dashboard-host") == "127.0.0.1", "head dashboard must bind 127.0.0.1"
    every_command = json.dumps({k: v for k, v in config.items() if k.endswith("commands")})
    assert "0.0.0.0" not in every_command, "no command may bind 0.0.0.0"


def gpu_worker_types(config: dict) -> dict:
    return {name: spec for name, spec in config["available_node_types"].items()
            if name != config["head_node_type"] and spec.get("resources", {}).get("GPU", 0) >= 1}


def check_gpu_workers_and_cpu_head(config: dict) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    assert head.get("resources", {}).get("GPU") == 0, "the head type must advertise GPU: 0 (no GPU trials on it)"
    workers = gpu_worker_types(config)
    assert workers, "there must be a worker type with GPU resources"
    for name, spec in workers.items():
        assert 0 <= spec.get("min_workers", 0) <= spec["max_workers"] <= config["max_workers"], name
        assert spec["max_workers"] >= 1, name


def check_setup_installs_petseg(config: dict) -> None:
    repo = [remote for remote, local in config.get("file_mounts", {}).items() if local in (".", "./")]
    assert len(repo) == 1, "file_mounts must ship the repository ('.')"
    installs = [c for c in config.get("setup_commands", []) if re.search(r"pip install -e " + re.escape(repo[0]), c)]
    assert installs, f"setup_commands must `pip install -e {repo[0]}` (petseg with its pyproject pins)"
    shipped_filters = config.get("rsync_filter", []) + config.get("rsync_exclude", [])
    assert ".gitignore" in shipped_filters or any(".venv" in f for f in shipped_filters), \
        "the repository must be shipped without .venv (rsync_filter: [.gitignore])"


def check_no_public_ray_ports(config: dict) -> None:
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or \
            any(r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", []))
        assert not (public and (rule.get("FromPort"), rule.get("ToPort")) != (22, 22)), \
            f"security group rule opens more than SSH to the internet: {rule}"


AWS_CHECKS = [check_token_mounted, check_token_auth_in_start_commands, check_dashboard_on_localhost,
              check_gpu_workers_and_cpu_head, check_setup_installs_petseg, check_no_public_ray_ports]


def test_aws_config_is_valid_for_rays_cluster_launcher(aws, launcher_schema):
    jsonschema.validate(aws, launcher_schema)
    # What `ray up` does before launching: merge the provider's defaults, then validate again.
    from ray.autoscaler._private.util import prepare_config, validate_config
    prepared = prepare_config(copy.deepcopy(aws))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]
    assert prepared["auth"]["ssh_user"]


def test_the_launcher_schema_catches_a_misspelt_field(aws, launcher_schema):
    aws["available_node_types"][aws["head_node_type"]]["resource"] = {"GPU": 0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(aws, launcher_schema)


@pytest.mark.parametrize("check", AWS_CHECKS, ids=lambda c: c.__name__)
def test_aws_config_meets_petsegs_requirements(aws, check):
    check(aws)


def _drop_token_mount(c):
    c["file_mounts"] = {k: v for k, v in c["file_mounts"].items() if "auth_token" not in k}


def _drop_auth_mode(key):
    def mutate(c):
        c[key] = [cmd.replace("RAY_AUTH_MODE=token", "") for cmd in c[key]]
    return mutate


def _drop_token_path(c):
    c["worker_start_ray_commands"] = [re.sub(r"RAY_AUTH_TOKEN_PATH=\S+", "", cmd)
                                      for cmd in c["worker_start_ray_commands"]]


def _public_dashboard(c):
    c["head_start_ray_commands"] = [cmd.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
                                    for cmd in c["head_start_ray_commands"]]


def _no_dashboard_host(c):
    c["head_start_ray_commands"] = [cmd.replace("--dashboard-host=127.0.0.1", "")
                                    for cmd in c["head_start_ray_commands"]]


def _head_gets_gpu(c):
    c["available_node_types"][c["head_node_type"]]["resources"].pop("GPU")


def _no_gpu_workers(c):
    for name, spec in gpu_worker_types(c).items():
        spec["resources"]["GPU"] = 0


def _no_install(c):
    c["setup_commands"] = [cmd for cmd in c["setup_commands"] if "pip install -e" not in cmd]


def _open_ray_ports(c):
    c["provider"].setdefault("security_group", {})["IpPermissions"] = [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


AWS_MUTATIONS = {
    "token file not mounted": (_drop_token_mount, check_token_mounted),
    "head without RAY_AUTH_MODE": (_drop_auth_mode("head_start_ray_commands"), check_token_auth_in_start_commands),
    "workers without RAY_AUTH_MODE": (_drop_auth_mode("worker_start_ray_commands"), check_token_auth_in_start_commands),
    "workers without RAY_AUTH_TOKEN_PATH": (_drop_token_path, check_token_auth_in_start_commands),
    "dashboard on 0.0.0.0": (_public_dashboard, check_dashboard_on_localhost),
    "dashboard host unset": (_no_dashboard_host, check_dashboard_on_localhost),
    "head may take GPU trials": (_head_gets_gpu, check_gpu_workers_and_cpu_head),
    "no GPU worker type": (_no_gpu_workers, check_gpu_workers_and_cpu_head),
    "petseg not installed": (_no_install, check_setup_installs_petseg),
    "dashboard port open to the internet": (_open_ray_ports, check_no_public_ray_ports),
}


@pytest.mark.parametrize("name", AWS_MUTATIONS)
def test_aws_checks_fail_when_a_requirement_is_removed(aws, name):
    mutate, check = AWS_MUTATIONS[name]
    mutate(aws)
    with pytest.raises(AssertionError):
        check(aws)


# ------------------------------------------------------------------------- KubeRay (kuberay.yaml)

def by_kind(docs: list, kind: str) -> dict:
    found = [d for d in docs if d and d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} document, found {len(found)}"
    return found[0]


def pod_templates(cluster: dict) -> dict[str, dict]:
    """Pod spec per group: 'head' and each worker group's name."""
    spec = cluster["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec.get("workerGroupSpecs", [])})
    return pods


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def check_kinds(docs: list) -> None:
    cluster = by_kind(docs, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1", "RayCluster apiVersion ray.io/v1"
    assert by_kind(docs, "Secret")["apiVersion"] == "v1", "Secret apiVersion v1"
    assert docs.index(by_kind(docs, "Secret")) == 1, "the Secret template is the second document"
    assert cluster["spec"]["rayVersion"] == ray_version(), "rayVersion must match petseg's Ray pin"


def check_head_and_gpu_worker_group(docs: list) -> None:
    spec = by_kind(docs, "RayCluster")["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1", "head dashboard must bind 127.0.0.1"
    assert head["rayStartParams"].get("num-gpus") == "0", "no GPU trials on the head"
    groups = spec.get("workerGroupSpecs", [])
    assert len(groups) == 1, "one GPU worker group"
    group = groups[0]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1
    for container in group["template"]["spec"]["containers"]:
        assert int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0)) >= 1, "GPU workers need nvidia.com/gpu limits"
    for pod in pod_templates(by_kind(docs, "RayCluster")).values():
        for container in pod["containers"]:
            image, _, tag = container["image"].rpartition(":")
            assert image and tag.startswith(ray_version()) or "petseg" in image, \
                f"image {container['image']} must be Ray {ray_version()} (or a petseg image built FROM it)"


def documented_secret_commands(text: str) -> list[tuple[str, str]]:
    return re.findall(r"kubectl create secret generic (\S+) --from-file=(\w+)=", text)


def check_token_from_secret(docs: list, text: str) -> None:
    secret = by_kind(docs, "Secret")
    name = secret["metadata"]["name"]
    assert not secret.get("data") and not secret.get("stringData"), \
        "the Secret template must not carry a token (kubectl apply would overwrite the created one)"
    commands = documented_secret_commands(text)
    assert commands and all(n == name for n, _ in commands), f"document `kubectl create secret generic {name} ...`"
    keys = {key for _, key in commands}
    assert len(keys) == 1, f"the documented commands disagree on the key: {keys}"
    key = keys.pop()
    cluster = by_kind(docs, "RayCluster")
    containers = [c for pod in pod_templates(cluster).values() for c in pod["containers"]]
    if cluster["spec"].get("enableInTreeAutoscaling"):
        containers.append({"name": "autoscaler", **cluster["spec"].get("autoscalerOptions", {})})
    for container in containers:
        env = env_of(container)
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{container['name']}: RAY_AUTH_MODE=token"
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref == {"name": name, "key": key}, f"{container['name']}: RAY_AUTH_TOKEN from Secret {name}/{key}"
        assert "value" not in env["RAY_AUTH_TOKEN"], "no token inline"


def check_volumes(docs: list) -> None:
    claim = by_kind(docs, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "shared results need a ReadWriteMany claim"
    for group, pod in pod_templates(by_kind(docs, "RayCluster")).items():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            results = volumes.get(mounts.get("/mnt/results"), {})
            assert results.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"], \
                f"{group}: /mnt/results must mount the shared claim"
            caches = [volumes.get(name, {}) for path, name in mounts.items() if path.endswith("/.cache")]
            assert any("emptyDir" in v or "persistentVolumeClaim" in v for v in caches), \
                f"{group}: a per-node cache volume at ~/.cache"


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def check_cluster_ip_only(docs: list) -> None:
    assert by_kind(docs, "RayCluster")["spec"]["headGroupSpec"].get("serviceType") == "ClusterIP", "head Service: ClusterIP"
    for node in walk(docs):
        for key in ("serviceType", "type"):
            assert node.get(key) not in ("LoadBalancer", "NodePort"), f"{key}: {node.get(key)} exposes the cluster"


KUBERAY_CHECKS = [check_kinds, check_head_and_gpu_worker_group, check_volumes, check_cluster_ip_only]


@pytest.mark.parametrize("check", KUBERAY_CHECKS, ids=lambda c: c.__name__)
def test_kuberay_manifest_meets_petsegs_requirements(kuberay, check):
    check(kuberay)


def test_kuberay_token_comes_from_the_documented_secret(kuberay):
    check_token_from_secret(kuberay, KUBERAY.read_text())
    # The README creates the same Secret.
    assert set(documented_secret_commands(README.read_text())) == set(documented_secret_commands(KUBERAY.read_text()))


def _head(docs):
    return by_kind(docs, "RayCluster")["spec"]["headGroupSpec"]


def _worker(docs):
    return by_kind(docs, "RayCluster")["spec"]["workerGroupSpecs"][0]


def _drop_env(name, where):
    def mutate(docs):
        container = where(docs)
        container["env"] = [e for e in container["env"] if e["name"] != name]
    return mutate


def _rename_secret(docs):
    by_kind(docs, "Secret")["metadata"]["name"] = "another-secret"


def _wrong_key(docs):
    env_of(_worker(docs)["template"]["spec"]["containers"][0])["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] = "token"


def _inline_token(docs):
    by_kind(docs, "Secret")["stringData"] = {"auth_token": "0123abcd"}


def _no_gpu_limit(docs):
    _worker(docs)["template"]["spec"]["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu")


def _public_dashboard_k8s(docs):
    _head(docs)["rayStartParams"]["dashboard-host"] = "0.0.0.0"


def _load_balancer(docs):
    _head(docs)["serviceType"] = "LoadBalancer"


def _extra_lb_service(docs):
    docs.append({"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"}})


def _no_results_mount(docs):
    container = _worker(docs)["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/mnt/results"]


def _no_cache_volume(docs):
    pod = _head(docs)["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "cache"]


def _no_worker_group(docs):
    by_kind(docs, "RayCluster")["spec"]["workerGroupSpecs"] = []


def _old_api(docs):
    by_kind(docs, "RayCluster")["apiVersion"] = "ray.io/v1alpha1"


KUBERAY_MUTATIONS = {
    "head without RAY_AUTH_MODE": (_drop_env("RAY_AUTH_MODE", lambda d: _head(d)["template"]["spec"]["containers"][0]),
                                   check_token_from_secret),
    "workers without RAY_AUTH_TOKEN": (_drop_env("RAY_AUTH_TOKEN", lambda d: _worker(d)["template"]["spec"]["containers"][0]),
                                       check_token_from_secret),
    "autoscaler without the token": (_drop_env("RAY_AUTH_TOKEN", lambda d: by_kind(d, "RayCluster")["spec"]["autoscalerOptions"]),
                                     check_token_from_secret),
    "Secret name differs": (_rename_secret, check_token_from_secret),
    "secretKeyRef key differs": (_wrong_key, check_token_from_secret),
    "token written into the Secret": (_inline_token, check_token_from_secret),
    "no nvidia.com/gpu limit": (_no_gpu_limit, check_head_and_gpu_worker_group),
    "dashboard on 0.0.0.0": (_public_dashboard_k8s, check_head_and_gpu_worker_group),
    "no worker group": (_no_worker_group, check_head_and_gpu_worker_group),
    "head Service LoadBalancer": (_load_balancer, check_cluster_ip_only),
    "extra LoadBalancer Service": (_extra_lb_service, check_cluster_ip_only),
    "results not mounted": (_no_results_mount, check_volumes),
    "no cache volume": (_no_cache_volume, check_volumes),
    "old API version": (_old_api, check_kinds),
}


@pytest.mark.parametrize("name", KUBERAY_MUTATIONS)
def test_kuberay_checks_fail_when_a_requirement_is_removed(kuberay, name):
    mutate, check = KUBERAY_MUTATIONS[name]
    mutate(kuberay)
    with pytest.raises(AssertionError):
        if check is check_token_from_secret:
            check(kuberay, KUBERAY.read_text())
        else:
            check(kuberay)


def test_the_installed_ray_is_the_pinned_one():
    """The schema above is the one the configs will meet: Ray's pinned version is installed."""
    import importlib.metadata
    assert importlib.metadata.version("ray") == ray_version()
