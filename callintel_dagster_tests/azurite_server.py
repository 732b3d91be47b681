"""Azurite, Microsoft's Azure Storage emulator (npm `azurite`, installed by the Makefile under
`.tools/azurite`), started on a free loopback port as the real Azure Blob endpoint of the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURITE_BLOB = REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account; Microsoft publishes the key, it opens nothing else.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AzuriteServer:
    """`with AzuriteServer() as server:` an in-memory Blob service on loopback, stopped on exit."""

    def __init__(self, startup_timeout_s: float = 60.0, memory_limit_mb: int = 1024):
        self.startup_timeout_s = startup_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def __enter__(self) -> AzuriteServer:
        binary = str(AZURITE_BLOB) if AZURITE_BLOB.exists() else shutil.which("azurite-blob")
        if binary is None:
            raise RuntimeError(f"azurite-blob is not installed: run `make install` (npm azurite into {AZURITE_BLOB.parents[2]})")
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            self.process = subprocess.Popen(
                [binary, "--inMemoryPersistence", "--extentMemoryLimit", str(self.memory_limit_mb),
                 "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--skipApiVersionCheck",
                 "--disableTelemetry", "--silent"],
                stdout=self._log, stderr=subprocess.STDOUT,
            )
            if self._wait_until_it_answers():
                return self
            self._stop()
        self._log.seek(0)
        raise RuntimeError(f"Azurite did not start: {self._log.read().decode(errors='replace')[-2000:]}")

    def _wait_until_it_answers(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{ACCOUNT}?comp=list", timeout=2)
                return True
            except urllib.error.HTTPError:
                return True  # an unsigned request is refused: the service is up
            except OSError:
                time.sleep(0.1)
        return False

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc) -> None:
        self._stop()
        self._log.close()
