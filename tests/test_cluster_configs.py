"""The cluster configurations in cluster/: each validated against a schema, then the settings users rely on.

aws-gpu.yaml meets the installed Ray's launcher schema (what `ray up` checks); kuberay.yaml meets
tests/schemas/raycluster-v1.json, petseg's closed schema of the RayCluster v1 API (what `kubectl apply`
refuses). cluster/README.md is read only through its commands (fenced code blocks), never its sentences.
"""
import copy
import importlib.metadata
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
RAYCLUSTER_SCHEMA = REPO / "tests" / "schemas" / "raycluster-v1.json"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# The per-trial request of cluster/README.md's study commands: two trials share each GPU node.
TRIAL = {"CPU": 2.0, "GPU": 0.5}
# Where every node mounts the shared storage that --storage-path and --data-root must lie on.
AWS_SHARED, KUBERAY_SHARED = "/mnt/shared", "/mnt/results"
# AWS's recommended NFS mount options for EFS.
EFS_OPTIONS = {"nfsvers=4.1", "rsize=1048576", "wsize=1048576", "hard", "timeo=600", "retrans=2", "noresvport"}
# The per-node feature cache at paper scale (fp16, four backbones). petseg checks the disk's free space, not an
# emptyDir's sizeLimit, so a smaller limit gets the pod evicted instead of making petseg run the backbone live.
PAPER_FEATURE_CACHE_GIB = 129
# The KubeRay release the RayCluster schema describes (authOptions.secretName needs it).
KUBERAY_RELEASE = "1.6"
# The rayproject images' user `ray` and its group `users`, which must own the shared volume.
RAY_UID, RAY_GID = 1000, 100


def ray_pin() -> str:
    """The Ray version pyproject.toml pins (ray[...]==X.Y.Z)."""
    ray, = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "ray"]
    return next(s.version for s in ray.specifier if s.operator == "==")


def readme_blocks() -> list[str]:
    """The fenced code blocks of cluster/README.md: the commands a user runs."""
    return re.findall(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", (CLUSTER / "README.md").read_text(), re.M | re.S)


def quantity(value) -> float:
    """A Kubernetes quantity ("4", "500m", "160Gi") as a number."""
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
             "Ti": 2**40}
    return float(number) * units[unit]


def trials_per_node(cpus: float, gpus: float) -> tuple[int, int]:
    """How many TRIAL requests a node fits by its CPUs, and by its GPUs."""
    return int(cpus // TRIAL["CPU"]), int(gpus // TRIAL["GPU"])


@pytest.fixture(scope="module")
def aws():
    """cluster/aws-gpu.yaml, parsed."""
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


@pytest.fixture(scope="module")
def kuberay_docs():
    """The documents of cluster/kuberay.yaml, in order."""
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]


@pytest.fixture(scope="module")
def kuberay(kuberay_docs):
    """The documents of cluster/kuberay.yaml, by kind."""
    return {d["kind"]: d for d in kuberay_docs}


def test_the_installed_ray_is_the_pinned_one():
    """The launcher schema the AWS config is checked against comes with the Ray the nodes install."""
    assert importlib.metadata.version("ray") == ray_pin()


# ----------------------------------------------------------------------------- AWS (aws-gpu.yaml)

