"""A fake Databricks workspace: a real HTTP server on 127.0.0.1 that answers the REST calls
databricks-sdk 0.60 makes for `DatabricksPipesCompute` (jobs runs submit/get/cancel/get-output at
/api/2.1 or /api/2.2, DBFS /api/2.0/dbfs/*, Files /api/2.0/fs/*), so the real WorkspaceClient,
PipesDatabricksClient, Pipes context injector and message reader run unchanged against it.

Each submitted run follows the next scripted `RunScript`: it goes PENDING -> RUNNING -> TERMINATED
with a result state, or hangs in RUNNING until cancelled. Its `remote` callable plays the cluster:
it sees the submitted task, the decoded Pipes context and can write Pipes messages and files.
Every request is recorded (method, path, query, body, auth header) for the tests to inspect.
"""

from __future__ import annotations

import base64
import json
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from dagster_pipes import (
    PIPES_PROTOCOL_VERSION,
    PIPES_PROTOCOL_VERSION_FIELD,
    decode_param,
)


@dataclass
class RemoteView:
    """What the job's code would see on the cluster."""

    fake: FakeDatabricks
    task: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return self.task.get("new_cluster", {}).get("spark_env_vars", {})

    @property
    def pipes_context(self) -> dict[str, Any]:
        path = decode_param(self.env["DAGSTER_PIPES_CONTEXT"])["path"]
        return json.loads(self.fake.files[path])

    def write_file(self, path: str, data: bytes) -> None:
        self.fake.put_file(path.removeprefix("dbfs:"), data)

    def send_pipes_messages(self, messages: list[dict[str, Any]]) -> None:
        """Write `messages` as the first Pipes message chunk, as the remote message writer does."""
        directory = decode_param(self.env["DAGSTER_PIPES_MESSAGES"])["path"]
        lines = [json.dumps({PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, **m}) for m in messages]
        self.fake.put_file(f"{directory}/1.json", "\n".join(lines).encode())


def pipes_message(method: str, **params: Any) -> dict[str, Any]:
    return {"method": method, "params": params}


@dataclass
class RunScript:
    """How one submitted run behaves. `result_state=None` means it never finishes by itself."""

    result_state: str | None = "SUCCESS"
    state_message: str = ""
    task_error: str | None = None
    remote: Callable[[RemoteView], None] | None = None
    running_polls: int = 1


@dataclass
class _Run:
    run_id: int
    task_run_id: int
    body: dict[str, Any]
    script: RunScript
    polls: int = 0
    life_cycle: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""

    def as_json(self, host: str) -> dict[str, Any]:
        state = {"life_cycle_state": self.life_cycle, "state_message": self.state_message}
        if self.result_state:
            state["result_state"] = self.result_state
        task = self.body["tasks"][0]
        return {
            "run_id": self.run_id,
            "run_name": self.body.get("run_name"),
            "run_page_url": f"{host}/#job/runs/{self.run_id}",
            "state": state,
            "tasks": [{"run_id": self.task_run_id, "task_key": task["task_key"], "state": state}],
        }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


