"""API actions over HTTPS: the connection goes to the checked address while SNI and the
certificate are verified for the URL's host name."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from actioncage.actions.http import HttpActionRunner, check_endpoint
from actioncage.egress.guard import EgressGuard
from actioncage.models import Policy
from tests.conftest import make_settings


def _cert(
    name: str, issuer_key: Any, issuer: x509.Name | None, ca: bool
) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """An HTTPS echo server on 127.0.0.1 with a certificate for ``api.test``; yields
    (port, the CA file, Host headers seen)."""
    ca_cert, ca_key = _cert("test CA", None, None, ca=True)
    leaf, leaf_key = _cert("api.test", ca_key, ca_cert.subject, ca=False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers.get("Host", ""))
            data = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], ca_file, hosts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _runner(tmp_path: Path, tls: ssl.SSLContext | None) -> HttpActionRunner:
    # A stand-in DNS: every name resolves to loopback, which the operator allowed.
    guard = EgressGuard(allowed_cidrs=["127.0.0.0/8"], resolver=lambda host, port: ["127.0.0.1"])
    settings = make_settings(tmp_path, default_egress="*.test")
    return HttpActionRunner(settings, guard=guard, tls=tls)


def _endpoint(url: str) -> dict[str, Any]:
    return check_endpoint({"url": url}, None, 60_000)


def test_https_dials_the_checked_address_and_verifies_the_name(
    tmp_path: Path, tls_server: tuple[int, Path, list[str]]
) -> None:
    port, ca_file, hosts = tls_server
    runner = _runner(tmp_path, ssl.create_default_context(cafile=str(ca_file)))
    call = runner.call(
        _endpoint(f"https://api.test:{port}/orders/$id"), {"id": "7"}, Policy(), None
    )
    assert call.error is None, call.error
    assert call.output == {"path": "/orders/7"}
    assert hosts == [f"api.test:{port}"]


def test_https_with_an_untrusted_certificate_fails(
    tmp_path: Path, tls_server: tuple[int, Path, list[str]]
) -> None:
    port, _, hosts = tls_server
    call = _runner(tmp_path, None).call(_endpoint(f"https://api.test:{port}/x"), {}, Policy(), None)
    assert call.error is not None and "CERTIFICATE_VERIFY_FAILED" in call.error.message
    assert hosts == []


def test_https_to_a_name_the_certificate_does_not_cover_fails(
    tmp_path: Path, tls_server: tuple[int, Path, list[str]]
) -> None:
    port, ca_file, hosts = tls_server
    runner = _runner(tmp_path, ssl.create_default_context(cafile=str(ca_file)))
    call = runner.call(_endpoint(f"https://other.test:{port}/x"), {}, Policy(), None)
    assert call.error is not None and "CERTIFICATE_VERIFY_FAILED" in call.error.message
    assert hosts == []
