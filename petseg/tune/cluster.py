"""Connecting a search to Ray: check a cluster address before anything is written, start the embedded local
Ray as closed as Ray allows, and check that a trial's resources fit before any trial is queued."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from urllib.parse import urlparse

import ray

from ..errors import StudyError
from .config import StudyConfig

# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server such as Ray's GCS answers with a
# SETTINGS frame of its own (frame type 4 in the 4th byte of its 9-byte header); other servers do not.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def check_address(address: str, timeout: float = 5.0) -> None:
    """Raise StudyError, saying what is there instead, unless `address` answers like a Ray head node's GCS."""
    if address == "auto":
        return
    scheme = urlparse(address).scheme
    if scheme in ("http", "https"):
        raise StudyError(f"--address {address} is a dashboard URL (what `ray job submit --address` takes); a driver "
                         "joins the cluster through the head node's GCS address, HOST:6379 by default")
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            if scheme == "ray":  # Ray Client speaks gRPC too, on its own port; ray.init checks the rest
                return
            connection.settimeout(timeout)
            connection.sendall(_HTTP2_HELLO)
            reply = connection.recv(9)
    except OSError as err:
        raise StudyError(f"cannot reach the Ray cluster at {address} ({err}); check the address and that the head "
                         "node is running (`ray status` on it)") from err
    if len(reply) >= 4 and reply[3] == _SETTINGS:
        return
    # An HTTP/1 server answers with a status line, or with bare HTML when it treats the preface as HTTP/0.9.
    what = "an HTTP server" if reply.lstrip().startswith((b"HTTP/", b"<")) else "a service that is not Ray"
    raise StudyError(f"{address} answers as {what}, not as a Ray head node's GCS; pass the head's GCS address "
                     "(HOST:6379 by default, the address `ray start --head` printed)")


def connect(config: StudyConfig) -> None:
    """Join the cluster at config.run.address (checked first), or start the embedded local Ray."""
    if not config.run.address:
        start_local_ray(config)
        return
    check_address(config.run.address)
    try:
        ray.init(address=config.run.address, log_to_driver=config.run.verbose,
                 logging_level="INFO" if config.run.verbose else "ERROR")
    except ConnectionError as err:
        token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        raise StudyError(
            f"the Ray cluster at {config.run.address} refused this driver ({err}). A cluster started with "
            "RAY_AUTH_MODE=token admits only drivers holding its token: set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH=<token file> (or RAY_AUTH_TOKEN) here"
            + (" — a token is set, so check that it is the cluster's" if token else "")) from err


def start_local_ray(config: StudyConfig) -> None:
    """A local Ray on a loopback node address, with token authentication and without the metrics export.

    Ray binds its GCS, raylet, worker and agent ports on every interface whatever the node address, so
    the token is what keeps others out: a local Ray without it is refused unless the user insists.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" and not config.run.allow_unauthenticated_ray:
        raise StudyError("RAY_AUTH_MODE=disabled: the local Ray petseg starts listens on every network interface, and "
                         "without its token anyone who reaches this machine could run code in it. Unset "
                         "RAY_AUTH_MODE, or pass --allow-unauthenticated-ray if this machine's network is closed")
    if not config.run.ray_metrics:
        # The Prometheus export of each node's agent listens on every interface; nothing here reads it.
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    try:
        ray.init(_node_ip_address=config.run.ray_node_ip, include_dashboard=False, num_gpus=config.run.local_gpus,
                 log_to_driver=config.run.verbose, logging_level="INFO" if config.run.verbose else "ERROR")
    except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception when its processes do not come up
        raise StudyError(f"the local Ray did not start ({err}); nothing was run. On a busy machine wait and run the "
                         "same command again; Ray's own logs are under /tmp/ray/session_latest/logs") from err


@contextmanager
def ray_session(config: StudyConfig):
    """Connected to Ray with a trial's resources checked for the whole block, shut down after it."""
    connect(config)
    try:
        check_resources(config)
        yield
    finally:
        ray.shutdown()


def trial_request(config: StudyConfig) -> dict[str, float]:
    """What one trial asks of one node: {"CPU": n, "GPU": n} (GPU only when asked)."""
    request = {"CPU": config.run.cpus_per_trial}
    if config.run.gpus_per_trial:
        request["GPU"] = config.run.gpus_per_trial
    return request


def fits(request: dict[str, float], node: dict[str, float]) -> bool:
    """Whether one node's resources hold a trial's request."""
    return all(node.get(name, 0) >= amount for name, amount in request.items())


def check_resources(config: StudyConfig) -> None:
    """Raise StudyError naming the request and what the nodes have when no node can run a trial; on a cluster
    with an autoscaler, say that the study waits for it to add a node instead."""
    request = trial_request(config)
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if any(fits(request, node) for node in nodes):
        return
    asked = ", ".join(f"{amount:g} {name}" for name, amount in request.items())
    largest = "; ".join(", ".join(f"{node.get(name, 0):g} {name}" for name in ("CPU", "GPU")) for node in nodes)
    if config.run.address and autoscaling():
        print(f"[petseg] no node has {asked} for a trial yet; the study waits for the autoscaler to add one "
              "(Ctrl-C stops it)", flush=True)
        return
    raise StudyError(f"a trial asks for {asked} on one node, but the nodes have only: {largest or 'no node'}. Lower "
                     "--cpus-per-trial / --gpus-per-trial to fit, or run on a machine or cluster that has them")


def autoscaling() -> bool:
    """Whether the connected cluster runs Ray's autoscaler (it publishes its status or node types in the GCS)."""
    from ray._private import ray_constants, state
    from ray.experimental import internal_kv

    return bool(internal_kv._internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
                or state.state.get_cluster_config())


def trial_slots(config: StudyConfig) -> int:
    """How many trials run at once: config.run.max_concurrent_trials, or what the cluster's resources fit now.

    Tune admits one pending trial at a time for a custom searcher unless told a concurrency, which
    would run the study one trial after another.
    """
    if config.run.max_concurrent_trials:
        return config.run.max_concurrent_trials
    # Trials are placed node by node: count what fits on each rather than in the cluster's total.
    request = trial_request(config)
    slots = sum(min(int(node["Resources"].get(name, 0) // amount) for name, amount in request.items())
                for node in ray.nodes() if node["Alive"])
    return max(1, slots)  # an autoscaling cluster may have no node that fits yet
