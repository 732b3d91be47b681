"""A local alert catcher for `callintel demo`: a webhook receiver and an SMTP server on loopback that
write every alert they get to a folder (`webhook/*.json`, `email/*.eml`), so the demo's alerts can be
read without a Teams tenant or a mail relay."""

from __future__ import annotations

import itertools
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AlertCatcher:
    """`with AlertCatcher(folder) as catcher: os.environ.update(catcher.env())`."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "webhook").mkdir(parents=True, exist_ok=True)
        (folder / "email").mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(len(list(folder.glob("*/*"))) + 1)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._webhook_handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True)
        self._smtp_port = _free_port()
        self._smtp = Controller(self, hostname="127.0.0.1", port=self._smtp_port)

    def _next(self) -> int:
        with self._lock:
            return next(self._numbers)

    def _webhook_handler(self):
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                name = self.path.strip("/").replace("/", "_") or "webhook"
                (catcher.folder / "webhook" / f"{catcher._next():04d}-{name}.json").write_bytes(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler

    async def handle_DATA(self, server, session, envelope):
        (self.folder / "email" / f"{self._next():04d}.eml").write_bytes(envelope.original_content)
        return "250 Message accepted for delivery"

    def env(self) -> dict[str, str]:
        """The `CALLINTEL_ALERT_*` settings that point the alert channels here (no TLS on loopback)."""
        host, port = self._httpd.server_address[:2]
        return {
            "CALLINTEL_ALERT_TEAMS_WEBHOOK_URL": f"http://{host}:{port}/teams",
            "CALLINTEL_ALERT_SLACK_WEBHOOK_URL": f"http://{host}:{port}/slack",
            "CALLINTEL_ALERT_SMTP_HOST": "127.0.0.1",
            "CALLINTEL_ALERT_SMTP_PORT": str(self._smtp_port),
            "CALLINTEL_ALERT_SMTP_STARTTLS": "false",
            "CALLINTEL_ALERT_EMAIL_TO": "qa-team@localhost",
        }

    def __enter__(self) -> AlertCatcher:
        self._thread.start()
        self._smtp.start()
        return self

    def __exit__(self, *exc) -> None:
        self._smtp.stop()
        self._httpd.shutdown()
        self._httpd.server_close()
