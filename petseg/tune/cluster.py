"""Connecting a search to Ray: check a cluster address before anything is written, start the embedded local
Ray as closed as Ray allows, and check that a trial's resources fit before any trial is queued."""
from __future__ import annotations

import os
import socket
import ssl
from contextlib import contextmanager
from urllib.parse import urlparse

import ray

from ..errors import StudyError
from .concurrency import alive_node_resources, fits_on
from .config import StudyConfig

# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server such as Ray's GCS answers with a
# SETTINGS frame of its own (frame type 4 in the 4th byte of its 9-byte header); other servers do not.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4
# Ray's TLS (its gRPC channels) is on when RAY_USE_TLS is 1 or true, and then needs all three files.
TLS_FILES = {"RAY_TLS_CA_CERT": "the CA that signed the cluster's certificates",
             "RAY_TLS_SERVER_CERT": "this machine's certificate", "RAY_TLS_SERVER_KEY": "its private key"}
_TLS_RECORD_TYPES = (0x15, 0x16)  # a TLS alert or handshake record: what a TLS server answers plain bytes with


def tls_enabled() -> bool:
    """Whether Ray talks TLS here (RAY_USE_TLS=1 or true), as Ray itself reads the variable."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def tls_context() -> ssl.SSLContext:
    """A TLS client context like Ray's gRPC channels under RAY_USE_TLS: the CA of RAY_TLS_CA_CERT, the
    certificate and key of RAY_TLS_SERVER_CERT / RAY_TLS_SERVER_KEY (Ray's servers ask for one), HTTP/2 by ALPN.
    Raises StudyError naming a variable that is unset or a file that cannot be used."""
    missing = [name for name in TLS_FILES if not os.environ.get(name)]
    if missing:
        raise StudyError(f"RAY_USE_TLS is set but {', '.join(missing)} is not: Ray's TLS needs "
                         + "; ".join(f"{name} ({what})" for name, what in TLS_FILES.items())
                         + " - the files the cluster's nodes were started with")
    ca, cert, key = (os.environ[name] for name in TLS_FILES)
    try:  # ssl.SSLError, a bad PEM file, is an OSError too
        context = ssl.create_default_context(cafile=ca)
    except OSError as err:
        raise StudyError(f"RAY_TLS_CA_CERT={ca} is not a readable PEM CA certificate ({err})") from err
    try:
        context.load_cert_chain(cert, key)
    except OSError as err:
        raise StudyError(f"RAY_TLS_SERVER_CERT={cert} and RAY_TLS_SERVER_KEY={key} are not a readable PEM "
                         f"certificate and its private key ({err})") from err
    context.set_alpn_protocols(["h2"])
    return context


def _tls_failure(address: str, host: str, what) -> str:
    """What to check when the TLS exchange with the head at `address` failed (`what` happened)."""
    return (f"the TLS handshake with {address} failed ({what}). RAY_USE_TLS is set: the cluster must run with TLS "
            f"too, its certificate must be signed by RAY_TLS_CA_CERT ({os.environ['RAY_TLS_CA_CERT']}) and name "
            f"{host}, and it must accept this machine's RAY_TLS_SERVER_CERT ({os.environ['RAY_TLS_SERVER_CERT']}); "
            "unset RAY_USE_TLS for a cluster without TLS")


def check_address(address: str, timeout: float = 5.0) -> None:
    """Raise StudyError, saying what is there instead, unless `address` answers like a Ray head node's GCS
    (over TLS when RAY_USE_TLS is set)."""
    if address == "auto":
        return
    scheme = urlparse(address).scheme
    if scheme in ("http", "https"):
        raise StudyError(f"--address {address} is a dashboard URL (what `ray job submit --address` takes); a driver "
                         "joins the cluster through the head node's GCS address, HOST:6379 by default")
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    tls = tls_context() if tls_enabled() else None  # unset variables and unusable files are named first
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as err:
        raise StudyError(f"cannot reach the Ray cluster at {address} ({err}); check the address and that the head "
                         "node is running (`ray status` on it)") from err
    with connection:
        if scheme == "ray":  # Ray Client speaks gRPC too, on its own port; ray.init checks the rest
            return
        connection.settimeout(timeout)
        try:
            with tls.wrap_socket(connection, server_hostname=host) if tls else connection as channel:
                channel.sendall(_HTTP2_HELLO)
                reply, dropped = channel.recv(9), "it closed the connection"
        except ssl.SSLError as err:  # under TLS 1.3 a head refusing this machine's certificate says so on this read
            raise StudyError(_tls_failure(address, host, err)) from err
        except OSError as err:  # reached, then reset or silent: not what a GCS does with an HTTP/2 preface
            reply, dropped = b"", str(err)
    if len(reply) >= 4 and reply[3] == _SETTINGS:
        return
    if tls and not reply:
        raise StudyError(_tls_failure(address, host, f"after the handshake {dropped}"))
    tls_hint = ("set RAY_USE_TLS=1, " + ", ".join(TLS_FILES) + " here: a cluster started with RAY_USE_TLS=1 admits "
                "drivers that have its certificates")
    if not tls and len(reply) >= 2 and reply[0] in _TLS_RECORD_TYPES and reply[1] == 3:
        raise StudyError(f"{address} answers with TLS; {tls_hint}")
    if not reply:
        raise StudyError(f"{address} does not answer an HTTP/2 preface as a Ray head node's GCS does ({dropped}); "
                         "pass the head's GCS address (HOST:6379 by default), and if the cluster uses TLS, "
                         + tls_hint)
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
        ray.init(**node_address_option(config.run.ray_node_ip), include_dashboard=False,
                 num_gpus=config.run.local_gpus, log_to_driver=config.run.verbose,
                 logging_level="INFO" if config.run.verbose else "ERROR")
    except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception when its processes do not come up
        raise StudyError(f"the local Ray did not start ({err}); nothing was run. On a busy machine wait and run the "
                         "same command again; Ray's own logs are under /tmp/ray/session_latest/logs") from err


# petseg's one private Ray name: ray.init has no public argument for the node address of a local Ray (it
# takes the machine's outward address, and rewrites 127.0.0.1 to it). tests/test_public_api.py fails when a
# Ray upgrade stops handling it, and allows it here and nowhere else.
NODE_ADDRESS_OPTION = "_node_ip_address"


def node_address_option(ip: str) -> dict[str, str]:
    """The ray.init keyword that starts the embedded local Ray's node on address `ip` (Ray's hidden option)."""
    return {NODE_ADDRESS_OPTION: ip}


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


def check_resources(config: StudyConfig) -> None:
    """Raise StudyError naming the request and what the nodes have when no node of the local Ray can run a trial;
    on a cluster, which may grow (an autoscaler adds nodes, or someone joins one), say that the study waits."""
    request = trial_request(config)
    nodes = alive_node_resources()
    if any(fits_on(request, node) for node in nodes):
        return
    asked = ", ".join(f"{amount:g} {name}" for name, amount in request.items())
    largest = "; ".join(", ".join(f"{node.get(name, 0):g} {name}" for name in ("CPU", "GPU")) for node in nodes)
    if config.run.address:
        print(f"[petseg] no node has {asked} for a trial yet (the nodes have: {largest or 'no node'}); the study "
              "waits for one to join: an autoscaler adds it, or `ray start --address` on a machine that has them "
              "(Ctrl-C stops the study)", flush=True)
        return
    raise StudyError(f"a trial asks for {asked} on one node, but the nodes have only: {largest or 'no node'}. Lower "
                     "--cpus-per-trial / --gpus-per-trial to fit, or run on a machine or cluster that has them")