def test_aws_config_passes_rays_own_validation(aws):
    """What `ray up` does before it launches anything: merge the provider's defaults, validate against
    ray/autoscaler/ray-schema.json (closed objects: a misspelt field fails) and Ray's further checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(aws)))


def test_aws_head_runs_no_trials_and_gpu_workers_can_grow(aws):
    types = aws["available_node_types"]
    assert types[aws["head_node_type"]]["resources"] == {"CPU": 0, "GPU": 0}, "no trial may land on the head"
    workers = {name: t for name, t in types.items() if name != aws["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers.values()), f"GPU workers: {workers}"
    for name, worker in workers.items():
        assert worker.get("min_workers", 0) < worker["max_workers"] <= aws["max_workers"], f"{name} cannot scale up"
        cpu_slots, gpu_slots = trials_per_node(worker["resources"]["CPU"], worker["resources"]["GPU"])
        assert cpu_slots == gpu_slots >= 1, f"{name}: {TRIAL} per trial leaves CPUs or GPUs idle"


def test_aws_nodes_start_ray_with_the_token(aws):
    assert aws["file_mounts"]["~/.ray/auth_token"] == "~/.ray/petseg_auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in aws[key] if "ray start" in c]
        assert starts, f"{key} starts no Ray"
        for command in starts:
            before = command.split("ray start")[0]
            assert "RAY_AUTH_MODE=token" in before and "RAY_AUTH_TOKEN_PATH=$HOME/.ray/auth_token" in before, \
                f"{key}: `ray start` without the token"


def test_aws_dashboard_and_ports_stay_private(aws):
    head_start = " ".join(aws["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head_start), "the dashboard must bind 127.0.0.1"
    commands = json.dumps({k: v for k, v in aws.items() if k.endswith("_commands")})
    assert "0.0.0.0" not in commands, "a command binds 0.0.0.0"
    # Ray gives the group it creates SSH and intra-cluster rules only; any rule added here would open more.
    assert "IpPermissions" not in aws["provider"]["security_group"], "security_group must add no inbound rules"


def test_aws_every_node_installs_petseg_at_the_locked_versions(aws):
    # The repository, shipped as git would (rsync_filter: .gitignore, which keeps .venv out).
    assert aws["file_mounts"]["~/petseg"] == "." and ".gitignore" in aws["rsync_filter"], "ship the repository"
    assert ".venv/" in (REPO / ".gitignore").read_text().split(), "the repository must ship without .venv"
    installs = {key: [part for command in aws[key] for part in command.split("&&") if "pip install" in part]
                for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")}
    for key, parts in installs.items():
        for part in parts:
            assert "install -U pip" in part or "-c ~/petseg/cluster/constraints.txt" in part, \
                f"{key}: pip install without the constraints: {part.strip()}"
    assert any(part.rstrip().endswith("-e ~/petseg") for part in installs["setup_commands"]), "petseg not installed"
    # The autoscaler on the head drives EC2 through boto3, which petseg's aws extra brings.
    assert any("petseg[aws]" in part for part in installs["head_setup_commands"]), "no petseg[aws] on the head"
    assert "boto3" in [Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["aws"]]


def test_aws_shared_storage_is_mounted_before_ray_starts(aws):
    """setup_commands add EFS to /etc/fstab; a restarted stopped node skips them, so each start mounts it."""
    entries = [line.split() for c in aws["setup_commands"]
               for line in re.findall(r"echo '([^']*)'\s*\|\s*sudo tee -a /etc/fstab", c)]
    assert len(entries) == 1, "setup_commands must add one /etc/fstab entry"
    device, point, kind, options = entries[0][:4]
    assert (point, kind) == (AWS_SHARED, "nfs4") and device.endswith(".amazonaws.com:/"), entries[0]
    missing = (EFS_OPTIONS | {"_netdev"}) - set(options.split(","))
    assert not missing, f"the fstab entry lacks {sorted(missing)}"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(i for i, c in enumerate(aws[key]) if "ray start" in c)
        assert f"mountpoint -q {AWS_SHARED} || sudo mount {AWS_SHARED}" in aws[key][:start], \
            f"{key} must mount {AWS_SHARED} (or fail) before `ray start`"


def test_aws_disks_go_with_their_instances(aws):
    """Otherwise the EBS volumes of terminated instances stay, and are billed."""
    for name, node_type in aws["available_node_types"].items():
        for device in node_type["node_config"]["BlockDeviceMappings"]:
            assert device["Ebs"]["DeleteOnTermination"] is True, f"{name}: DeleteOnTermination must be true"


# ----------------------------------------------------------------------------- KubeRay (kuberay.yaml)

@pytest.fixture(scope="module")
def raycluster_schema():
    """petseg's schema of the RayCluster v1 API, with definitions for the core kinds kuberay.yaml uses."""
    return json.loads(RAYCLUSTER_SCHEMA.read_text())


def pods(cluster: dict) -> dict[str, dict]:
    """The pod spec of the head ('head') and of each worker group (by its name)."""
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"]["template"]["spec"],
            **{g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]}}


