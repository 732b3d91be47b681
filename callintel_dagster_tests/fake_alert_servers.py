"""Real loopback alert receivers: an HTTP server for Teams/Slack incoming webhooks and an SMTP server
(aiosmtpd) that requires STARTTLS, each recording what it received and failing on request."""

from __future__ import annotations

import collections
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class FakeWebhookServer:
    """POSTs to any path are recorded as (path, JSON body); `fail(status, times, path=)` answers the
    next `times` requests to that path with `status` instead of 200."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self._faults: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def fail(self, status: int, times: int, path: str) -> None:
        with self._lock:
            self._faults[path].extend([status] * times)

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body in self.requests if p == path]

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    faults = server._faults[self.path]
                    status = faults.popleft() if faults else 200
                    if status == 200:
                        server.requests.append((self.path, body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"1" if status == 200 else b"error")

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> FakeWebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), so STARTTLS is verified, not skipped."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Mailbox:
    def __init__(self):
        self.messages: list[str] = []
        self.faults: collections.deque[str] = collections.deque()
        self.tls_sessions = 0

    async def handle_DATA(self, server, session, envelope):
        if self.faults:
            return self.faults.popleft()
        self.tls_sessions += session.ssl is not None
        self.messages.append(envelope.content.decode())
        return "250 Message accepted for delivery"


class FakeSmtpServer:
    """aiosmtpd on loopback that refuses mail before STARTTLS; `fail(reply, times)` answers the next
    `times` messages with an SMTP error reply such as "451 Try again later"."""

    def __init__(self, folder: Path):
        self.cert_file, key_file = self_signed_cert(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, key_file)
        self._mailbox = _Mailbox()
        self.port = free_port()
        self._controller = Controller(
            self._mailbox, hostname="127.0.0.1", port=self.port, tls_context=context, require_starttls=True,
        )

    @property
    def messages(self) -> list[str]:
        return self._mailbox.messages

    @property
    def tls_sessions(self) -> int:
        return self._mailbox.tls_sessions

    def fail(self, reply: str, times: int) -> None:
        self._mailbox.faults.extend([reply] * times)

    def __enter__(self) -> FakeSmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()