@dataclass
class FakeDatabricks:
    token: str
    scripts: list[RunScript] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    directories: set[str] = field(default_factory=lambda: {"/"})
    runs: dict[int, _Run] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    host: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def submitted(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/jobs/runs/submit")]

    def put_file(self, path: str, data: bytes) -> None:
        self._mkdirs(posixpath.dirname(path))
        self.files[path] = data

    def _mkdirs(self, path: str) -> None:
        while path not in ("", "/"):
            self.directories.add(path)
            path = posixpath.dirname(path)

    def _delete(self, path: str) -> None:
        for name in [f for f in self.files if f == path or f.startswith(path + "/")]:
            del self.files[name]
        self.directories -= {d for d in self.directories if d == path or d.startswith(path + "/")}

    def _children(self, path: str) -> list[tuple[str, bool, int]]:
        entries = [(f, False, len(data)) for f, data in self.files.items() if posixpath.dirname(f) == path]
        entries += [(d, True, 0) for d in self.directories if d != path and posixpath.dirname(d) == path]
        return sorted(entries)

    # ---- jobs -------------------------------------------------------------------------------

    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        run_id = 1000 + len(self.runs)
        script = self.scripts.pop(0) if self.scripts else RunScript()
        run = _Run(run_id=run_id, task_run_id=run_id + 500_000, body=body, script=script)
        self.runs[run_id] = run
        if script.remote:
            script.remote(RemoteView(self, body["tasks"][0]))
        return {"run_id": run_id}

    def _get_run(self, run_id: int) -> dict[str, Any]:
        run = self.runs[run_id]
        if run.life_cycle not in ("TERMINATED", "TERMINATING"):
            run.polls += 1
            if run.polls > 1:
                run.life_cycle = "RUNNING"
            if run.script.result_state and run.polls > run.script.running_polls:
                run.life_cycle, run.result_state = "TERMINATED", run.script.result_state
                run.state_message = run.script.state_message
        return run.as_json(self.host)

    def _cancel(self, run_id: int) -> dict[str, Any]:
        run = self.runs[run_id]
        self.cancelled.append(run_id)
        if run.life_cycle != "TERMINATED":
            run.life_cycle, run.result_state, run.state_message = "TERMINATED", "CANCELED", "Run cancelled."
        return {}

    def _get_output(self, task_run_id: int) -> dict[str, Any]:
        run = {r.task_run_id: r for r in self.runs.values()}[task_run_id]
        output: dict[str, Any] = {"metadata": run.as_json(self.host)}
        if run.script.task_error and run.result_state == "FAILED":
            output["error"] = run.script.task_error
        return output

    # ---- HTTP dispatch ----------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], raw: bytes, authorization: str | None
    ) -> tuple[int, Any]:
        """Returns (status, JSON body or raw bytes or None)."""
        is_files_api = path.startswith("/api/2.0/fs/")
        body = json.loads(raw) if raw and not is_files_api else raw
        with self._lock:
            self.requests.append(Request(method, path, query, body, authorization))
            if authorization != f"Bearer {self.token}":
                return 401, {"error_code": "UNAUTHENTICATED", "message": "bad token"}
            try:
                return self._route(method, path, query, body)
            except KeyError as missing:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"no such resource: {missing}"}

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path.startswith("/api/2.1/jobs/") or path.startswith("/api/2.2/jobs/"):
            action = path.split("/jobs/", 1)[1]
            if (method, action) == ("POST", "runs/submit"):
                return 200, self._submit(body)
            if (method, action) == ("GET", "runs/get"):
                return 200, self._get_run(int(query["run_id"]))
            if (method, action) == ("POST", "runs/cancel"):
                return 200, self._cancel(int(body["run_id"]))
            if (method, action) == ("GET", "runs/get-output"):
                return 200, self._get_output(int(query["run_id"]))
        if path.startswith("/api/2.0/dbfs/"):
            return self._dbfs(method, path.removeprefix("/api/2.0/dbfs/"), query, body or {})
        if path.startswith("/api/2.0/fs/files/"):
            return self._files_api(method, "/" + path.removeprefix("/api/2.0/fs/files/"), query, body)
        if path.startswith("/api/2.0/fs/directories/"):
            return self._directories_api(method, "/" + path.removeprefix("/api/2.0/fs/directories/"))
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}

    def _dbfs(self, method: str, action: str, query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        target = (query.get("path") or body.get("path", "")).removeprefix("dbfs:")
        if action == "mkdirs":
            self._mkdirs(target)
        elif action == "put":
            self.put_file(target, base64.b64decode(body.get("contents", "")))
        elif action == "delete":
            self._delete(target)
        elif action == "get-status":
            if target in self.files:
                return 200, {"path": target, "is_dir": False, "file_size": len(self.files[target]), "modification_time": 0}
            if target in self.directories:
                return 200, {"path": target, "is_dir": True, "file_size": 0}
            raise KeyError(target)
        elif action == "read":
            data = self.files[target]
            offset, length = int(query.get("offset", 0)), int(query.get("length", 1 << 20))
            chunk = data[offset : offset + length]
            return 200, {"bytes_read": len(chunk), "data": base64.b64encode(chunk).decode()}
        elif action == "list":
            if target not in self.directories:
                raise KeyError(target)
            return 200, {"files": [{"path": p, "is_dir": d, "file_size": n} for p, d, n in self._children(target)]}
        else:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"dbfs/{action}"}
        return 200, {}

    def _files_api(self, method: str, target: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method == "PUT":
            if query.get("overwrite") == "false" and target in self.files:
                return 409, {"error_code": "ALREADY_EXISTS", "message": target}
            self.put_file(target, body)
            return 204, None
        if method == "GET":
            return 200, self.files[target]
        if method == "DELETE":
            del self.files[target]
            return 204, None
        return 405, {"error_code": "BAD_REQUEST", "message": method}

    def _directories_api(self, method: str, target: str) -> tuple[int, Any]:
        target = target.rstrip("/") or "/"
        if method == "PUT":
            self._mkdirs(target)
            return 204, None
        if target not in self.directories:
            raise KeyError(target)
        if method == "GET":
            contents = [
                {"path": p, "name": posixpath.basename(p), "is_directory": d, "file_size": n}
                for p, d, n in self._children(target)
            ]
            return 200, {"contents": contents}
        if method == "DELETE":
            if self._children(target):
                return 409, {"error_code": "DIRECTORY_NOT_EMPTY", "message": target}
            self.directories.discard(target)
            return 204, None
        return 405, {"error_code": "BAD_REQUEST", "message": method}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDatabricks

    def _serve(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = self.fake.handle(
            self.command, unquote(url.path), query, raw, self.headers.get("Authorization")
        )
        data = payload if isinstance(payload, bytes) else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass


class FakeDatabricksServer:
    """`with FakeDatabricksServer(token) as fake:` serves on an ephemeral port; `fake.host` is its URL."""

    def __init__(self, token: str):
        self.fake = FakeDatabricks(token=token)
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.fake.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDatabricks:
        self._thread.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
