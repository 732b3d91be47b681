"""Databricks execution path: the model stages on a GPU job cluster, and Delta tables via Spark SQL.

`DatabricksPipesCompute` is the production `CallCompute` (the project's GPU runner; the local
implementation is `LocalSparkCompute`). Assets are unchanged: they call `compute.map_calls(calls,
task, description)`, and this resource submits one Databricks *runs/submit* job per call, on a
fresh GPU job cluster, whose Python task is `callintel_dagster/databricks_entrypoint.py`. That thin
script opens Dagster Pipes, runs the same per-call engine task as Spark tasks (`mapInPandas`) on the
cluster's Spark session, writes one result row per call to the staging path and reports
materialization metadata. Pipes streams the script's logs and metadata back into the Dagster run
while the job runs; the resource then reads the results file and returns it like the local compute.

Why Pipes and not `databricks_pyspark_step_launcher`: the step launcher pickles the whole Dagster
step (context, resources, IO managers) and re-executes it on the cluster, so the cluster needs the
orchestrator's Dagster version, every resource's dependencies and its secrets; it is superseded
legacy in dagster-databricks. With Pipes only the per-call task (as a JSON spec) and the day's
call list travel, the asset body (quarantine, schema checks, MERGE) stays in the orchestrator,
and the cluster installs nothing but the project wheel's `engines` extra (the engines and
`dagster-pipes`; no Dagster, no pyspark or torch pins over the runtime's own builds).

The step-launcher path stays possible because nothing here is Pipes-specific but this resource: a
deployment that is mandated to use it binds `databricks_pyspark_step_launcher` (locally
`dg.ResourceDefinition.none_resource()`), `compute=LocalSparkCompute()` (on the cluster its
`getOrCreate()` returns the cluster's session) and `lakehouse=SparkDeltaLakehouse(...)`, whose
MERGE needs the delta-spark jars only a Databricks cluster has (it lives in `resources/lakehouse.py`).

Secrets never enter the job spec as values: the workspace token stays in the orchestrator (it
authenticates the REST calls) and cluster-side secrets are `{{secrets/<scope>/<key>}}` references
that Databricks resolves when the cluster starts.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from callintel_dagster.engines.task_spec import task_to_spec
from callintel_dagster.resources.compute import RESULT_COLUMNS, CallCompute, CallTask

ENTRYPOINT_ARG = "--pipes-io"
# The wheel's extra a GPU cluster installs (pyproject.toml): engines + dagster-pipes, nothing else.
CLUSTER_EXTRA = "engines"
_SECRET_REF = re.compile(r"^[\w.-]+/[\w.-]+$")
_FINAL_STATES = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}


class GpuClusterSpec(dg.Config):
    """The job cluster one model stage runs on (created for the run, terminated after it)."""

    spark_version: str = Field(
        default="15.4.x-gpu-ml-scala2.12",
        description="Databricks Runtime; a `-gpu-ml-` runtime ships CUDA, torch and transformers.",
    )
    node_type_id: str = Field(
        default="g5.xlarge", description="Worker/driver type, e.g. g5.xlarge (AWS) or Standard_NC4as_T4_v3 (Azure)."
    )
    num_workers: int = Field(default=1, description="GPU workers; each runs `calls_per_task` calls per Spark task.")
    spark_env_vars: dict[str, str] = Field(
        default_factory=lambda: {"OMP_NUM_THREADS": "4", "TOKENIZERS_PARALLELISM": "false"},
        description="Environment of driver and workers; OMP_NUM_THREADS caps CPU threads next to the GPU.",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=lambda: {"spark.task.resource.gpu.amount": "1"},
        description="Spark conf; one GPU per Spark task so two tasks never share a GPU's memory.",
    )
    data_security_mode: str = Field(
        default="SINGLE_USER", description="Unity Catalog access mode; ML runtimes need SINGLE_USER (dedicated)."
    )


def staging_kind(staging_path: str) -> str:
    """`volumes` for a Unity Catalog volume (`/Volumes/...`), `dbfs` for `dbfs:/...`."""
    if staging_path.startswith("dbfs:/"):
        return "dbfs"
    if staging_path.startswith("/Volumes/"):
        return "volumes"
    raise ValueError(f"staging path must start with /Volumes/ or dbfs:/, not {staging_path!r}")


def cluster_requirement(wheel: str) -> str:
    """The pip requirement that installs the project wheel with its cluster extra: a PEP 508 direct
    reference to the wheel where the cluster mounts it (volumes at /Volumes, DBFS at /dbfs)."""
    if not wheel.endswith(".whl"):
        raise ValueError(f"wheel must be a .whl file, not {wheel!r}")
    local = "/dbfs/" + wheel.removeprefix("dbfs:/") if wheel.startswith("dbfs:/") else wheel
    if not local.startswith("/"):
        raise ValueError(f"wheel must be on a volume (/Volumes/...), the workspace (/Workspace/...) or dbfs:/, not {wheel!r}")
    return f"callintel_dagster[{CLUSTER_EXTRA}] @ file://{local}"


def build_submit_spec(
    *,
    run_name: str,
    cluster: GpuClusterSpec,
    entrypoint_file: str,
    wheel: str,
    pip_packages: list[str],
    staging_path: str,
    secret_env: Mapping[str, str],
    timeout_seconds: int,
) -> dict[str, Any]:
    """The body of `POST /api/2.2/jobs/runs/submit`, as data: one Python task on a new GPU cluster.

    `secret_env` maps a cluster environment variable to a Databricks secret `scope/key`; it is
    rendered as a `{{secrets/scope/key}}` reference so no secret value is ever part of the spec.
    Pipes adds its bootstrap variables to `spark_env_vars` when the job is submitted."""
    unpinned = [p for p in pip_packages if "==" not in p]
    if unpinned:
        raise ValueError(f"pip packages must be pinned with '==' (the cluster must match the wheel): {unpinned}")
    bad_refs = {k: v for k, v in secret_env.items() if not _SECRET_REF.match(v)}
    if bad_refs:
        raise ValueError(f"secret_env values must be 'scope/key' secret references: {sorted(bad_refs)}")
    clashes = sorted(set(secret_env) & set(cluster.spark_env_vars))
    if clashes:
        raise ValueError(f"variables set both as plain env and as secrets: {clashes}")
    env = {**cluster.spark_env_vars, **{var: f"{{{{secrets/{ref}}}}}" for var, ref in secret_env.items()}}
    task = {
        "task_key": "callintel_model_stage",
        "new_cluster": {
            "spark_version": cluster.spark_version,
            "node_type_id": cluster.node_type_id,
            "num_workers": cluster.num_workers,
            "spark_env_vars": env,
            "spark_conf": dict(cluster.spark_conf),
            "data_security_mode": cluster.data_security_mode,
        },
        "spark_python_task": {
            "python_file": entrypoint_file,
            "parameters": [ENTRYPOINT_ARG, staging_kind(staging_path)],
        },
        "libraries": [{"pypi": {"package": p}} for p in [cluster_requirement(wheel), *pip_packages]],
        "timeout_seconds": timeout_seconds,
    }
    return {"run_name": run_name, "timeout_seconds": timeout_seconds, "tasks": [task]}


def pipes_extras(
    calls: pd.DataFrame, task: CallTask, description: str, results_path: str, calls_per_task: int
) -> dict[str, Any]:
    """What `databricks_entrypoint` reads from the Pipes context. It travels in the injected context
    file, not in the job spec. The task is a JSON spec (`engines/task_spec.py`): data with an
    allow-list of fields and no secret, never a pickle the cluster would execute on load."""
    return {
        "calls": calls.astype(str).to_dict("records"),
        "task": task_to_spec(task),
        "description": description,
        "results_path": results_path,
        "calls_per_task": calls_per_task,
    }


def _client_class():
    """`PipesDatabricksClient` with a deadline and errors that name the run.

    The stock client polls until the run ends and raises a bare "Error running Databricks job".
    This subclass overrides its polling hook (`_poll_til_success`, dagster-databricks pinned to
    0.29.27) to cancel the run once `timeout_seconds` pass, so a stuck cluster never holds a Dagster
    step forever, and to raise a `dg.Failure` with the run id, its page URL, the final state and the
    task's error from `runs/get-output`. Built lazily: dagster_databricks imports pyspark."""
    from dagster_databricks import PipesDatabricksClient

    class DeadlinePipesDatabricksClient(PipesDatabricksClient):
        def __init__(self, *, timeout_seconds: float, **kwargs: Any):
            super().__init__(**kwargs)
            self.timeout_seconds = timeout_seconds

        def _poll_til_success(self, context, run_id: int) -> None:
            deadline = time.monotonic() + self.timeout_seconds
            last_state = None
            while True:
                state = self._get_run_state(run_id)
                life_cycle = state.life_cycle_state.value if state.life_cycle_state else None
                if life_cycle != last_state:
                    context.log.info(f"Databricks run {run_id}: {life_cycle}")
                    last_state = life_cycle
                if life_cycle in _FINAL_STATES:
                    result = state.result_state.value if state.result_state else None
                    if result == "SUCCESS":
                        return
                    if result == "TIMEDOUT":  # the run spec carries the same deadline; Databricks may act first
                        raise self._failure(run_id, f"timed out after {self.timeout_seconds:g} s and was ended by Databricks")
                    raise self._failure(run_id, f"ended {life_cycle}/{result}: {state.state_message or ''}")
                if time.monotonic() >= deadline:
                    context.log.warning(f"Databricks run {run_id} exceeded {self.timeout_seconds:g} s; cancelling it")
                    self.client.jobs.cancel_run(run_id)
                    self._poll_til_terminating(run_id)
                    raise self._failure(run_id, f"timed out after {self.timeout_seconds:g} s and was cancelled")
                time.sleep(self.poll_interval_seconds)

        def _failure(self, run_id: int, what: str) -> dg.Failure:
            run = self.client.jobs.get_run(run_id)
            errors = [
                self.client.jobs.get_run_output(task.run_id).error
                for task in run.tasks or []
                if task.run_id is not None and task.state and task.state.result_state
            ]
            detail = "; ".join(e for e in errors if e)
            return dg.Failure(
                description=f"Databricks run {run_id} {what}" + (f" (task error: {detail})" if detail else ""),
                metadata={"databricks_run_id": str(run_id), "databricks_run_url": dg.MetadataValue.url(run.run_page_url or "")},
            )

    return DeadlinePipesDatabricksClient


