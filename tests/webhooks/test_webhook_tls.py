"""The pinned transport over TLS: it dials the vetted address, yet SNI and certificate checks use the URL's name."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from producer.webhooks.ssrf import UrlPolicy, check_url
from producer.webhooks.transport import PinnedTransport
from tests.webhooks.receivers import counting_resolver

NAME = "hooks.example.test"


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for NAME; records the SNI names clients send."""
    cert, key = _self_signed(tmp_path, NAME)
    seen_sni: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment,misc]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.send_header("x-host-seen", self.headers.get("host", ""))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a refused handshake (the wrong-name test) is what the client should see, not noise here

    server = Server(("127.0.0.1", 0), Handler)
    # The handshake in the handler threads, not in accept(): a client that never completes one (the test that dials
    # elsewhere) would otherwise hold the serving thread, and shutdown() with it, until its timeout.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, seen_sni
    server.shutdown()
    server.server_close()


def test_tls_uses_the_original_hostname_for_sni_and_verification(
    tls_server: tuple[int, Path, list[str | None]], tmp_path: Path
) -> None:
    port, cert, seen_sni = tls_server
    resolver, asked = counting_resolver({NAME: ["127.0.0.1"]})
    target = check_url(f"https://{NAME}:{port}/hook", UrlPolicy.from_entries(["127.0.0.1/32"]), resolver)
    trusting = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(transport=PinnedTransport(target, ssl_context=trusting), timeout=10) as client:
        response = client.post(target.url, content=b"{}")
    assert response.status_code == 204
    assert seen_sni == [NAME] and response.headers["x-host-seen"] == f"{NAME}:{port}"
    assert asked == [NAME]  # the guard's one lookup; the transport never resolves


def test_a_certificate_for_another_name_is_refused(tls_server: tuple[int, Path, list[str | None]]) -> None:
    port, cert, _ = tls_server
    other = "other.example.test"
    resolver, _ = counting_resolver({other: ["127.0.0.1"]})
    target = check_url(f"https://{other}:{port}/hook", UrlPolicy.from_entries(["127.0.0.1/32"]), resolver)
    trusting = ssl.create_default_context(cafile=str(cert))
    with (
        httpx.Client(transport=PinnedTransport(target, ssl_context=trusting), timeout=10) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post(target.url, content=b"{}")


def test_the_transport_dials_nothing_but_its_target(tls_server: tuple[int, Path, list[str | None]]) -> None:
    port, _, _ = tls_server
    resolver, _ = counting_resolver({NAME: ["127.0.0.1"]})
    target = check_url(f"https://{NAME}:{port}/hook", UrlPolicy.from_entries(["127.0.0.1/32"]), resolver)
    with httpx.Client(transport=PinnedTransport(target), timeout=5) as client, pytest.raises(httpx.TransportError):
        client.post(f"https://elsewhere.example.test:{port}/", content=b"{}")
