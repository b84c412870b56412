"""The cluster configurations in cluster/: valid for Ray's launcher and KubeRay, closed by token auth.

Each requirement is one check function, run on the real files; the mutation tests remove each
requirement from a copy and check that its check then fails.
"""
import copy
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster" / "aws-gpu.yaml"
KUBERAY = REPO / "cluster" / "kuberay.yaml"
README = REPO / "cluster" / "README.md"
CONSTRAINTS = REPO / "cluster" / "constraints.txt"
DOCKERFILE = REPO / "cluster" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"
# The RayCluster (ray.io/v1) schema written for these tests: the fields kuberay.yaml uses, closed to others.
RAYCLUSTER_SCHEMA = REPO / "tests" / "schemas" / "raycluster-v1.json"

# AWS's recommended NFS mount options for EFS, and what makes an /etc/fstab entry wait for the network.
EFS_NFS_OPTIONS = {"nfsvers=4.1", "rsize=1048576", "wsize=1048576", "hard", "timeo=600", "retrans=2", "noresvport"}
# The per-node feature cache at paper scale (fp16, four backbones). petseg checks the free space of the
# file system before building it, and an emptyDir's sizeLimit is not visible there: a smaller limit
# gets the pod evicted instead of making petseg run the backbone live.
PAPER_FEATURE_CACHE_GIB = 129
# KubeRay reads the token from this key of the Secret named in spec.authOptions.secretName.
KUBERAY_TOKEN_KEY = "auth_token"
# KubeRay refuses authOptions.mode: token for older Ray (ray-operator/controllers/ray/utils/validation.go).
KUBERAY_TOKEN_MIN_RAY = Version("2.52.0")


def ray_package_dir() -> Path:
    """The installed Ray package folder, found without importing (and starting) Ray."""
    return Path(importlib.util.find_spec("ray").submodule_search_locations[0])


def ray_version() -> str:
    """Ray's version as pinned in pyproject.toml (ray[...]==X.Y.Z)."""
    pinned = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', PYPROJECT.read_text())
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


@pytest.fixture
def readme():
    return README.read_text()


@pytest.fixture
def pyproject():
    return tomllib.loads(PYPROJECT.read_text())


def header_comment(text: str) -> str:
    """The comment lines a YAML file or Dockerfile opens with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return "\n".join(lines)


def readme_sections(text: str) -> dict[str, str]:
    """The `## ` sections of a Markdown page, by title."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def section(text: str, start: str) -> str:
    found = [body for title, body in readme_sections(text).items() if title.startswith(start)]
    assert len(found) == 1, f"cluster/README.md needs one section '## {start}...'"
    return found[0]


# ------------------------------------------------------------------------- the token (README)

def readme_token_command(text: str) -> str:
    """The command of cluster/README.md that creates the cluster's token file."""
    block = re.search(r"```bash\n(.*?)```", section(text, "The token"), re.DOTALL)
    assert block and "petseg_auth_token" in block.group(1), "the token section must open with the command"
    return block.group(1)