class DatabricksPipesCompute(CallCompute):
    """Runs a model stage's per-call task on a Databricks GPU job cluster through Dagster Pipes.

    Bind with `host=dg.EnvVar("DATABRICKS_HOST")`, `token=dg.EnvVar("DATABRICKS_TOKEN")`."""

    host: str = Field(description="Workspace URL, e.g. https://adb-123.azuredatabricks.net.")
    token: str = Field(description="Personal access / service-principal token for the REST API (orchestrator only).")
    cluster: GpuClusterSpec = Field(default_factory=GpuClusterSpec, description="The GPU job cluster.")
    entrypoint_file: str = Field(
        description="Uploaded copy of callintel_dagster/databricks_entrypoint.py (/Volumes/..., dbfs:/... or /Workspace/...)."
    )
    wheel: str = Field(description="The project wheel on a volume or DBFS, e.g. /Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl.")
    pip_packages: list[str] = Field(
        default_factory=list,
        description="Pinned pip requirements the cluster needs beyond the wheel's `engines` extra (which has dagster-pipes).",
    )
    staging_path: str = Field(
        description="Where Pipes and the results files live: a volume (/Volumes/cat/schema/vol/...) or dbfs:/...; "
        "with dbfs:/ Pipes itself uses dbfs:/tmp, as dagster-databricks does."
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="Cluster env var -> Databricks secret 'scope/key' (e.g. HF_TOKEN -> callintel/hf-token)."
    )
    timeout_seconds: int = Field(default=3 * 3600, description="Run timeout, enforced by Databricks and by this client.")
    poll_interval_seconds: float = Field(default=10.0, description="Seconds between run-state and Pipes message polls.")
    calls_per_task: int = Field(default=4, description="Calls per Spark task on the cluster (one model load each).")

    def _workspace(self):
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient(host=self.host, token=self.token, auth_type="pat")

    def _pipes_client(self, workspace):
        from dagster_databricks import PipesDbfsContextInjector, PipesDbfsMessageReader
        from dagster_databricks.pipes import (
            PipesUnityCatalogVolumesContextInjector,
            PipesUnityCatalogVolumesMessageReader,
        )

        if staging_kind(self.staging_path) == "volumes":
            injector = PipesUnityCatalogVolumesContextInjector(client=workspace, volume_path=self.staging_path)
            reader = PipesUnityCatalogVolumesMessageReader(
                client=workspace, volume_path=self.staging_path, interval=self.poll_interval_seconds
            )
        else:
            injector = PipesDbfsContextInjector(client=workspace)
            reader = PipesDbfsMessageReader(
                client=workspace, interval=self.poll_interval_seconds, include_stdio_in_messages=True
            )
        return _client_class()(
            client=workspace,
            context_injector=injector,
            message_reader=reader,
            poll_interval_seconds=self.poll_interval_seconds,
            timeout_seconds=self.timeout_seconds,
        )

    def submit_spec(self, run_name: str) -> dict[str, Any]:
        return build_submit_spec(
            run_name=run_name,
            cluster=self.cluster,
            entrypoint_file=self.entrypoint_file,
            wheel=self.wheel,
            pip_packages=self.pip_packages,
            staging_path=self.staging_path,
            secret_env=self.secret_env,
            timeout_seconds=self.timeout_seconds,
        )

    def map_calls(self, calls: pd.DataFrame, task: CallTask, description: str) -> pd.DataFrame:
        if calls.empty:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        from databricks.sdk.service.jobs import SubmitTask

        context = dg.AssetExecutionContext.get()
        workspace = self._workspace()
        results_path = f"{self.staging_path.rstrip('/')}/results/{context.run_id}-{uuid.uuid4().hex}.parquet"
        spec = self.submit_spec(run_name=description)
        invocation = self._pipes_client(workspace).run(
            context=context,
            task=SubmitTask.from_dict(spec.pop("tasks")[0]),
            submit_args=spec,
            extras=pipes_extras(calls, task, description, results_path, self.calls_per_task),
        )
        # The asset yields its own MaterializeResult after merging; the cluster's metadata (and the
        # run id/URL) join that event instead of being a second materialization.
        for reported in invocation.get_results(implicit_materializations=False):
            if isinstance(reported, dg.MaterializeResult) and reported.metadata:
                context.add_asset_metadata(dict(reported.metadata), asset_key=reported.asset_key)
        return _read_results(workspace, results_path)[RESULT_COLUMNS]


def _read_results(workspace, path: str) -> pd.DataFrame:
    """Download and delete the results file the entrypoint wrote (Files API or DBFS API)."""
    if staging_kind(path) == "volumes":
        from databricks.sdk.service.files import FilesAPI

        files = FilesAPI(workspace.api_client)
        data = files.download(path).contents.read()
        files.delete(path)
    else:
        dbfs_path = path.removeprefix("dbfs:")
        data = workspace.dbfs.download(dbfs_path).read()
        workspace.dbfs.delete(dbfs_path)
    return pd.read_parquet(io.BytesIO(data))
