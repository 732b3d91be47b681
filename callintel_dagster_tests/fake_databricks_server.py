"""A fake Databricks workspace: a real HTTP server on 127.0.0.1 that answers the REST calls
databricks-sdk 0.60 makes for `DatabricksPipesCompute` (jobs runs submit/get/cancel/get-output at
/api/2.1 or /api/2.2, DBFS /api/2.0/dbfs/*, Files /api/2.0/fs/*), so the real WorkspaceClient,
PipesDatabricksClient, Pipes context injector and message reader run unchanged against it.

The workspace's files (volumes, DBFS) live in a temporary folder. A submitted run either
- is *executed* (`FakeDatabricks.cluster` set, no scripted run queued): the fake starts the
  `spark_python_task` as its own process, as a job cluster would: the python file is read from the
  workspace files, the environment is only what the runtime and the spec's `spark_env_vars` give
  (`{{secrets/scope/key}}` resolved from the fake's secret scopes, never the orchestrator's
  environment), the spec's libraries decide which distributions it can import, and `/Volumes`,
  `/dbfs` are mounted onto the workspace folder (`fake_cluster/sitecustomize.py`). Its state follows
  the process: PENDING -> RUNNING -> TERMINATED with SUCCESS or FAILED (the last line of stderr as the
  task error); `runs/cancel` kills its process group (CANCELED); the spec's `timeout_seconds` does too
  (TIMEDOUT). With DBFS, the driver's stdout/stderr are delivered to `dbfs:/cluster-logs/...`;
- or follows the next scripted `RunScript`: PENDING -> RUNNING -> TERMINATED with a result state, or
  RUNNING until cancelled; its `remote` callable plays the cluster.
Every request is recorded (method, path, query, body, auth header) for the tests to inspect.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from dagster_pipes import (
    PIPES_PROTOCOL_VERSION,
    PIPES_PROTOCOL_VERSION_FIELD,
    decode_param,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
_BOOT_DIR = Path(__file__).resolve().parent / "fake_cluster"
_SECRET_REF = re.compile(r"^\{\{secrets/([\w.-]+/[\w.-]+)\}\}$")
PROJECT = "callintel_dagster"
# What a Databricks ML GPU runtime ships itself, whatever the libraries: Spark, its Python bridge and
# its Spark Connect client's libraries, CUDA builds of torch and torchaudio.
RUNTIME_DISTRIBUTIONS = ("pyspark", "py4j", "grpcio-status", "zstandard", "torch", "torchaudio")


def dbfs_key(path: str) -> str:
    """Where a DBFS path (`dbfs:/x` or `/x` in the DBFS API) is on the cluster: under the /dbfs mount."""
    return "/dbfs/" + path.removeprefix("dbfs:").lstrip("/")


def _requirement_closure(requirements: Iterable[Requirement], extras_of_project: dict[str, list[str]]) -> set[str]:
    """Every distribution `requirements` install, by walking the installed packages' metadata; the
    project's own `name[extra]` references expand to its extras in `extras_of_project`."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name == PROJECT.replace("_", "-"):
            todo += [Requirement(r) for extra in requirement.extras for r in extras_of_project[extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            wanted = [""] + sorted(requirement.extras)
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in wanted):
                todo.append(child)
    return seen


def modules_missing_on_cluster(installed_extras: Iterable[str], pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """Top-level modules a cluster that installed only the project with `installed_extras` would not
    have. A Databricks ML runtime ships Spark, torch and hundreds of common libraries (tabulate,
    requests, ...), so what is withheld is what only this project would bring: the requirements of
    its other extras and the Dagster/Databricks-SDK family they pull in."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    base = [Requirement(r) for r in project["dependencies"]]
    on_cluster = _requirement_closure(base + [Requirement(f"{PROJECT}[{e}]") for e in installed_extras], extras)
    on_cluster |= _requirement_closure([Requirement(d) for d in RUNTIME_DISTRIBUTIONS], extras)
    direct = {canonicalize_name(Requirement(r).name) for rs in extras.values() for r in rs} - {PROJECT.replace("_", "-")}
    family = {d for d in _requirement_closure([Requirement(f"{PROJECT}[{e}]") for e in extras], extras)
              if d.startswith(("dagster", "databricks"))}
    modules_of: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(canonicalize_name(distribution), set()).add(module)
    provided = set().union(*(modules_of.get(d, set()) for d in on_cluster))
    missing = set().union(*(modules_of.get(d, set()) for d in (direct | family) - on_cluster))
    return sorted(m for m in missing - provided if m.isidentifier())


@dataclass
class FakeCluster:
    """How the fake executes `spark_python_task`s: this interpreter, the project source standing in
    for the installed wheel, a local Spark for the cluster's session, the workspace's secret scopes."""

    python: str = sys.executable
    project_root: Path = REPO_ROOT
    secrets: dict[str, str] = field(default_factory=dict)
    spark_master: str = "local[1]"

    def environment(self, run_dir: Path, mount_root: Path, task: dict[str, Any], missing: list[str]) -> dict[str, str]:
        """A clean environment: the runtime's own variables, then the spec's `spark_env_vars` with
        secret references resolved. Raises KeyError naming an unknown secret."""
        cluster = task["new_cluster"]
        conf = {
            "spark.ui.enabled": "false",
            # Set by Databricks on every cluster; dagster-pipes' DBFS writer reads them.
            "spark.databricks.clusterUsageTags.clusterLogDeliveryEnabled": "true",
            "spark.databricks.clusterUsageTags.clusterLogDestination": "dbfs:/cluster-logs",
            "spark.databricks.clusterUsageTags.clusterId": run_dir.name,
            # GPU scheduling confs: this machine has no GPU for local Spark to hand out.
            **{k: v for k, v in cluster.get("spark_conf", {}).items() if ".resource.gpu." not in k},
        }
        submit_args = " ".join(f"--conf {k}={v}" for k, v in conf.items())
        env = {
            "PATH": os.pathsep.join([str(Path(self.python).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(run_dir / "home"),
            "TMPDIR": str(run_dir / "tmp"),
            "LANG": "C.UTF-8",
            "DATABRICKS_RUNTIME_VERSION": cluster["spark_version"].split(".x")[0],
            "PYTHONPATH": os.pathsep.join([str(_BOOT_DIR), str(self.project_root)]),
            "PYSPARK_PYTHON": self.python,
            "PYSPARK_SUBMIT_ARGS": f"--master {self.spark_master} --driver-memory 1g {submit_args} pyspark-shell",
            "CALLINTEL_FAKE_CLUSTER_MOUNT_ROOT": str(mount_root),
            "CALLINTEL_FAKE_CLUSTER_MISSING_MODULES": ",".join(missing),
        }
        for name, value in cluster.get("spark_env_vars", {}).items():
            reference = _SECRET_REF.match(value)
            env[name] = self.secrets[reference.group(1)] if reference else value
        for folder in ("home", "tmp"):
            (run_dir / folder).mkdir(parents=True, exist_ok=True)
        return env


@dataclass
class RemoteView:
    """What the job's code would see on the cluster (scripted runs)."""

    fake: FakeDatabricks
    task: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return self.task.get("new_cluster", {}).get("spark_env_vars", {})

    def _key(self, path: str) -> str:
        return dbfs_key(path) if self.task["spark_python_task"]["parameters"][-1] == "dbfs" else path

    @property
    def pipes_context(self) -> dict[str, Any]:
        return json.loads(self.fake.files[self._key(decode_param(self.env["DAGSTER_PIPES_CONTEXT"])["path"])])

    def write_file(self, path: str, data: bytes) -> None:
        self.fake.put_file(dbfs_key(path) if path.startswith("dbfs:") else path, data)

    def send_pipes_messages(self, messages: list[dict[str, Any]]) -> None:
        """Write `messages` as the first Pipes message chunk, as the remote message writer does."""
        directory = self._key(decode_param(self.env["DAGSTER_PIPES_MESSAGES"])["path"])
        lines = [json.dumps({PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, **m}) for m in messages]
        self.fake.put_file(f"{directory}/1.json", "\n".join(lines).encode())


def pipes_message(method: str, **params: Any) -> dict[str, Any]:
    return {"method": method, "params": params}


@dataclass
class RunScript:
    """How one scripted run behaves. `result_state=None` means it never finishes by itself."""

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
    script: RunScript | None
    polls: int = 0
    life_cycle: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    task_error: str | None = None
    # Executed runs: the process, its folder, and every life-cycle state it went through.
    process: subprocess.Popen | None = None
    run_dir: Path | None = None
    states: list[str] = field(default_factory=lambda: ["PENDING"])
    cancel_requested: bool = False

    def move_to(self, life_cycle: str, result_state: str | None = None, message: str = "") -> None:
        self.life_cycle, self.result_state, self.state_message = life_cycle, result_state, message
        if self.states[-1] != life_cycle:
            self.states.append(life_cycle)

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
    root: Path
    cluster: FakeCluster | None = None
    scripts: list[RunScript] = field(default_factory=list)
    runs: dict[int, _Run] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    host: str = ""
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def submitted(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/jobs/runs/submit")]

    # ---- the workspace's files, keyed by where a cluster sees them (/Volumes/..., /dbfs/...) ----

    @property
    def store(self) -> Path:
        return self.root / "workspace"

    def _disk(self, key: str) -> Path:
        return self.store / key.lstrip("/")

    @property
    def files(self) -> dict[str, bytes]:
        """Every workspace file outside the delivered cluster logs."""
        found = {"/" + str(p.relative_to(self.store)): p for p in self.store.rglob("*") if p.is_file()}
        return {k: p.read_bytes() for k, p in sorted(found.items()) if not k.startswith("/dbfs/cluster-logs/")}

    def put_file(self, key: str, data: bytes) -> None:
        target = self._disk(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def _children(self, key: str) -> list[tuple[str, bool, int]]:
        folder = self._disk(key)
        return sorted(
            (posixpath.join(key, p.name), p.is_dir(), 0 if p.is_dir() else p.stat().st_size) for p in folder.iterdir()
        )

    # ---- jobs -------------------------------------------------------------------------------

    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        run_id = 1000 + len(self.runs)
        # A queued script wins; without one the run is executed on the cluster, or scripted to succeed.
        if self.scripts:
            script = self.scripts.pop(0)
        else:
            script = None if self.cluster else RunScript()
        run = _Run(run_id=run_id, task_run_id=run_id + 500_000, body=body, script=script)
        self.runs[run_id] = run
        if run.script is None:
            threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        elif run.script.remote:
            run.script.remote(RemoteView(self, body["tasks"][0]))
        return {"run_id": run_id}

    def _execute(self, run: _Run) -> None:
        """The job cluster: install the libraries, start the task's process, follow it to its end."""
        task = run.body["tasks"][0]
        run.run_dir = self.root / "clusters" / f"run-{run.run_id}"
        try:
            missing = modules_missing_on_cluster(self._installed_extras(task["libraries"]))
            env = self.cluster.environment(run.run_dir, self.store, task, missing)
            script = self._python_file(task["spark_python_task"]["python_file"])
        except (KeyError, ValueError, FileNotFoundError) as exc:
            with self._lock:
                run.move_to("INTERNAL_ERROR", "FAILED", f"Run failed to start: {exc}")
            return
        logs = self._disk(dbfs_key(f"/cluster-logs/{run.run_dir.name}/driver"))
        logs.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if run.cancel_requested:
                run.move_to("TERMINATED", "CANCELED", "Run cancelled.")
                return
            with open(logs / "stdout", "wb") as stdout, open(logs / "stderr", "wb") as stderr:
                run.process = subprocess.Popen(
                    [self.cluster.python, str(script), *task["spark_python_task"].get("parameters", [])],
                    env=env, cwd=run.run_dir, stdout=stdout, stderr=stderr, start_new_session=True,
                )
            run.move_to("RUNNING")
        timeout = run.body.get("timeout_seconds") or task.get("timeout_seconds") or None
        try:
            code = run.process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            self._kill(run)
            code, timed_out = run.process.wait(), True
        with self._lock:
            if run.cancel_requested:
                run.move_to("TERMINATED", "CANCELED", "Run cancelled.")
            elif timed_out:
                run.move_to("TERMINATED", "TIMEDOUT", f"Run timed out after {timeout} s.")
            elif code == 0:
                run.move_to("TERMINATED", "SUCCESS")
            else:
                lines = (logs / "stderr").read_text(errors="replace").strip().splitlines()
                run.task_error = lines[-1] if lines else f"exit code {code}"
                run.move_to("TERMINATED", "FAILED", "Workload failed, see run output for details")

    @staticmethod
    def _installed_extras(libraries: list[dict[str, Any]]) -> list[str]:
        """The project's extras the spec installs, after checking every other library is pinned to a
        version this machine has (what pip would find); a bad library fails the run's start."""
        extras: list[str] = []
        for library in libraries:
            if "whl" in library:
                continue
            requirement = Requirement(library["pypi"]["package"])
            if canonicalize_name(requirement.name) == PROJECT.replace("_", "-"):
                extras += sorted(requirement.extras)
                continue
            version = importlib.metadata.version(requirement.name)
            if not requirement.specifier or version not in requirement.specifier:
                raise ValueError(f"library {requirement} cannot be installed (this machine has {version})")
        return extras

    def _python_file(self, python_file: str) -> Path:
        key = dbfs_key(python_file) if python_file.startswith("dbfs:") else python_file
        path = self._disk(key)
        if not path.is_file():
            raise FileNotFoundError(f"python file {python_file} does not exist")
        return path

    def _kill(self, run: _Run) -> None:
        """The whole process group: the driver, Spark's JVM and its Python workers."""
        if run.process is not None and run.process.poll() is None:
            try:
                os.killpg(run.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _get_run(self, run_id: int) -> dict[str, Any]:
        run = self.runs[run_id]
        if run.script is not None and run.life_cycle not in ("TERMINATED", "TERMINATING"):
            run.polls += 1
            if run.polls > 1:
                run.move_to("RUNNING")
            if run.script.result_state and run.polls > run.script.running_polls:
                run.move_to("TERMINATED", run.script.result_state, run.script.state_message)
        return run.as_json(self.host)

    def _cancel(self, run_id: int) -> dict[str, Any]:
        run = self.runs[run_id]
        self.cancelled.append(run_id)
        if run.script is None:
            run.cancel_requested = True
            if run.life_cycle == "RUNNING":
                run.move_to("TERMINATING", None, "Run cancellation requested.")
                self._kill(run)
        elif run.life_cycle != "TERMINATED":
            run.move_to("TERMINATED", "CANCELED", "Run cancelled.")
        return {}

    def cancel(self, run_id: int) -> None:
        """Cancel from the workspace UI (not through the orchestrator)."""
        with self._lock:
            self._cancel(run_id)

    def _get_output(self, task_run_id: int) -> dict[str, Any]:
        run = {r.task_run_id: r for r in self.runs.values()}[task_run_id]
        output: dict[str, Any] = {"metadata": run.as_json(self.host)}
        error = run.task_error if run.script is None else run.script.task_error
        if error and run.result_state == "FAILED":
            output["error"] = error
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
            except (KeyError, FileNotFoundError) as missing:
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
        key, disk = dbfs_key(target), self._disk(dbfs_key(target))
        if action == "mkdirs":
            disk.mkdir(parents=True, exist_ok=True)
        elif action == "put":
            self.put_file(key, base64.b64decode(body.get("contents", "")))
        elif action == "delete":
            if disk.is_dir():
                shutil.rmtree(disk)
            elif disk.exists():
                disk.unlink()
        elif action == "get-status":
            if disk.is_file():
                return 200, {"path": target, "is_dir": False, "file_size": disk.stat().st_size, "modification_time": 0}
            if disk.is_dir():
                return 200, {"path": target, "is_dir": True, "file_size": 0}
            raise KeyError(target)
        elif action == "read":
            data = disk.read_bytes()
            offset, length = int(query.get("offset", 0)), int(query.get("length", 1 << 20))
            chunk = data[offset : offset + length]
            return 200, {"bytes_read": len(chunk), "data": base64.b64encode(chunk).decode()}
        elif action == "list":
            if not disk.is_dir():
                raise KeyError(target)
            entries = [(p.removeprefix("/dbfs"), d, n) for p, d, n in self._children(key)]
            return 200, {"files": [{"path": p, "is_dir": d, "file_size": n} for p, d, n in entries]}
        else:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"dbfs/{action}"}
        return 200, {}

    def _files_api(self, method: str, target: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        disk = self._disk(target)
        if method == "PUT":
            if query.get("overwrite") == "false" and disk.exists():
                return 409, {"error_code": "ALREADY_EXISTS", "message": target}
            self.put_file(target, body)
            return 204, None
        if method == "GET":
            return 200, disk.read_bytes()
        if method == "DELETE":
            disk.unlink()
            return 204, None
        return 405, {"error_code": "BAD_REQUEST", "message": method}

    def _directories_api(self, method: str, target: str) -> tuple[int, Any]:
        target = target.rstrip("/") or "/"
        disk = self._disk(target)
        if method == "PUT":
            disk.mkdir(parents=True, exist_ok=True)
            return 204, None
        if not disk.is_dir():
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
            disk.rmdir()
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
    """`with FakeDatabricksServer(token) as fake:` serves on an ephemeral port; `fake.host` is its URL.
    With `cluster`, submitted runs are executed (module docstring); on exit, runs still going are killed."""

    def __init__(self, token: str, cluster: FakeCluster | None = None):
        self._root = Path(tempfile.mkdtemp(prefix="fake-databricks-"))
        self.fake = FakeDatabricks(token=token, root=self._root, cluster=cluster)
        self.fake.store.mkdir()
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
        for run in self.fake.runs.values():
            self.fake._kill(run)
            if run.process is not None:
                run.process.wait()
        shutil.rmtree(self._root, ignore_errors=True)