def check_token_recipe(command: str, home: Path) -> None:
    """Run as the README says, in a shell that already exported RAY_AUTH_TOKEN_PATH (the workstation step):
    a 64-hex-digit token readable by its owner only, never overwritten, and what Ray reads."""
    token = home / ".ray" / "petseg_auth_token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RAY_AUTH_TOKEN_PATH=str(token))
    first = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, f"the token command failed: {first.stderr[-500:]}"
    value = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", value), f"not a 256-bit hex token: {value!r}"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600, f"token file mode {oct(token.stat().st_mode)}, not 600"
    again = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and token.read_text() == value, "a second run must refuse, keeping the token"
    ray = Path(sys.executable).with_name("ray")
    read = subprocess.run([str(ray), "get-auth-token"], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0 and read.stdout.strip() == value, f"Ray does not read the token: {read.stderr[-500:]}"


def test_the_readme_token_command_makes_a_private_token_once(readme, tmp_path):
    check_token_recipe(readme_token_command(readme), tmp_path)


@pytest.mark.parametrize("command", [
    # The earlier recipe: the redirection empties the file RAY_AUTH_TOKEN_PATH names before Ray reads it.
    "mkdir -p ~/.ray && tmp=$(mktemp -d) && (export HOME=$tmp; ray get-auth-token --generate) "
    "> ~/.ray/petseg_auth_token && rm -rf \"$tmp\" && chmod 600 ~/.ray/petseg_auth_token",
    # No umask, no noclobber: readable by others, overwritten by a second run.
    "mkdir -p ~/.ray && python3 -c 'import secrets; print(secrets.token_hex(32), end=\"\")' > ~/.ray/petseg_auth_token",
], ids=["ray get-auth-token redirected", "plain redirection"])
def test_token_check_fails_for_unsafe_recipes(tmp_path, command):
    env_path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    with pytest.raises(AssertionError):
        check_token_recipe(f"export PATH={shlex.quote(env_path)}; umask 022; {command}", tmp_path)


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


def pip_installs(command: str) -> list[dict]:
    """Each `pip install` of a shell command line: {"constraints": [...], "editable": [...], "args": [...]}."""
    installs = []
    for part in re.split(r"&&|\|\||;", command):
        words = shlex.split(part)
        for i, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[i + 1] == "install":
                found = {"constraints": [], "editable": [], "args": []}
                rest = iter(words[i + 2:])
                for arg in rest:
                    if arg in ("-c", "--constraint"):
                        found["constraints"].append(next(rest))
                    elif arg in ("-e", "--editable"):
                        found["editable"].append(next(rest).replace("$HOME", "~", 1))
                    else:
                        found["args"].append(arg)
                installs.append(found)
    return installs


def repo_on_node(config: dict) -> str:
    repo = [remote for remote, local in config.get("file_mounts", {}).items() if local in (".", "./")]
    assert len(repo) == 1, "file_mounts must ship the repository ('.')"
    return repo[0]


def check_setup_installs_petseg(config: dict) -> None:
    """petseg on every node, its aws extra (boto3, for the autoscaler) on the head, all with the constraints."""
    repo = repo_on_node(config)
    constraints = f"{repo}/{CONSTRAINTS.relative_to(REPO)}"
    every = {key: [i for c in config.get(key) or [] for i in pip_installs(c)]
             for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")}
    for key, installs in every.items():
        for install in installs:
            if install["args"] in (["-U", "pip"], ["--upgrade", "pip"]) and not install["editable"]:
                continue  # pip itself
            assert install["constraints"] == [constraints], \
                f"{key}: every pip install needs -c {constraints} (the same versions on every node): {install}"
    assert any(install["editable"] == [repo] for install in every["setup_commands"]), \
        f"setup_commands must `pip install -c {constraints} -e {repo}` on every node"
    assert any(re.fullmatch(re.escape(repo) + r"\[([\w,-]*\b)?aws\b[\w,-]*\]", target)
               for install in every["head_setup_commands"] for target in install["editable"]), \
        f"head_setup_commands must install petseg's aws extra (-e {repo}[aws]): the autoscaler needs boto3"
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


def fstab_entries(config: dict) -> list[tuple[str, str, str, set[str]]]:
    """(device, mount point, type, options) of each line that setup_commands (run on every node) add to /etc/fstab."""
    entries = []
    for command in config.get("setup_commands", []):
        for line in re.findall(r"echo '([^']*)'\s*\|\s*sudo tee -a /etc/fstab", command):
            device, point, kind, options, *_ = line.split()
            entries.append((device, point, kind, set(options.split(","))))
    return entries


def aws_shared_mount(config: dict) -> str:
    """The shared file system's mount point on every AWS node."""
    nfs = [point for _, point, kind, _ in fstab_entries(config) if kind.startswith("nfs")]
    assert len(nfs) == 1, "setup_commands must add one NFS entry to /etc/fstab (the shared storage)"
    return nfs[0]


def check_shared_mount_survives_a_restart(config: dict) -> None:
    """A restarted stopped node (cache_stopped_nodes) skips setup_commands: the mount must come back without them."""
    entries = [e for e in fstab_entries(config) if e[2].startswith("nfs")]
    assert len(entries) == 1, "setup_commands (every node) must add the shared NFS file system to /etc/fstab"
    device, point, kind, options = entries[0]
    assert kind == "nfs4" and device.endswith(".amazonaws.com:/"), f"an EFS export over NFSv4: {device} {kind}"
    missing = EFS_NFS_OPTIONS - options
    assert not missing, f"AWS's NFS options for EFS are missing from the fstab entry: {sorted(missing)}"
    assert "_netdev" in options, "the fstab entry needs _netdev (mount once the network is up)"
    assert any(re.search(rf"(mountpoint -q {re.escape(point)} \|\| )?sudo mount {re.escape(point)}\b", c)
               for c in config["setup_commands"]), f"setup_commands must mount {point} from fstab"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = config[key]
        start = next(i for i, c in enumerate(commands) if "ray start" in c)
        assert any(re.search(rf"mountpoint -q {re.escape(point)} \|\| sudo mount {re.escape(point)}\b", c)
                   for c in commands[:start]), \
            f"{key}: run on every start, they must mount {point} (or fail) before `ray start`"


def check_efs_access_documented(config: dict, text: str) -> None:
    """The first `ray up` mounts EFS: the README creates the cluster's group and admits it on tcp 2049 beforehand."""
    group = config["provider"]["security_group"]["GroupName"]
    aws_section = section(text, "AWS")
    region = re.search(r"^REGION=(\S+)$", aws_section, re.MULTILINE)
    assert region and region.group(1) == config["provider"]["region"], \
        f"the README's REGION= must be the config's region {config['provider']['region']}"
    create = re.search(r"aws ec2 create-security-group (?:[^\n]*\\\n)*[^\n]*", aws_section)
    assert create and f"--group-name {group}" in create.group(0) and "--vpc-id" in create.group(0), \
        f"the README must create the cluster's security group {group} (in the file system's VPC) before `ray up`"
    assert re.search(r"aws ec2 authorize-security-group-ingress [^\n]*\\\n\s*--protocol tcp --port 2049 --source-group \$SG",
                     aws_section), "the README must admit tcp 2049 from the cluster's group on the EFS mount targets"
    assert aws_section.index("create-security-group") < aws_section.index("ray up cluster/aws-gpu.yaml"), \
        "the group must be created before the first `ray up`"


def check_teardown_documented(config: dict, text: str, header: str) -> None:
    """`ray down` stops (cache_stopped_nodes, Ray's default on AWS): say so, and how to terminate."""
    if not config["provider"].get("cache_stopped_nodes", True):
        return
    assert re.search(r"ray down.*\bSTOP", header, re.IGNORECASE | re.DOTALL) and "EBS" in header, \
        "the config's header must say that `ray down` stops the instances and EBS keeps billing"
    aws_section = section(text, "AWS")
    assert not re.search(r"`ray down[^`]*` terminates", text), "`ray down` does not terminate (cache_stopped_nodes)"
    assert re.search(r"`ray down[^`]*` \*?stops", aws_section), "the README must say that `ray down` stops instances"
    terminate = re.search(r"aws ec2 terminate-instances (?:[^\n]*\\\n)*[^\n]*", aws_section)
    assert terminate, "the README must give the command that terminates the stopped instances"
    command = terminate.group(0)
    assert f"Name=tag:ray-cluster-name,Values={config['cluster_name']}" in command, \
        f"the terminate command must select the instances of cluster {config['cluster_name']}"
    assert "stopped" in command and command.count(f"--region {config['provider']['region']}") == 2, command
    for name, node_type in config["available_node_types"].items():
        for device in node_type["node_config"].get("BlockDeviceMappings", []):
            assert device.get("Ebs", {}).get("DeleteOnTermination") is True, \
                f"{name}: DeleteOnTermination: true, or terminated instances leave billed volumes behind"


def check_aws_extra(pyproject: dict, text: str) -> None:
    """`ray up` on AWS needs boto3: petseg's aws extra brings it, and the README installs it."""
    extra = pyproject["project"].get("optional-dependencies", {}).get("aws", [])
    assert any(canonicalize_name(Requirement(r).name) == "boto3" for r in extra), "pyproject.toml: aws = ['boto3']"
    assert f"pip install -c {CONSTRAINTS.relative_to(REPO)} -e '.[aws]'" in section(text, "AWS"), \
        "the README must install petseg[aws] (with the constraints) on the workstation"


AWS_CHECKS = [check_token_mounted, check_token_auth_in_start_commands, check_dashboard_on_localhost,
              check_gpu_workers_and_cpu_head, check_setup_installs_petseg, check_no_public_ray_ports,
              check_shared_mount_survives_a_restart]


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


def test_aws_docs_cover_efs_access_teardown_and_boto3(aws, readme, pyproject):
    check_efs_access_documented(aws, readme)
    check_teardown_documented(aws, readme, header_comment(AWS.read_text()))
    check_aws_extra(pyproject, readme)


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
    c["setup_commands"] = [cmd for cmd in c["setup_commands"] if "pip install -c" not in cmd]


def _unconstrained_install(key):
    def mutate(c):
        c[key] = [re.sub(r"-c \S+constraints\.txt ", "", cmd) for cmd in c[key]]
    return mutate


def _no_aws_extra_on_head(c):
    c["head_setup_commands"] = [cmd.replace("[aws]", "") for cmd in c["head_setup_commands"]]


def _open_ray_ports(c):
    c["provider"].setdefault("security_group", {})["IpPermissions"] = [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def _mount_by_hand(c):
    """The mount as it was: done once in setup_commands, gone after a stop and restart."""
    c["setup_commands"][0] = re.sub(r"sudo sed -i .*sudo systemctl daemon-reload &&",
                                    "(mountpoint -q /mnt/shared || sudo mount -t nfs4 -o nfsvers=4.1 "
                                    "fs-X.efs.us-west-2.amazonaws.com:/ /mnt/shared) &&", c["setup_commands"][0])


def _fstab_option(option, replacement=""):
    def mutate(c):
        c["setup_commands"] = [cmd.replace(f",{option}", replacement) for cmd in c["setup_commands"]]
    return mutate


def _no_mount_on_start(key):
    def mutate(c):
        c[key] = [cmd for cmd in c[key] if "mount" not in cmd]
    return mutate


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
    "nodes install without the constraints": (_unconstrained_install("setup_commands"), check_setup_installs_petseg),
    "head installs boto3 without the constraints": (_unconstrained_install("head_setup_commands"),
                                                    check_setup_installs_petseg),
    "no boto3 on the head": (_no_aws_extra_on_head, check_setup_installs_petseg),
    "dashboard port open to the internet": (_open_ray_ports, check_no_public_ray_ports),
    "EFS mounted by hand in setup only": (_mount_by_hand, check_shared_mount_survives_a_restart),
    "fstab entry without _netdev": (_fstab_option("_netdev"), check_shared_mount_survives_a_restart),
    "fstab entry without noresvport": (_fstab_option("noresvport"), check_shared_mount_survives_a_restart),
    "fstab entry with small rsize": (_fstab_option("rsize=1048576", ",rsize=65536"), check_shared_mount_survives_a_restart),
    "head starts Ray without the mount": (_no_mount_on_start("head_start_ray_commands"),
                                          check_shared_mount_survives_a_restart),
    "workers start Ray without the mount": (_no_mount_on_start("worker_start_ray_commands"),
                                            check_shared_mount_survives_a_restart),
}


@pytest.mark.parametrize("name", AWS_MUTATIONS)
def test_aws_checks_fail_when_a_requirement_is_removed(aws, name):
    mutate, check = AWS_MUTATIONS[name]
    mutate(aws)
    with pytest.raises(AssertionError):
        check(aws)


def _rename_group(c, text, header):
    c["provider"]["security_group"]["GroupName"] = "another-group"
    return c, text, header


def _other_region(c, text, header):
    c["provider"]["region"] = "eu-west-1"
    return c, text, header


def _no_2049_rule(c, text, header):
    return c, re.sub(r"--port 2049", "--port 22", text), header


def _group_created_after_ray_up(c, text, header):
    aws_section = section(text, "AWS")
    moved = aws_section.replace("\n\n", "\n\n```bash\nray up cluster/aws-gpu.yaml\n```\n\n", 1)
    return c, text.replace(aws_section, moved), header


def _rename_cluster(c, text, header):
    c["cluster_name"] = "another-cluster"
    return c, text, header


def _claims_down_terminates(c, text, header):
    return c, text + "\n`ray down cluster/aws-gpu.yaml` terminates the cluster.\n", header


def _no_terminate_command(c, text, header):
    return c, text.replace("aws ec2 terminate-instances", "aws ec2 stop-instances"), header


def _header_silent_on_down(c, text, header):
    return c, text, re.sub(r"STOPS?|EBS", "", header)


def _volumes_outlive_instances(c, text, header):
    for node_type in c["available_node_types"].values():
        for device in node_type["node_config"]["BlockDeviceMappings"]:
            device["Ebs"]["DeleteOnTermination"] = False
    return c, text, header


DOC_MUTATIONS = {
    "cluster's group renamed in the config only": (_rename_group, check_efs_access_documented),
    "README's commands in another region": (_other_region, check_efs_access_documented),
    "no NFS rule": (_no_2049_rule, check_efs_access_documented),
    "group created after the first ray up": (_group_created_after_ray_up, check_efs_access_documented),
    "terminate command selects another cluster": (_rename_cluster, check_teardown_documented),
    "README says ray down terminates": (_claims_down_terminates, check_teardown_documented),
    "no terminate command": (_no_terminate_command, check_teardown_documented),
    "config header silent on ray down": (_header_silent_on_down, check_teardown_documented),
    "EBS volumes outlive their instances": (_volumes_outlive_instances, check_teardown_documented),
}


@pytest.mark.parametrize("name", DOC_MUTATIONS)
def test_aws_doc_checks_fail_when_a_requirement_is_removed(aws, readme, name):
    mutate, check = DOC_MUTATIONS[name]
    config, text, header = mutate(aws, readme, header_comment(AWS.read_text()))
    with pytest.raises(AssertionError):
        if check is check_teardown_documented:
            check(config, text, header)
        else:
            check(config, text)


@pytest.mark.parametrize("mutate", ["no extra", "README without it"])
def test_aws_extra_check_fails_without_boto3(pyproject, readme, mutate):
    if mutate == "no extra":
        pyproject["project"]["optional-dependencies"].pop("aws")
    else:
        readme = readme.replace("-e '.[aws]'", "-e .")
    with pytest.raises(AssertionError):
        check_aws_extra(pyproject, readme)


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
        for container in pod["containers"] + pod.get("initContainers", []):
            image, _, tag = container["image"].rpartition(":")
            assert image and tag.startswith(ray_version()) or "petseg" in image, \
                f"image {container['image']} must be Ray {ray_version()} (or a petseg image built FROM it)"


def documented_secret_commands(text: str) -> list[tuple[str, str]]:
    return re.findall(r"kubectl create secret generic (\S+) --from-file=(\w+)=", text)


def check_token_from_secret(docs: list, text: str) -> None:
    """KubeRay's token auth (authOptions) with the Secret the docs create, and nothing that overrides it."""
    secret = by_kind(docs, "Secret")
    name = secret["metadata"]["name"]
    assert not secret.get("data") and not secret.get("stringData"), \
        "the Secret template must not carry a token (kubectl apply would overwrite the created one)"
    commands = documented_secret_commands(text)
    assert commands and all(n == name for n, _ in commands), f"document `kubectl create secret generic {name} ...`"
    assert {key for _, key in commands} == {KUBERAY_TOKEN_KEY}, \
        f"KubeRay reads the key {KUBERAY_TOKEN_KEY}: --from-file={KUBERAY_TOKEN_KEY}=..."
    spec = by_kind(docs, "RayCluster")["spec"]
    auth = spec.get("authOptions") or {}
    assert auth.get("mode") == "token", "spec.authOptions.mode: token"
    assert auth.get("secretName") == name, f"spec.authOptions.secretName: {name} (the Secret you create)"
    assert Version(spec["rayVersion"]) >= KUBERAY_TOKEN_MIN_RAY, "KubeRay's token mode needs Ray 2.52.0 or newer"
    # A container's own RAY_AUTH_* wins over what KubeRay injects.
    containers = [c for pod in pod_templates(by_kind(docs, "RayCluster")).values()
                  for c in pod["containers"] + pod.get("initContainers", [])]
    containers.append({"name": "autoscaler", **spec.get("autoscalerOptions", {})})
    for container in containers:
        env = env_of(container)
        assert env.get("RAY_AUTH_MODE", {"value": "token"}).get("value") == "token", \
            f"{container['name']}: RAY_AUTH_MODE overrides token mode"
        token = env.get("RAY_AUTH_TOKEN")
        assert token is None or token.get("valueFrom", {}).get("secretKeyRef") == {"name": name, "key": KUBERAY_TOKEN_KEY}, \
            f"{container['name']}: RAY_AUTH_TOKEN must not be inline or from another Secret"


def shared_claim_mounts(docs: list) -> dict[str, set[str]]:
    """Where each Ray container (by group/name) mounts the shared volume claim."""
    claim = by_kind(docs, "PersistentVolumeClaim")["metadata"]["name"]
    mounts = {}
    for group, pod in pod_templates(by_kind(docs, "RayCluster")).items():
        volumes = {v["name"] for v in pod.get("volumes", [])
                   if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
        for container in pod["containers"]:
            mounts[f"{group}/{container['name']}"] = {m["mountPath"] for m in container.get("volumeMounts", [])
                                                       if m["name"] in volumes}
    return mounts


def kuberay_shared_mount(docs: list) -> str:
    """The shared volume's path, the same in every Ray container."""
    paths = set().union(*shared_claim_mounts(docs).values())
    assert all(len(p) == 1 for p in shared_claim_mounts(docs).values()) and len(paths) == 1, \
        f"every Ray container must mount the shared claim once, at one path: {shared_claim_mounts(docs)}"
    return paths.pop()


def check_volumes(docs: list) -> None:
    claim = by_kind(docs, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "shared results need a ReadWriteMany claim"
    assert kuberay_shared_mount(docs) == "/mnt/results"
    for group, pod in pod_templates(by_kind(docs, "RayCluster")).items():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            caches = [volumes.get(name, {}) for path, name in mounts.items() if path.endswith("/.cache")]
            assert any("emptyDir" in v or "persistentVolumeClaim" in v for v in caches), \
                f"{group}: a per-node cache volume at ~/.cache"


def quantity(value) -> float:
    """A Kubernetes quantity in bytes (or plain units)."""
    number, suffix = re.fullmatch(r"([0-9.]+)([KMGTPE]i?|k|m)?", str(value)).groups()
    scale = {None: 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}[suffix]
    return float(number) * scale


def check_ephemeral_storage(docs: list) -> None:
    """Disk-backed emptyDirs have a sizeLimit; the pod requests that much ephemeral storage; the GPU cache fits."""
    for group, pod in pod_templates(by_kind(docs, "RayCluster")).items():
        disk = {v["name"]: v["emptyDir"] for v in pod.get("volumes", [])
                if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"}
        for name, empty_dir in disk.items():
            assert (empty_dir or {}).get("sizeLimit"), f"{group}: emptyDir {name} needs a sizeLimit"
        needed = sum(quantity(d["sizeLimit"]) for d in disk.values())
        requested = sum(quantity(c.get("resources", {}).get("requests", {}).get("ephemeral-storage", 0))
                        for c in pod["containers"])
        assert requested >= needed, \
            f"{group}: requests {requested / 2**30:.0f} GiB of ephemeral-storage for {needed / 2**30:.0f} GiB of emptyDir"
        if group != "head":
            cache = [disk[m["name"]] for c in pod["containers"] for m in c.get("volumeMounts", [])
                     if m["mountPath"].endswith("/.cache") and m["name"] in disk]
            assert cache and all(quantity(d["sizeLimit"]) > PAPER_FEATURE_CACHE_GIB * 2**30 for d in cache), \
                f"{group}: the cache's sizeLimit must exceed the ~{PAPER_FEATURE_CACHE_GIB} GiB feature cache"


def check_shared_volume_ownership(docs: list) -> None:
    """Ray writes the shared volume as one uid; a root init container gives the volume's root to it."""
    cluster = by_kind(docs, "RayCluster")
    users = {(c.get("securityContext") or {}).get("runAsUser") for pod in pod_templates(cluster).values()
             for c in pod["containers"]}
    groups = {(c.get("securityContext") or {}).get("runAsGroup") for pod in pod_templates(cluster).values()
              for c in pod["containers"]}
    assert len(users) == 1 and len(groups) == 1 and None not in users | groups, \
        f"every Ray container runs as one uid and gid (runAsUser/runAsGroup): {users}, {groups}"
    uid, gid = users.pop(), groups.pop()
    assert uid == 1000, "the rayproject images' user `ray` is uid 1000"
    mount = kuberay_shared_mount(docs)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    claim_volumes = {v["name"] for v in head.get("volumes", []) if "persistentVolumeClaim" in v}
    owners = [c for c in head.get("initContainers", [])
              if (c.get("securityContext") or {}).get("runAsUser") == 0
              and any(m["mountPath"] == mount and m["name"] in claim_volumes for m in c.get("volumeMounts", []))]
    assert owners, f"the head needs a root init container that mounts the shared volume at {mount}"
    script = " ".join(owners[0].get("command", []) + owners[0].get("args", []))
    assert re.search(rf"\bchown {uid}:{gid}\b", script) and (mount in script), \
        f"the init container must chown {mount} to {uid}:{gid}"


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


KUBERAY_CHECKS = [check_kinds, check_head_and_gpu_worker_group, check_volumes, check_cluster_ip_only,
                  check_ephemeral_storage, check_shared_volume_ownership]


@pytest.mark.parametrize("check", KUBERAY_CHECKS, ids=lambda c: c.__name__)
def test_kuberay_manifest_meets_petsegs_requirements(kuberay, check):
    check(kuberay)


def test_kuberay_token_comes_from_the_documented_secret(kuberay):
    check_token_from_secret(kuberay, KUBERAY.read_text())
    check_token_from_secret(kuberay, README.read_text())
    # The README creates the same Secret.
    assert set(documented_secret_commands(README.read_text())) == set(documented_secret_commands(KUBERAY.read_text()))


def _head(docs):
    return by_kind(docs, "RayCluster")["spec"]["headGroupSpec"]


def _worker(docs):
    return by_kind(docs, "RayCluster")["spec"]["workerGroupSpecs"][0]


def _set_env(name, entry, where):
    def mutate(docs):
        container = where(docs)
        container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, **entry}]
    return mutate


def _auth(**change):
    def mutate(docs):
        auth = by_kind(docs, "RayCluster")["spec"]["authOptions"]
        for key, value in change.items():
            if value is None:
                auth.pop(key)
            else:
                auth[key] = value
    return mutate


def _no_auth_options(docs):
    by_kind(docs, "RayCluster")["spec"].pop("authOptions")


def _rename_secret(docs):
    by_kind(docs, "Secret")["metadata"]["name"] = "another-secret"


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


def _results_mounted_elsewhere(docs):
    container = _worker(docs)["template"]["spec"]["containers"][0]
    for m in container["volumeMounts"]:
        if m["name"] == "results":
            m["mountPath"] = "/mnt/shared-results"


def _no_cache_volume(docs):
    pod = _head(docs)["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "cache"]


def _no_worker_group(docs):
    by_kind(docs, "RayCluster")["spec"]["workerGroupSpecs"] = []


def _old_api(docs):
    by_kind(docs, "RayCluster")["apiVersion"] = "ray.io/v1alpha1"


def _volume(pod, name):
    return next(v for v in pod["volumes"] if v["name"] == name)


def _no_size_limit(docs):
    _volume(_worker(docs)["template"]["spec"], "ray-logs")["emptyDir"].pop("sizeLimit")


def _small_request(docs):
    _worker(docs)["template"]["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] = "20Gi"


def _small_cache(docs):
    _volume(_worker(docs)["template"]["spec"], "cache")["emptyDir"]["sizeLimit"] = "50Gi"


def _no_owner_init(docs):
    _head(docs)["template"]["spec"].pop("initContainers")


def _owner_init_not_root(docs):
    _head(docs)["template"]["spec"]["initContainers"][0]["securityContext"]["runAsUser"] = 1000


def _worker_other_uid(docs):
    _worker(docs)["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1001


def _chown_other_uid(docs):
    init = _head(docs)["template"]["spec"]["initContainers"][0]
    init["command"] = [part.replace("chown 1000:100", "chown 0:0") for part in init["command"]]


KUBERAY_MUTATIONS = {
    "no authOptions": (_no_auth_options, check_token_from_secret),
    "auth mode disabled": (_auth(mode="disabled"), check_token_from_secret),
    "KubeRay generates its own token": (_auth(secretName=None), check_token_from_secret),
    "authOptions names another Secret": (_auth(secretName="another-secret"), check_token_from_secret),
    "Secret name differs": (_rename_secret, check_token_from_secret),
    "token written into the Secret": (_inline_token, check_token_from_secret),
    "worker overrides RAY_AUTH_MODE": (_set_env("RAY_AUTH_MODE", {"value": "disabled"},
                                                lambda d: _worker(d)["template"]["spec"]["containers"][0]),
                                       check_token_from_secret),
    "head has an inline token": (_set_env("RAY_AUTH_TOKEN", {"value": "0123abcd"},
                                          lambda d: _head(d)["template"]["spec"]["containers"][0]),
                                 check_token_from_secret),
    "autoscaler token from another Secret": (
        _set_env("RAY_AUTH_TOKEN", {"valueFrom": {"secretKeyRef": {"name": "other", "key": "auth_token"}}},
                 lambda d: by_kind(d, "RayCluster")["spec"]["autoscalerOptions"]), check_token_from_secret),
    "no nvidia.com/gpu limit": (_no_gpu_limit, check_head_and_gpu_worker_group),
    "dashboard on 0.0.0.0": (_public_dashboard_k8s, check_head_and_gpu_worker_group),
    "no worker group": (_no_worker_group, check_head_and_gpu_worker_group),
    "head Service LoadBalancer": (_load_balancer, check_cluster_ip_only),
    "extra LoadBalancer Service": (_extra_lb_service, check_cluster_ip_only),
    "results not mounted": (_no_results_mount, check_volumes),
    "results mounted elsewhere on workers": (_results_mounted_elsewhere, check_volumes),
    "no cache volume": (_no_cache_volume, check_volumes),
    "old API version": (_old_api, check_kinds),
    "emptyDir without sizeLimit": (_no_size_limit, check_ephemeral_storage),
    "ephemeral-storage request below the emptyDirs": (_small_request, check_ephemeral_storage),
    "GPU cache smaller than the feature cache": (_small_cache, check_ephemeral_storage),
    "no init container for the volume's owner": (_no_owner_init, check_shared_volume_ownership),
    "owner init container not root": (_owner_init_not_root, check_shared_volume_ownership),
    "workers run as another uid": (_worker_other_uid, check_shared_volume_ownership),
    "init container chowns to another uid": (_chown_other_uid, check_shared_volume_ownership),
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


@pytest.mark.parametrize("text", [
    KUBERAY.read_text().replace("--from-file=auth_token=", "--from-file=token="),
    README.read_text().replace("generic petseg-ray-token", "generic another-secret"),
], ids=["key KubeRay does not read", "README creates another Secret"])
def test_kuberay_token_check_fails_on_documented_secret_mismatch(kuberay, text):
    with pytest.raises(AssertionError):
        check_token_from_secret(kuberay, text)


# ------------------------------------------------------------ petseg's RayCluster schema (tests/schemas/)

@pytest.fixture(scope="module")
def raycluster_schema():
    return json.loads(RAYCLUSTER_SCHEMA.read_text())


def schema_validator(schema: dict, definition: str | None = None) -> jsonschema.Draft7Validator:
    """A validator for the RayCluster, or for one of the schema's definitions (e.g. 'secret')."""
    if definition:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def raycluster_validator(raycluster_schema):
    return schema_validator(raycluster_schema)


def schema_errors(validator, document) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]


def test_the_raycluster_schema_is_petsegs_own_and_closed(raycluster_schema):
    """A valid draft-07 schema, written for petseg (its $comment says so), in which every object it
    describes refuses fields it does not list, as `kubectl apply` does."""
    jsonschema.Draft7Validator.check_schema(raycluster_schema)
    comment = " ".join(raycluster_schema["$comment"].split())
    assert "written for petseg's tests" in comment.lower() and "not KubeRay's own CRD" in comment, comment
    open_objects = [node.get("title") or sorted(node["properties"]) for node in walk(raycluster_schema)
                    if isinstance(node.get("properties"), dict) and node.get("additionalProperties") is not False
                    and all(isinstance(v, dict) for v in node["properties"].values())]
    assert not open_objects, f"objects without additionalProperties: false: {open_objects}"


def test_kuberay_manifest_is_valid_for_the_raycluster_schema(kuberay, raycluster_schema, raycluster_validator):
    errors = schema_errors(raycluster_validator, by_kind(kuberay, "RayCluster"))
    assert not errors, "\n".join(errors)
    # The claim and the Secret: core v1 types, with the schema's own definitions of them.
    for kind, definition in (("Secret", "secret"), ("PersistentVolumeClaim", "persistentVolumeClaim")):
        errors = schema_errors(schema_validator(raycluster_schema, definition), by_kind(kuberay, kind))
        assert not errors, f"{kind}:\n" + "\n".join(errors)
    assert [d["kind"] for d in kuberay if d] == ["RayCluster", "Secret", "PersistentVolumeClaim"], \
        "every document of kuberay.yaml is validated: a new kind needs a schema here"


def _rename(path, new):
    """Rename the last key of `path` in a document: a typo of a real field."""
    def mutate(document):
        node = document
        for key in path[:-1]:
            node = node[key]
        node[new] = node.pop(path[-1])
    return mutate


HEAD_POD = ["spec", "headGroupSpec", "template", "spec"]
WORKER_POD = ["spec", "workerGroupSpecs", 0, "template", "spec"]
# name: (path of the real field in the RayCluster, its misspelling)
TYPOS = {
    "metadata": (["metadata"], "metdata"),
    "metadata.labels": (["metadata", "labels"], "label"),
    "spec.rayVersion": (["spec", "rayVersion"], "rayversion"),
    "spec.enableInTreeAutoscaling": (["spec", "enableInTreeAutoscaling"], "enableInTreeAutoScaling"),
    "spec.authOptions.mode": (["spec", "authOptions", "mode"], "authMode"),
    "spec.authOptions.secretName": (["spec", "authOptions", "secretName"], "secretname"),
    "spec.autoscalerOptions.idleTimeoutSeconds": (["spec", "autoscalerOptions", "idleTimeoutSeconds"],
                                                  "idleTimeoutSecond"),
    "spec.workerGroupSpecs": (["spec", "workerGroupSpecs"], "workerGroupSpec"),
    "headGroupSpec.serviceType": (["spec", "headGroupSpec", "serviceType"], "servicetype"),
    "headGroupSpec.rayStartParams": (["spec", "headGroupSpec", "rayStartParams"], "rayStartParam"),
    "headGroupSpec.template.spec": (["spec", "headGroupSpec", "template", "spec"], "podSpec"),
    "workerGroupSpecs[0].groupName": (["spec", "workerGroupSpecs", 0, "groupName"], "name"),
    "workerGroupSpecs[0].replicas": (["spec", "workerGroupSpecs", 0, "replicas"], "replica"),
    "workerGroupSpecs[0].minReplicas": (["spec", "workerGroupSpecs", 0, "minReplicas"], "minReplica"),
    "workerGroupSpecs[0].maxReplicas": (["spec", "workerGroupSpecs", 0, "maxReplicas"], "maxreplicas"),
    "head pod initContainers": (HEAD_POD + ["initContainers"], "initContainer"),
    "head pod volumes": (HEAD_POD + ["volumes"], "volume"),
    "initContainers[0].securityContext.runAsUser": (HEAD_POD + ["initContainers", 0, "securityContext", "runAsUser"],
                                                    "runAsUid"),
    "initContainers[0].command": (HEAD_POD + ["initContainers", 0, "command"], "commands"),
    "head containers[0].ports[0].containerPort": (HEAD_POD + ["containers", 0, "ports", 0, "containerPort"], "port"),
    "head containers[0].securityContext.runAsGroup": (HEAD_POD + ["containers", 0, "securityContext", "runAsGroup"],
                                                      "runAsGid"),
    "head volumes[results].persistentVolumeClaim.claimName": (
        HEAD_POD + ["volumes", 0, "persistentVolumeClaim", "claimName"], "claimname"),
    "worker pod tolerations": (WORKER_POD + ["tolerations"], "toleration"),
    "tolerations[0].operator": (WORKER_POD + ["tolerations", 0, "operator"], "op"),
    "containers[0].image": (WORKER_POD + ["containers", 0, "image"], "images"),
    "containers[0].volumeMounts": (WORKER_POD + ["containers", 0, "volumeMounts"], "volumeMount"),
    "containers[0].volumeMounts[0].mountPath": (WORKER_POD + ["containers", 0, "volumeMounts", 0, "mountPath"],
                                                "mountpath"),
    "containers[0].resources.requests": (WORKER_POD + ["containers", 0, "resources", "requests"], "request"),
    "containers[0].resources.limits": (WORKER_POD + ["containers", 0, "resources", "limits"], "limit"),
    "volumes[cache].emptyDir.sizeLimit": (WORKER_POD + ["volumes", 1, "emptyDir", "sizeLimit"], "sizelimit"),
    "volumes[dshm].emptyDir.medium": (WORKER_POD + ["volumes", 3, "emptyDir", "medium"], "Medium"),
}


def misspelt_field_errors(validator, document, path, new) -> list:
    """The errors that refuse the misspelt field `new` where the real one was."""
    return [e for e in validator.iter_errors(document) if e.validator == "additionalProperties"
            and list(e.absolute_path) == path[:-1] and repr(new) in e.message]


@pytest.mark.parametrize("field", TYPOS)
def test_the_raycluster_schema_catches_a_misspelt_field(kuberay, raycluster_validator, field):
    path, new = TYPOS[field]
    cluster = copy.deepcopy(by_kind(kuberay, "RayCluster"))
    _rename(path, new)(cluster)
    assert misspelt_field_errors(raycluster_validator, cluster, path, new), \
        f"a misspelt {field} passed the schema: {schema_errors(raycluster_validator, cluster)}"


CORE_TYPOS = {
    "Secret type": ("Secret", "secret", ["type"], "Type"),
    "Secret metadata.name": ("Secret", "secret", ["metadata", "name"], "nmae"),
    "claim spec.accessModes": ("PersistentVolumeClaim", "persistentVolumeClaim", ["spec", "accessModes"], "accessMode"),
    "claim spec.resources.requests": ("PersistentVolumeClaim", "persistentVolumeClaim",
                                      ["spec", "resources", "requests"], "request"),
    "claim metadata.labels": ("PersistentVolumeClaim", "persistentVolumeClaim", ["metadata", "labels"], "labes"),
}


@pytest.mark.parametrize("field", CORE_TYPOS)
def test_the_core_schemas_catch_a_misspelt_field(kuberay, raycluster_schema, field):
    kind, definition, path, new = CORE_TYPOS[field]
    document = copy.deepcopy(by_kind(kuberay, kind))
    _rename(path, new)(document)
    assert misspelt_field_errors(schema_validator(raycluster_schema, definition), document, path, new), \
        f"a misspelt {field} passed the schema"


def _set(path, value):
    def mutate(cluster):
        node = cluster
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1])
        else:
            node[path[-1]] = value
    return mutate


def _two_sources(cluster):
    _volume(cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"], "cache")["persistentVolumeClaim"] = \
        {"claimName": "petseg-results"}


# name: (mutation, path of the refused value, the schema keyword that refuses it)
WRONG_VALUES = {
    "rayStartParams value not a string": (_set(["spec", "headGroupSpec", "rayStartParams", "num-gpus"], 0),
                                          ["spec", "headGroupSpec", "rayStartParams", "num-gpus"], "type"),
    "unknown auth mode": (_set(["spec", "authOptions", "mode"], "tokens"), ["spec", "authOptions", "mode"], "enum"),
    "no worker template": (_set(["spec", "workerGroupSpecs", 0, "template"], None),
                           ["spec", "workerGroupSpecs", 0], "required"),
    "another apiVersion": (_set(["apiVersion"], "ray.io/v1alpha1"), ["apiVersion"], "const"),
    "unknown serviceType": (_set(["spec", "headGroupSpec", "serviceType"], "Internal"),
                            ["spec", "headGroupSpec", "serviceType"], "enum"),
    "replicas not a number": (_set(["spec", "workerGroupSpecs", 0, "replicas"], "1"),
                              ["spec", "workerGroupSpecs", 0, "replicas"], "type"),
    "memory not a quantity": (_set(WORKER_POD + ["containers", 0, "resources", "limits", "memory"], "24 GB"),
                              WORKER_POD + ["containers", 0, "resources", "limits", "memory"], "pattern"),
    "unknown toleration effect": (_set(WORKER_POD + ["tolerations", 0, "effect"], "NoScheduling"),
                                  WORKER_POD + ["tolerations", 0, "effect"], "enum"),
    "volume with two sources": (_two_sources, WORKER_POD + ["volumes", 1], "oneOf"),
    "env with value and valueFrom": (
        _set(WORKER_POD + ["containers", 0, "env"],
             [{"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        WORKER_POD + ["containers", 0, "env", 0], "not"),
}


@pytest.mark.parametrize("mutate", WRONG_VALUES)
def test_the_raycluster_schema_catches_wrong_values(kuberay, raycluster_validator, mutate):
    change, path, keyword = WRONG_VALUES[mutate]
    cluster = copy.deepcopy(by_kind(kuberay, "RayCluster"))
    change(cluster)
    errors = list(raycluster_validator.iter_errors(cluster))
    assert any(list(e.absolute_path) == path and e.validator == keyword for e in errors), \
        f"{mutate}: expected a {keyword} error at {path}, got {schema_errors(raycluster_validator, cluster)}"


def test_the_raycluster_schema_names_the_kuberay_release_the_docs_install(raycluster_schema, readme):
    """The schema says which KubeRay minor release it describes; the README installs that release, and
    the README and the manifest ask for an operator of at least that release."""
    release = re.search(r"\(KubeRay (\d+)\.(\d+)\)", raycluster_schema["$comment"])
    assert release, "the schema's $comment must name the KubeRay release it describes: (KubeRay X.Y)"
    minor = tuple(map(int, release.groups()))
    helm = re.findall(r"helm install kuberay-operator kuberay/kuberay-operator --version (\S+)", readme)
    assert len(helm) == 1 and Version(helm[0]).release[:2] == minor, \
        f"README must install KubeRay {'.'.join(map(str, minor))}.x (the API the schema describes): {helm}"
    needs = f"KubeRay operator {minor[0]}.{minor[1]}.0 or newer"
    assert needs in " ".join(readme.replace("*", "").split()), f"README must ask for the {needs}"
    assert needs in " ".join(header_comment(KUBERAY.read_text()).split()), f"kuberay.yaml must ask for the {needs}"
    # authOptions.secretName, which kuberay.yaml uses, is in this schema (KubeRay 1.6.0+).
    assert "secretName" in raycluster_schema["definitions"]["authOptions"]["properties"]


def test_kuberay_docs_wait_for_the_head_before_port_forwarding(readme):
    for name, text in (("cluster/README.md", section(readme, "Kubernetes")),
                       ("kuberay.yaml", header_comment(KUBERAY.read_text()))):
        check_waits_before_port_forward(text, name)


def check_waits_before_port_forward(text: str, name: str) -> None:
    wait = re.search(r"kubectl wait raycluster/(\S+) --for=condition=HeadPodReady --timeout=\S+", text)
    forward = text.find("kubectl port-forward svc/")
    assert wait and wait.group(1) == "petseg" and 0 <= wait.start() < forward, \
        f"{name}: `kubectl wait ... --for=condition=HeadPodReady` must come before `kubectl port-forward`"


def test_wait_check_fails_without_the_wait(readme):
    text = re.sub(r"kubectl wait [^\n]*\n", "", section(readme, "Kubernetes"))
    with pytest.raises(AssertionError):
        check_waits_before_port_forward(text, "mutated")


# ------------------------------------------------------------- shared storage paths in the README

PATH_FLAGS = ("--storage-path", "--data-root", "--results-dir", "--logdir")


def documented_paths(text: str) -> list[tuple[str, str, str]]:
    """(platform, flag, path) of the cluster commands in cluster/README.md: platform 'aws', 'kuberay' or 'any'."""
    found = []
    for title, body in readme_sections(text).items():
        if title.startswith(("Try it on one machine", "Not done by petseg")):
            continue  # loopback temp folders; what was not tested
        platform = "aws" if title.startswith("AWS") else "kuberay" if title.startswith("Kubernetes") else None
        for chunk in re.split(r"\n\s*\n", body):
            where = platform or ("aws" if "aws-gpu.yaml" in chunk else "kuberay" if "kubectl" in chunk else "any")
            for flag, path in re.findall(rf"({'|'.join(PATH_FLAGS)})[ =]([^\s`'\\]+)", chunk):
                if flag == "--results-dir" and not path.startswith("/"):
                    continue  # a placeholder (DIR): any folder
                if flag == "--storage-path" and "://" in path:
                    continue  # an object store: every node reaches it without a mount
                found.append((where, flag, path))
    return found


def check_storage_paths_on_shared_mounts(text: str, mounts: dict[str, str]) -> None:
    paths = documented_paths(text)
    for platform in mounts:
        assert any(p == platform and flag == "--storage-path" for p, flag, _ in paths), \
            f"no --storage-path for {platform} found in cluster/README.md"
    for platform, flag, path in paths:
        allowed = list(mounts.values()) if platform == "any" else [mounts[platform]]
        assert any(Path(path).is_relative_to(mount) for mount in allowed), \
            f"{flag} {path} ({platform}) is not on the shared storage mounted on every node ({' or '.join(allowed)})"


def test_readme_storage_paths_lie_on_the_shared_mount_of_every_node(aws, kuberay, readme):
    check_storage_paths_on_shared_mounts(readme, {"aws": aws_shared_mount(aws), "kuberay": kuberay_shared_mount(kuberay)})


@pytest.mark.parametrize("mutate", ["AWS path off the mount", "KubeRay path off the mount", "AWS mount moved",
                                    "KubeRay workers mount elsewhere"])
def test_storage_path_check_fails_off_the_mount(aws, kuberay, readme, mutate):
    if mutate == "AWS path off the mount":
        readme = readme.replace("--storage-path /mnt/shared/petseg", "--storage-path /home/ubuntu/petseg", 1)
    elif mutate == "KubeRay path off the mount":
        readme = readme.replace("--storage-path /mnt/results/ray", "--storage-path /tmp/ray_results", 1)
    elif mutate == "AWS mount moved":
        aws["setup_commands"] = [c.replace(" /mnt/shared ", " /mnt/efs ") for c in aws["setup_commands"]]
    else:
        _results_mounted_elsewhere(kuberay)
    with pytest.raises(AssertionError):
        check_storage_paths_on_shared_mounts(readme, {"aws": aws_shared_mount(aws),
                                                      "kuberay": kuberay_shared_mount(kuberay)})


# ------------------------------------------------------------------ constraints, image, .dockerignore

def constraint_pins(text: str) -> dict[str, Version]:
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt: `{line}` is not NAME==VERSION (a lock pins exact versions)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(match.group(2))
    return pins


def project_requirements(pyproject: dict) -> list[tuple[Requirement, tuple[str, ...]]]:
    project = pyproject["project"]
    requirements = [(Requirement(r), ()) for r in project["dependencies"]]
    for extra, listed in project.get("optional-dependencies", {}).items():
        requirements += [(Requirement(r), (extra,)) for r in listed]
    return requirements


def check_constraints_cover_dependencies(pins: dict[str, Version], pyproject: dict) -> None:
    """Every package petseg (and its extras) installs on this platform is pinned, at a version its
    dependents allow. Walks the installed packages' metadata where the installed version is the pinned one."""
    todo = list(project_requirements(pyproject))
    seen = set()
    while todo:
        requirement, extras = todo.pop()
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras or ("",)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name} (required as {requirement})"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, but {requirement} is required"
        key = (name, tuple(sorted(requirement.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version) == pins[name]:
            todo += [(Requirement(r), tuple(requirement.extras)) for r in installed.requires or []]
    assert len({n for n, _ in seen}) >= 50, "the walk must reach petseg's whole dependency tree"


def test_constraints_pin_every_dependency_at_an_allowed_version(pyproject):
    check_constraints_cover_dependencies(constraint_pins(CONSTRAINTS.read_text()), pyproject)


def test_constraints_hold_petsegs_own_pins(pyproject):
    pins = constraint_pins(CONSTRAINTS.read_text())
    for requirement, _ in project_requirements(pyproject):
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            assert pins[canonicalize_name(requirement.name)] == Version(exact[0]), requirement


@pytest.mark.parametrize("mutate", ["numpy not pinned", "numpy older than pandas allows", "torch off pyproject's pin",
                                    "a range instead of a pin", "a transitive dependency not pinned"])
def test_constraints_check_fails_when_the_lock_is_incomplete(pyproject, mutate):
    text = CONSTRAINTS.read_text()
    if mutate == "numpy not pinned":
        text = re.sub(r"(?m)^numpy==.*\n", "", text)
    elif mutate == "numpy older than pandas allows":
        text = re.sub(r"(?m)^numpy==.*$", "numpy==1.20.0", text)
    elif mutate == "torch off pyproject's pin":
        text = re.sub(r"(?m)^torch==.*$", "torch==2.13.0", text)
    elif mutate == "a range instead of a pin":
        text = re.sub(r"(?m)^scipy==", "scipy>=", text)
    else:
        text = re.sub(r"(?m)^filelock==.*\n", "", text)  # torch's, not petseg's
    with pytest.raises(AssertionError):
        check_constraints_cover_dependencies(constraint_pins(text), pyproject)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the build context) out, by .dockerignore's rules:
    the last matching pattern wins, `!` re-includes, a pattern matching a folder excludes what is in it."""
    def regex(pattern):
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!").strip("/"))
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# Local to one machine: must not reach the image.
LOCAL_ONLY = [".venv/bin/python", ".git/HEAD", "results/paper/all_trials.csv", "ray_results/paper/x.json",
              "cache/features/key/features.npy", "petseg/__pycache__/disk.cpython-311.pyc",
              "tests/__pycache__/conftest.cpython-311.pyc", "petseg.egg-info/PKG-INFO", ".pytest_cache/v/cache/x"]


def dockerfile_install(text: str) -> tuple[str, str, dict]:
    """The base image, where COPY puts the repository, and the RUN's pip install."""
    base = re.search(r"^FROM (\S+)", text, re.MULTILINE).group(1)
    copy_to = re.search(r"^COPY (?:--\S+ )*\. (\S+)$", text, re.MULTILINE)
    assert copy_to, "the Dockerfile must COPY the build context (the repository) into the image"
    runs = [i for line in re.findall(r"^RUN (.+)$", text, re.MULTILINE) for i in pip_installs(line)]
    assert len(runs) == 1, "one pip install in the Dockerfile"
    return base, copy_to.group(1), runs[0]


def check_image(dockerfile: str, dockerignore: str, pyproject: dict, docs: list) -> None:
    base, dest, install = dockerfile_install(dockerfile)
    image, _, tag = base.partition(":")
    match = re.fullmatch(rf"{re.escape(ray_version())}-py3(\d+)-gpu", tag)
    assert image == "rayproject/ray" and match, f"FROM rayproject/ray:{ray_version()}-py3NN-gpu, not {base}"
    minimum = re.search(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"]).group(1)
    assert int(match.group(1)) >= int(minimum), f"the image's Python 3.{match.group(1)} is older than petseg needs"
    constraints = f"{dest}/{CONSTRAINTS.relative_to(REPO)}"
    assert install["constraints"] == [constraints] and install["editable"] == [dest], \
        f"RUN pip install -c {constraints} -e {dest}: {install}"
    patterns = dockerignore_patterns(dockerignore)
    needed = ["pyproject.toml", "README.md", "petseg/__init__.py", "experiments/compare.py",
              str(CONSTRAINTS.relative_to(REPO))]
    for path in needed:
        assert (REPO / path).exists() and not dockerignore_excludes(path, patterns), \
            f"{path} is needed to build the image (pip install), but .dockerignore leaves it out"
    for path in LOCAL_ONLY:
        assert dockerignore_excludes(path, patterns), f".dockerignore must leave {path} out of the build context"
    # The manifest runs what this Dockerfile builds on.
    images = {c["image"] for pod in pod_templates(by_kind(docs, "RayCluster")).values()
              for c in pod["containers"] + pod.get("initContainers", [])}
    assert len(images) == 1 and (images == {base} or "petseg" in images.copy().pop().rpartition(":")[0]), \
        f"kuberay.yaml's containers must all run this Dockerfile's build (placeholder: its base {base}): {images}"
    assert "cluster/Dockerfile" in header_comment(KUBERAY.read_text()), "kuberay.yaml must name cluster/Dockerfile"


def test_the_image_installs_the_locked_petseg(pyproject, kuberay):
    check_image(DOCKERFILE.read_text(), DOCKERIGNORE.read_text(), pyproject, kuberay)


@pytest.mark.parametrize("mutate", [".venv shipped", "caches shipped", "README.md left out", "constraints left out",
                                    "unconstrained install", "another Ray in FROM", "git history shipped"])
def test_image_check_fails_when_a_requirement_is_removed(pyproject, kuberay, mutate):
    dockerfile, dockerignore = DOCKERFILE.read_text(), DOCKERIGNORE.read_text()
    if mutate == ".venv shipped":
        dockerignore = dockerignore.replace("\n.venv\n", "\n")
    elif mutate == "caches shipped":
        dockerignore = dockerignore.replace("**/__pycache__", "__pycache__").replace("**/*.py[cod]", "")
    elif mutate == "README.md left out":
        dockerignore += "*.md\n"
    elif mutate == "constraints left out":
        dockerignore += "cluster\n"
    elif mutate == "unconstrained install":
        dockerfile = re.sub(r"-c \S+ ", "", dockerfile)
    elif mutate == "another Ray in FROM":
        dockerfile = dockerfile.replace(f"rayproject/ray:{ray_version()}", "rayproject/ray:2.40.0")
    else:
        dockerignore = dockerignore.replace("\n.git\n", "\n")
    with pytest.raises(AssertionError):
        check_image(dockerfile, dockerignore, pyproject, kuberay)


def test_dockerignore_matching_follows_dockers_rules():
    assert dockerignore_excludes("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert not dockerignore_excludes("a/__pycache__/x.pyc", ["__pycache__"])
    assert dockerignore_excludes("results/x/y", ["results"]) and not dockerignore_excludes("results.md", ["results"])
    assert not dockerignore_excludes("docs/keep.md", ["docs", "!docs/keep.md"])
    assert dockerignore_excludes("x.pyc", ["**/*.py[cod]"]) and not dockerignore_excludes("x.py", ["**/*.py[cod]"])


def test_the_installed_ray_is_the_pinned_one():
    """The schema above is the one the configs will meet: Ray's pinned version is installed."""
    assert importlib.metadata.version("ray") == ray_version()
