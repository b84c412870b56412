"""The address check with Ray's TLS (RAY_USE_TLS): a handshake with the cluster's CA and this machine's
certificate, then the HTTP/2 preface over TLS; tested against small TLS servers on 127.0.0.1 with a CA
made here."""
import datetime
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from petseg.errors import StudyError
from petseg.tune.cluster import check_address

SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame
PREFACE_LENGTH = 24 + 9  # the client preface and its own SETTINGS frame


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(folder, name):
    """A self-signed CA: (its certificate, its key), the certificate written to folder/<name>.crt."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(folder, name, ca, ip="127.0.0.1"):
    """A certificate for `ip` signed by `ca`, usable by a server and a client (as Ray's node certificates are):
    folder/<name>.crt and folder/<name>.key."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return folder / f"{name}.crt", folder / f"{name}.key"


class TLSServer:
    """A server on 127.0.0.1 that answers each connection with `answer(first bytes read)` until closed: over TLS
    when given a certificate, then asking for a client certificate of `ca_file` as Ray's servers do."""

    def __init__(self, cert, key, ca_file, answer, alpn=("h2",)):
        self.context = None
        if cert:  # else a plain TCP server
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
            self.context.load_cert_chain(cert, key)
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.set_alpn_protocols(list(alpn))
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            with raw:
                raw.settimeout(5)
                try:
                    with self.context.wrap_socket(raw, server_side=True) if self.context else raw as connection:
                        self.handshakes += 1
                        connection.sendall(self.answer(connection.recv(PREFACE_LENGTH)))
                except OSError:
                    pass  # a failed handshake: the client reports it

    def close(self):
        self.listener.close()


def grpc_like(request):
    """What Ray's GCS answers an HTTP/2 client preface with: its own SETTINGS frame."""
    return SETTINGS_FRAME if request.startswith(b"PRI * HTTP/2.0") else b""


def https_like(request):
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def pki(tmp_path):
    """The cluster's CA and the certificates of its head and of this driver's machine."""
    ca = make_ca(tmp_path, "cluster-ca")
    head = issue(tmp_path, "head", ca)
    here = issue(tmp_path, "driver", ca)
    return tmp_path, ca, head, here


@pytest.fixture
def tls_env(pki, monkeypatch):
    folder, _, _, (cert, key) = pki
    monkeypatch.setenv("RAY_USE_TLS", "1")
    monkeypatch.setenv("RAY_TLS_CA_CERT", str(folder / "cluster-ca.crt"))
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", str(cert))
    monkeypatch.setenv("RAY_TLS_SERVER_KEY", str(key))
    return folder


@pytest.fixture
def server(pki):
    folder, _, (cert, key), _ = pki
    servers = []

    def start(answer, alpn=("h2",)):
        servers.append(TLSServer(cert, key, folder / "cluster-ca.crt", answer, alpn))
        return servers[-1]

    yield start
    for running in servers:
        running.close()


def test_a_tls_head_is_accepted_with_the_clusters_certificates(tls_env, server):
    head = server(grpc_like)
    check_address(head.address)
    assert head.handshakes == 1


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_ray_use_tls_is_read_as_ray_reads_it(tls_env, server, monkeypatch, value):
    monkeypatch.setenv("RAY_USE_TLS", value)
    check_address(server(grpc_like).address)


def test_a_tls_server_that_is_not_grpc_is_refused(tls_env, server):
    head = server(https_like, alpn=("http/1.1",))
    with pytest.raises(StudyError, match="answers as an HTTP server, not as a Ray head node's GCS"):
        check_address(head.address)
    assert head.handshakes == 1  # refused for what it said, not for the handshake


def test_a_head_signed_by_another_ca_fails_the_handshake_naming_the_variables(tls_env, server, tmp_path,
                                                                              monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    make_ca(other, "other-ca")
    monkeypatch.setenv("RAY_TLS_CA_CERT", str(other / "other-ca.crt"))
    head = server(grpc_like)
    with pytest.raises(StudyError, match="the TLS handshake with .* failed") as caught:
        check_address(head.address)
    message = str(caught.value)
    assert "RAY_TLS_CA_CERT" in message and str(other / "other-ca.crt") in message
    assert "RAY_TLS_SERVER_CERT" in message and "certificate verify failed" in message


def test_a_driver_certificate_the_head_does_not_trust_fails_the_handshake(tls_env, server, tmp_path, monkeypatch):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    cert, key = issue(stranger, "driver", make_ca(stranger, "stranger-ca"))
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", str(cert))
    monkeypatch.setenv("RAY_TLS_SERVER_KEY", str(key))
    with pytest.raises(StudyError, match="RAY_TLS_SERVER_CERT"):
        check_address(server(grpc_like).address)


def test_missing_tls_variables_are_named_before_connecting(tls_env, monkeypatch):
    monkeypatch.delenv("RAY_TLS_SERVER_KEY")
    monkeypatch.delenv("RAY_TLS_CA_CERT")
    with pytest.raises(StudyError, match="RAY_USE_TLS is set but RAY_TLS_CA_CERT, RAY_TLS_SERVER_KEY is not"):
        check_address("127.0.0.1:1")  # nothing listens there: the variables are checked first


def test_an_unreadable_certificate_file_is_named(tls_env, monkeypatch, tmp_path):
    (tmp_path / "garbage.crt").write_text("not a certificate")
    monkeypatch.setenv("RAY_TLS_CA_CERT", str(tmp_path / "garbage.crt"))
    with pytest.raises(StudyError, match=f"RAY_TLS_CA_CERT={tmp_path / 'garbage.crt'} is not a readable PEM"):
        check_address("127.0.0.1:1")


def test_a_tls_head_probed_without_ray_use_tls_is_refused(pki, server, monkeypatch):
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with pytest.raises(StudyError, match="RAY_USE_TLS=1"):
        check_address(server(grpc_like).address)


@pytest.mark.parametrize("answer, accepted", [(grpc_like, True), (https_like, False)])
def test_without_tls_the_plain_probe_still_tells_grpc_from_http(answer, accepted, monkeypatch):
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    plain = TLSServer(None, None, None, answer)
    try:
        if accepted:
            check_address(plain.address)
        else:
            with pytest.raises(StudyError, match="answers as an HTTP server"):
                check_address(plain.address)
    finally:
        plain.close()