def test_the_raycluster_schema_refuses_unknown_fields(raycluster_schema):
    """Every object the schema describes is closed, so a misspelt field fails here as in `kubectl apply`."""
    jsonschema.Draft7Validator.check_schema(raycluster_schema)
    nodes = [raycluster_schema]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                assert node.get("additionalProperties") is False, f"open object: {sorted(node['properties'])}"
            nodes.extend(node.values())


def test_kuberay_manifest_is_valid(kuberay_docs, kuberay, raycluster_schema):
    assert [d["kind"] for d in kuberay_docs] == ["RayCluster", "Secret", "PersistentVolumeClaim"]
    # The Secret and the claim are core v1 kinds, described by definitions of the same file.
    secret = {"$ref": "#/definitions/secret", "definitions": raycluster_schema["definitions"]}
    claim = {"$ref": "#/definitions/persistentVolumeClaim", "definitions": raycluster_schema["definitions"]}
    for kind, schema in (("RayCluster", raycluster_schema), ("Secret", secret), ("PersistentVolumeClaim", claim)):
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft7Validator(schema).iter_errors(kuberay[kind])]
        assert not errors, f"{kind}:\n" + "\n".join(errors)
    assert kuberay["RayCluster"]["spec"]["rayVersion"] == ray_pin(), f"rayVersion must be petseg's pin {ray_pin()}"


def test_kuberay_head_runs_no_trials_and_gpu_workers_can_grow(kuberay):
    spec = kuberay["RayCluster"]["spec"]
    params = spec["headGroupSpec"]["rayStartParams"]
    assert (params["num-cpus"], params["num-gpus"]) == ("0", "0"), "no trial may land on the head"
    assert spec["enableInTreeAutoscaling"] is True, "without the autoscaler no worker group grows"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{group['groupName']}: replicas"
        assert group["minReplicas"] < group["maxReplicas"], f"{group['groupName']} cannot scale up"
        for container in group["template"]["spec"]["containers"]:
            limits = container["resources"]["limits"]
            cpu_slots, gpu_slots = trials_per_node(quantity(limits["cpu"]), quantity(limits.get("nvidia.com/gpu", 0)))
            assert cpu_slots == gpu_slots >= 1, f"{group['groupName']}: {TRIAL} per trial leaves CPUs or GPUs idle"


def test_kuberay_token_comes_from_the_secret_users_create(kuberay):
    secret = kuberay["Secret"]
    auth = kuberay["RayCluster"]["spec"].get("authOptions")
    assert auth == {"mode": "token", "secretName": secret["metadata"]["name"]}, f"authOptions: {auth}"
    # A template without data: `kubectl apply` then keeps the token created with kubectl.
    assert "data" not in secret and "stringData" not in secret, "the Secret in kuberay.yaml must hold no token"
    # A container's own RAY_AUTH_* would win over what KubeRay injects.
    cluster = kuberay["RayCluster"]
    containers = [c for pod in pods(cluster).values() for c in pod["containers"] + pod.get("initContainers", [])]
    for container in containers + [{"name": "autoscaler", **cluster["spec"]["autoscalerOptions"]}]:
        overrides = [e["name"] for e in container.get("env", []) if e["name"].startswith("RAY_AUTH")]
        assert not overrides, f"{container['name']} sets {overrides}"


def test_kuberay_dashboard_and_services_stay_private(kuberay_docs, kuberay):
    head = kuberay["RayCluster"]["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1", "the dashboard must bind 127.0.0.1"
    assert head["serviceType"] == "ClusterIP", "the head Service must be reachable inside Kubernetes only"
    manifest = json.dumps(kuberay_docs)
    assert '"LoadBalancer"' not in manifest and '"NodePort"' not in manifest, "kuberay.yaml exposes a Service"


def container_volumes(cluster: dict) -> list[tuple[str, dict, dict[str, dict]]]:
    """(group, container, {mount path: volume}) of every Ray container."""
    found = []
    for group, pod in pods(cluster).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            found.append((group, container, {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}))
    return found


def test_kuberay_pods_share_the_results_volume_and_keep_caches_per_pod(kuberay):
    claim = kuberay["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on different nodes share the claim"
    for group, _, mounts in container_volumes(kuberay["RayCluster"]):
        shared = mounts.get(KUBERAY_SHARED, {}).get("persistentVolumeClaim", {}).get("claimName")
        assert shared == claim["metadata"]["name"], f"{group}: the claim must be at {KUBERAY_SHARED}"
        assert "emptyDir" in mounts.get("/home/ray/.cache", {}), f"{group}: a per-pod cache at ~/.cache"


def test_kuberay_pods_request_the_disk_their_volumes_use(kuberay):
    """A pod that outgrows an emptyDir's sizeLimit is evicted; one that writes more than the node has, fails."""
    for group, container, mounts in container_volumes(kuberay["RayCluster"]):
        disks = [v["emptyDir"] for v in mounts.values() if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
        assert all("sizeLimit" in d for d in disks), f"{group}: an emptyDir without a sizeLimit"
        requested = quantity(container["resources"]["requests"]["ephemeral-storage"])
        assert requested >= sum(quantity(d["sizeLimit"]) for d in disks), f"{group}: ephemeral-storage request"
        if group != "head":
            cache = quantity(mounts["/home/ray/.cache"]["emptyDir"]["sizeLimit"])
            assert cache > PAPER_FEATURE_CACHE_GIB * 2**30, f"{group}: the feature cache outgrows ~/.cache"


def test_kuberay_ray_runs_as_the_owner_of_the_shared_volume(kuberay):
    cluster = kuberay["RayCluster"]
    for group, pod in pods(cluster).items():
        for container in pod["containers"]:
            context = container["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (RAY_UID, RAY_GID), f"{group}: {context}"
    # NFS-backed volumes ignore fsGroup: a root init container on the head hands the volume's root to Ray's user.
    owners = [c for c in pods(cluster)["head"]["initContainers"] if c["securityContext"]["runAsUser"] == 0
              and KUBERAY_SHARED in [m["mountPath"] for m in c["volumeMounts"]]]
    assert owners and f"chown {RAY_UID}:{RAY_GID}" in " ".join(owners[0]["command"]), "no init container chowns it"


# ------------------------------------------------------------------ the image (Dockerfile, .dockerignore)

def dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions: their arguments, by instruction name."""
    found = {}
    for line in (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith("#"):
            name, args = line.split(None, 1)
            found.setdefault(name, []).append(args)
    return found


def test_the_image_installs_the_locked_petseg_on_the_pinned_ray(kuberay):
    steps = dockerfile()
    base, = steps["FROM"]
    python = re.fullmatch(rf"rayproject/ray:{re.escape(ray_pin())}-py3(\d+)-gpu", base)
    assert python, f"FROM must be Ray {ray_pin()}'s GPU image, not {base}"
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert requires.contains(f"3.{python.group(1)}"), f"{base}'s Python is not one petseg supports ({requires})"
    copy_args, = steps["COPY"]
    *_, source, dest = shlex.split(copy_args)
    assert source == ".", "the image must COPY the repository (the build context)"
    run, = steps["RUN"]
    install = " ".join(shlex.split(run)) + " "
    assert f"-c {dest}/cluster/constraints.txt " in install and f"-e {dest} " in install, \
        f"RUN must pip install -c {dest}/cluster/constraints.txt -e {dest}, not: {run}"
    # kuberay.yaml runs this build: its containers carry the base image (a placeholder) or the petseg image.
    images = {c["image"] for pod in pods(kuberay["RayCluster"]).values()
              for c in pod["containers"] + pod.get("initContainers", [])}
    assert images == {base} or all("petseg" in image for image in images), f"kuberay.yaml runs {images}"


def test_dockerignore_keeps_local_files_out_and_the_build_inputs_in():
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    kept_out = {".git", ".venv", "results", "ray_results", "cache", "**/__pycache__", "**/*.egg-info"}
    assert kept_out <= patterns, f".dockerignore must list {sorted(kept_out - patterns)}"
    # `pip install -e` in the image needs these. fnmatch's `*` also crosses `/`: a stricter reading than Docker's.
    for path in ("pyproject.toml", "README.md", "petseg/__init__.py", "cluster/constraints.txt"):
        prefixes = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
        assert not [p for p in patterns for prefix in prefixes if fnmatch(prefix, p.removeprefix("**/"))], \
            f".dockerignore leaves {path} out of the build"


# ------------------------------------------------------------------------- constraints.txt

def constraint_pins() -> dict[str, Version]:
    """cluster/constraints.txt as {package: version}: a lock of exact pins."""
    pins = {}
    for line in (CLUSTER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            exact, = requirement.specifier
            assert exact.operator == "==", f"constraints.txt: {line} is not NAME==VERSION"
            assert canonicalize_name(requirement.name) not in pins, f"constraints.txt pins {requirement.name} twice"
            pins[canonicalize_name(requirement.name)] = Version(exact.version)
    return pins


def test_constraints_pin_every_dependency_at_an_allowed_version():
    """Walks petseg's requirements (extras included) through the installed packages' metadata, wherever the
    installed version is the pinned one: each package is pinned, at a version its dependents allow."""
    pins = constraint_pins()
    project = PYPROJECT["project"]
    todo = [(Requirement(r), "") for r in project["dependencies"]]
    todo += [(Requirement(r), extra) for extra, listed in project["optional-dependencies"].items() for r in listed]
    seen = set()
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name} (required as {requirement})"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version) == pins[name]:
            todo += [(Requirement(r), e) for r in installed.requires or [] for e in requirement.extras or [""]]
    assert len({name for name, _ in seen}) >= 50, "the walk must reach petseg's whole dependency tree"


# ------------------------------------------------------------------------- cluster/README.md's commands

def test_the_readme_token_command_makes_a_private_token_once(tmp_path):
    """Run where RAY_AUTH_TOKEN_PATH already names the file: 64 hex digits, mode 600, never overwritten, read by Ray."""
    command = next(b for b in readme_blocks() if "> ~/.ray/petseg_auth_token" in b)
    token = tmp_path / ".ray" / "petseg_auth_token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_AUTH_TOKEN_PATH=str(token))
    first = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    value = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", value), f"not a 256-bit hex token: {value!r}"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600, f"token file mode {oct(token.stat().st_mode)}, not 600"
    again = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and token.read_text() == value, "a second run must keep the token"
    ray = Path(sys.executable).with_name("ray")
    read = subprocess.run([str(ray), "get-auth-token"], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0 and read.stdout.strip() == value, f"Ray does not read the token: {read.stderr}"


def test_the_readme_commands_use_the_configs_names(aws, kuberay):
    commands = "\n".join(readme_blocks())
    group = aws["provider"]["security_group"]["GroupName"]
    expected = [
        f"REGION={aws['provider']['region']}",  # the EFS commands run in the cluster's region,
        f"--group-name {group}",  # create the group `ray up` then finds by name,
        "--port 2049 --source-group $SG",  # and admit it on EFS's mount targets
        f"Name=tag:ray-cluster-name,Values={aws['cluster_name']}",  # terminates this cluster's stopped instances
        "pip install -c cluster/constraints.txt -e '.[aws]'",  # `ray up` needs boto3
        f"kuberay-operator --version {KUBERAY_RELEASE}.",  # the operator the schema describes
        # the head is up before `kubectl port-forward` reaches it
        f"kubectl wait raycluster/{kuberay['RayCluster']['metadata']['name']} --for=condition=HeadPodReady",
        f"--gpus-per-trial {TRIAL['GPU']:g} --cpus-per-trial {TRIAL['CPU']:g}",
    ]
    missing = [e for e in expected if e not in commands]
    assert not missing, f"cluster/README.md's commands lack {missing}"
    # The Secret that authOptions names, with the key KubeRay reads, in the README and the manifest's header.
    for text in (commands, (CLUSTER / "kuberay.yaml").read_text()):
        created = set(re.findall(r"kubectl create secret generic (\S+) --from-file=(\w+)=", text))
        assert created == {(kuberay["Secret"]["metadata"]["name"], "auth_token")}, f"Secrets created: {created}"


def test_the_readme_commands_keep_the_study_on_the_shared_storage():
    """A --storage-path or --data-root off the shared mount works on the head only: trials on workers fail."""
    paths = re.findall(r"--(?:storage-path|data-root|results-dir|logdir)[ =](/\S+)", "\n".join(readme_blocks()))
    assert paths
    off = [p for p in paths if not p.startswith((f"{AWS_SHARED}/", f"{KUBERAY_SHARED}/"))]
    assert not off, f"paths off the shared storage: {off}"
