"""The Databricks path: job spec as data, the Pipes client against a fake workspace over real HTTP,
the submitted entrypoint executed by that workspace's loopback cluster (its own process, clean
environment, engines extra only, local Spark), and the MERGE INTO SQL."""

import base64
import binascii
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import sys
import threading
import time
import tomllib
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile
from dagster._core.pipes import utils as pipes_utils
from dagster_pipes import decode_param

from callintel_dagster.engines import task_spec
from callintel_dagster.engines.audio import sha256_of
from callintel_dagster.engines.characteristics import CharacteristicsTask
from callintel_dagster.engines.task_spec import (
    TaskSpecError,
    task_from_spec,
    task_to_spec,
)
from callintel_dagster.engines.tone import ToneConfig, ToneTask
from callintel_dagster.resources.blob_store import redacted_copy_key
from callintel_dagster.resources.compute import RESULT_COLUMNS, CallCompute
from callintel_dagster.resources.databricks import (
    DatabricksPipesCompute,
    GpuClusterSpec,
    build_submit_spec,
    pipes_extras,
    staging_kind,
)
from callintel_dagster.resources.lakehouse import SparkDeltaLakehouse, merge_sql, vacuum_sql
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster_tests.fake_databricks_server import (
    FakeCluster,
    FakeDatabricksServer,
    RemoteView,
    RunScript,
    modules_missing_on_cluster,
    pipes_message,
)

TOKEN = "dapi-fake-0123456789abcdef"
CALLS = pd.DataFrame({"call_id": ["c1", "c2"], "blob_key": ["2026-11-23/c1.wav", "2026-11-23/c2.wav"]})
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fast_pipes_reader(monkeypatch):
    """Pipes' message reader sleeps 1 s per loop and, when the remote never sent `closed` (a failed
    or cancelled run), waits 10 s after the run for late messages; seconds in a test, not 12."""
    monkeypatch.setattr(pipes_utils, "DEFAULT_SLEEP_INTERVAL", 0.02)
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)


@dg.asset
def gpu_stage(context: dg.AssetExecutionContext, compute: CallCompute) -> dg.MaterializeResult:
    results = compute.map_calls(CALLS, CharacteristicsTask(), "callintel test 2026-11-23")
    return dg.MaterializeResult(metadata={"ok_calls": int((results["status"] == "ok").sum())})


def _audio_call(folder: Path, call_id: str) -> dict[str, str]:
    """A two-second recording and its model-stage call row (values as strings, as Spark sends them)."""
    path = folder / f"{call_id}.wav"
    soundfile.write(path, 0.1 * np.sin(np.arange(2 * 16_000) / 5), 16_000, subtype="PCM_16")
    turns = [
        {"turn_index": 0, "speaker": "SPEAKER_00", "role": "agent", "start_s": 0.0, "end_s": 0.9,
         "text": "thank you for calling", "confidence": 0.9, "n_words": 4, "phi_kinds": "[]"},
        {"turn_index": 1, "speaker": "SPEAKER_01", "role": "customer", "start_s": 1.0, "end_s": 2.0,
         "text": "I have a billing question", "confidence": 0.9, "n_words": 5, "phi_kinds": "[]"},
    ]
    return {
        "call_id": call_id, "audio_url": f"file://{path}", "size_bytes": str(path.stat().st_size),
        "checksum_sha256": sha256_of(path), "duration_s": "2.0", "turns_json": json.dumps(turns), "tone_json": "[]",
    }


def compute_for(host: str, staging_path: str = "/Volumes/main/callintel/staging", **overrides) -> DatabricksPipesCompute:
    config = {
        "host": host,
        "token": TOKEN,
        "entrypoint_file": "/Volumes/main/callintel/artifacts/databricks_entrypoint.py",
        "wheel": "/Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl",
        "staging_path": staging_path,
        "secret_env": {"HF_TOKEN": "callintel/hf-token"},
        "poll_interval_seconds": 0.05,
        "timeout_seconds": 30,
        **overrides,
    }
    return DatabricksPipesCompute(**config)


def simulated_cluster(view: RemoteView) -> None:
    """Does what databricks_entrypoint does on a cluster: results file + Pipes messages."""
    extras = view.pipes_context["extras"]
    results = pd.DataFrame(
        [{"call_id": c["call_id"], "status": "ok", "error": None, "payload": "{}", "seconds": 1.5} for c in extras["calls"]]
    )
    buffer = io.BytesIO()
    results.to_parquet(buffer, index=False)
    view.write_file(extras["results_path"], buffer.getvalue())
    view.send_pipes_messages(
        [
            pipes_message("opened", extras={}),
            pipes_message("log", message="2 calls on the GPU cluster", level="INFO"),
            pipes_message(
                "report_asset_materialization",
                asset_key="gpu_stage",
                metadata={"databricks_cuda_devices": {"raw_value": 1, "type": "int"}},
                data_version=None,
            ),
            pipes_message("closed"),
        ]
    )


def materialize(compute: DatabricksPipesCompute) -> tuple[dg.ExecuteInProcessResult, str]:
    """Runs `gpu_stage`; returns the result and every event-log entry of the run as text."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([gpu_stage], resources={"compute": compute}, instance=instance, raise_on_error=False)
        return result, "\n".join(str(entry) for entry in instance.all_logs(result.run_id))


def failure_description(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def test_submit_spec_is_plain_data_with_secret_references_only():
    spec = build_submit_spec(
        run_name="callintel transcripts 2026-11-23",
        cluster=GpuClusterSpec(node_type_id="Standard_NC4as_T4_v3", num_workers=2),
        entrypoint_file="/Volumes/main/callintel/artifacts/databricks_entrypoint.py",
        wheel="/Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl",
        pip_packages=["dagster-pipes==1.13.27"],
        staging_path="/Volumes/main/callintel/staging",
        secret_env={"HF_TOKEN": "callintel/hf-token"},
        timeout_seconds=7200,
    )
    assert spec == {
        "run_name": "callintel transcripts 2026-11-23",
        "timeout_seconds": 7200,
        "tasks": [
            {
                "task_key": "callintel_model_stage",
                "new_cluster": {
                    "spark_version": "15.4.x-gpu-ml-scala2.12",
                    "node_type_id": "Standard_NC4as_T4_v3",
                    "num_workers": 2,
                    "spark_env_vars": {
                        "OMP_NUM_THREADS": "4",
                        "TOKENIZERS_PARALLELISM": "false",
                        "HF_TOKEN": "{{secrets/callintel/hf-token}}",
                    },
                    "spark_conf": {"spark.task.resource.gpu.amount": "1"},
                    "data_security_mode": "SINGLE_USER",
                },
                "spark_python_task": {
                    "python_file": "/Volumes/main/callintel/artifacts/databricks_entrypoint.py",
                    "parameters": ["--pipes-io", "volumes"],
                },
                "libraries": [
                    {"pypi": {"package": "callintel_dagster[engines] @ "
                              "file:///Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl"}},
                    {"pypi": {"package": "dagster-pipes==1.13.27"}},
                ],
                "timeout_seconds": 7200,
            }
        ],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pip_packages": ["faster-whisper"]}, "pinned"),
        ({"secret_env": {"HF_TOKEN": "hf_literal value"}}, "scope/key"),
        ({"secret_env": {"OMP_NUM_THREADS": "callintel/x"}}, "both"),
        ({"staging_path": "s3://bucket/staging"}, "/Volumes/"),
    ],
)
def test_submit_spec_rejects_unpinned_packages_literal_secrets_and_unknown_staging(change, message):
    args = {
        "run_name": "r", "cluster": GpuClusterSpec(), "entrypoint_file": "/Volumes/a/b/c/e.py",
        "wheel": "/Volumes/a/b/c/w.whl", "pip_packages": [], "staging_path": "dbfs:/callintel",
        "secret_env": {}, "timeout_seconds": 60,
    }
    with pytest.raises(ValueError, match=message):
        build_submit_spec(**{**args, **change})


@pytest.mark.parametrize("staging_path", ["/Volumes/main/callintel/staging", "dbfs:/callintel/staging"])
def test_success_streams_metadata_back_and_returns_results(staging_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(remote=simulated_cluster))
        result, logs = materialize(compute_for(fake.host, staging_path))

    assert result.success
    (materialization,) = result.asset_materializations_for_node("gpu_stage")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["ok_calls"] == 2
    assert metadata["databricks_cuda_devices"] == 1
    assert metadata["Databricks Job Run ID"] == "1000"
    assert "2 calls on the GPU cluster" in logs

    (submitted,) = fake.submitted
    env = submitted["tasks"][0]["new_cluster"]["spark_env_vars"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(env)
    assert env["HF_TOKEN"] == "{{secrets/callintel/hf-token}}"
    assert submitted["tasks"][0]["spark_python_task"]["parameters"] == ["--pipes-io", staging_kind(staging_path)]
    # Pipes' temp dirs and the results file are cleaned up.
    assert not fake.files
    # The token authenticates every call and appears nowhere else.
    assert all(r.authorization == f"Bearer {TOKEN}" for r in fake.requests)
    assert TOKEN not in json.dumps([r.body for r in fake.requests], default=str)
    assert TOKEN not in logs
    assert TOKEN not in caplog.text


def test_failure_names_the_run_state_and_task_error(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(
            RunScript(
                result_state="FAILED",
                state_message="Workload failed, see run output for details",
                task_error="CUDA out of memory",
            )
        )
        result, logs = materialize(compute_for(fake.host))
    assert not result.success
    description = failure_description(result)
    assert "Databricks run 1000 ended TERMINATED/FAILED" in description
    assert "Workload failed, see run output for details" in description
    assert "CUDA out of memory" in description
    assert TOKEN not in logs + caplog.text


def test_run_cancelled_in_the_workspace_fails_the_step():
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(result_state="CANCELED", state_message="Run cancelled by alice@example.org"))
        result, logs = materialize(compute_for(fake.host))
    assert not result.success
    assert "Databricks run 1000 ended TERMINATED/CANCELED: Run cancelled by alice@example.org" in failure_description(result)
    assert fake.cancelled == []


def test_a_run_databricks_timed_out_itself_is_reported_as_the_timeout():
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(result_state="TIMEDOUT", state_message="Run timed out after 30 s."))
        result, logs = materialize(compute_for(fake.host, timeout_seconds=30))
    assert not result.success
    assert "Databricks run 1000 timed out after 30 s and was ended by Databricks" in failure_description(result)
    assert fake.cancelled == []


def test_timeout_cancels_the_run():
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(result_state=None))
        result, logs = materialize(compute_for(fake.host, timeout_seconds=1))
    assert not result.success
    assert "Databricks run 1000 timed out after 1 s and was cancelled" in failure_description(result)
    assert fake.cancelled == [1000]
    assert fake.runs[1000].result_state == "CANCELED"


# --- the submitted entrypoint, executed by the loopback workspace's cluster --------------------

ENTRYPOINT_FILE = "/Volumes/main/callintel/artifacts/databricks_entrypoint.py"
CLUSTER_HF_TOKEN = "hf_cluster_scope_value_0123456789"
# A run's process starts a JVM and Python workers: tens of seconds on a busy 2-core machine.
CLUSTER_TIMEOUT_S = 300


@pytest.fixture
def workspace(monkeypatch):
    """A loopback workspace whose runs execute: the entrypoint uploaded where the spec points, the
    cluster's secret scope holding the HF token. The orchestrator's own environment holds a canary
    that must not reach the cluster."""
    monkeypatch.setenv("CALLINTEL_ORCHESTRATOR_ONLY_SECRET", CANARY)
    with FakeDatabricksServer(TOKEN, cluster=FakeCluster(secrets={"callintel/hf-token": CLUSTER_HF_TOKEN})) as fake:
        fake.put_file(ENTRYPOINT_FILE, (REPO_ROOT / "callintel_dagster" / "databricks_entrypoint.py").read_bytes())
        yield fake


def executed_compute(host: str, **overrides) -> DatabricksPipesCompute:
    return compute_for(host, **{"timeout_seconds": CLUSTER_TIMEOUT_S, "poll_interval_seconds": 0.5, **overrides})


def _stage_over(calls: pd.DataFrame, task=None):
    @dg.asset(name="gpu_stage")
    def stage(context: dg.AssetExecutionContext, compute: CallCompute) -> dg.MaterializeResult:
        results = compute.map_calls(calls, task or CharacteristicsTask(), "callintel test 2026-11-23")
        return dg.MaterializeResult(metadata={
            "ok_calls": int((results["status"] == "ok").sum()),
            "results": dg.MetadataValue.json(results.drop(columns=["seconds"]).to_dict("records")),
        })

    return stage


def materialize_stage(stage, compute) -> tuple[dg.ExecuteInProcessResult, str]:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([stage], resources={"compute": compute}, instance=instance, raise_on_error=False)
        return result, "\n".join(str(entry) for entry in instance.all_logs(result.run_id))


def _hanging_call(folder: Path) -> pd.DataFrame:
    """A call whose recording is a FIFO nobody writes to: reading it blocks, like a hung mount."""
    fifo = folder / "stuck.wav"
    os.mkfifo(fifo)
    return pd.DataFrame([{**_audio_call(folder, "c1"), "audio_url": f"file://{fifo}", "size_bytes": "0"}])


def _wait_until_finished(fake, run_id: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while fake.runs[run_id].life_cycle != "TERMINATED" and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("staging_path", ["/Volumes/main/callintel/staging", "dbfs:/callintel/staging"])
def test_the_cluster_runs_the_entrypoint_and_reports_back_through_pipes(workspace, tmp_path, staging_path):
    """The real round trip: Pipes context uploaded through the Files/DBFS API, the entrypoint started
    by the workspace with only the spec's environment and the engines extra (Dagster is not
    importable there), the task run as Spark tasks, results and logs read back through the API."""
    calls = pd.DataFrame([_audio_call(tmp_path, call_id) for call_id in ("c1", "c2")])
    result, logs = materialize_stage(_stage_over(calls), executed_compute(workspace.host, staging_path=staging_path))

    assert result.success, logs[-3000:]
    (materialization,) = result.asset_materializations_for_node("gpu_stage")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["ok_calls"] == 2
    assert metadata["databricks_calls"] == 2 and metadata["databricks_calls_failed"] == 0
    assert metadata["databricks_cluster_cores"] == 1
    assert metadata["Databricks Job Run URL"] == f"{workspace.host}/#job/runs/1000"
    for row in metadata["results"]:
        roles = [(r["role"], r["n_turns"]) for r in json.loads(row["payload"])["call_characteristics"]]
        assert roles == [("agent", 1), ("customer", 1)]
    assert "callintel test 2026-11-23: 2 calls on Spark" in logs

    run = workspace.runs[1000]
    assert run.states == ["PENDING", "RUNNING", "TERMINATED"] and run.result_state == "SUCCESS"
    assert run.process.returncode == 0
    # Pipes' temp files and the results file are gone; the uploaded entrypoint stays.
    assert list(workspace.files) == [ENTRYPOINT_FILE]
    assert os.environ["CALLINTEL_ORCHESTRATOR_ONLY_SECRET"] == CANARY  # the orchestrator has the canary ...
    cluster_env = workspace.cluster.environment(run.run_dir, workspace.store, run.body["tasks"][0], [])
    assert CANARY not in json.dumps(cluster_env) and TOKEN not in json.dumps(cluster_env)  # ... the cluster not
    assert cluster_env["HF_TOKEN"] == CLUSTER_HF_TOKEN


@pytest.mark.slow
def test_a_failing_cluster_process_fails_the_step_with_its_error(workspace, tmp_path):
    """A cluster whose Spark Python workers cannot start (a wrong PYSPARK_PYTHON in the cluster spec):
    the process exits non-zero, the run ends FAILED and the step names the task's error."""
    calls = pd.DataFrame([_audio_call(tmp_path, "c1")])
    broken = GpuClusterSpec(spark_env_vars={"PYSPARK_PYTHON": "/nonexistent/python3"})
    result, logs = materialize_stage(
        _stage_over(calls), executed_compute(workspace.host, cluster=broken)
    )

    assert not result.success
    description = failure_description(result)
    assert "Databricks run 1000 ended TERMINATED/FAILED" in description
    assert "task error:" in description
    run = workspace.runs[1000]
    assert run.states == ["PENDING", "RUNNING", "TERMINATED"] and run.process.returncode != 0


def test_a_secret_missing_from_the_workspace_scope_fails_the_run_before_it_starts(workspace, tmp_path):
    calls = pd.DataFrame([_audio_call(tmp_path, "c1")])
    compute = executed_compute(workspace.host, secret_env={"HF_TOKEN": "callintel/absent"})
    result, logs = materialize_stage(_stage_over(calls), compute)

    assert not result.success
    assert "Databricks run 1000 ended INTERNAL_ERROR/FAILED: Run failed to start: 'callintel/absent'" in failure_description(result)
    assert workspace.runs[1000].process is None


@pytest.mark.slow
def test_cancelling_in_the_workspace_kills_the_cluster_process(workspace, tmp_path):
    calls = _hanging_call(tmp_path)

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = workspace.runs.get(1000)
            if run is not None and run.life_cycle == "RUNNING":
                time.sleep(3)  # the driver is up and its Spark task is blocked on the recording
                workspace.cancel(1000)
                return
            time.sleep(0.1)

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    result, logs = materialize_stage(_stage_over(calls), executed_compute(workspace.host))
    canceller.join()

    assert not result.success
    assert "Databricks run 1000 ended TERMINATED/CANCELED: Run cancelled." in failure_description(result)
    run = workspace.runs[1000]
    assert run.states == ["PENDING", "RUNNING", "TERMINATING", "TERMINATED"]
    assert run.process.poll() is not None


@pytest.mark.slow
def test_a_run_past_its_timeout_is_cancelled_and_its_process_killed(workspace, tmp_path):
    result, logs = materialize_stage(_stage_over(_hanging_call(tmp_path)), executed_compute(workspace.host, timeout_seconds=8))

    assert not result.success
    # The client's deadline or the run spec's (the same 8 s, on the workspace's clock), whichever acts first.
    assert "Databricks run 1000 timed out after 8 s and was " in failure_description(result)
    _wait_until_finished(workspace, 1000)
    run = workspace.runs[1000]
    assert "RUNNING" in run.states and run.life_cycle == "TERMINATED"
    assert run.result_state in ("CANCELED", "TIMEDOUT")
    assert run.process.poll() is not None


def test_the_cluster_spec_installs_the_engines_extra_only():
    """What the submitted spec installs (one requirement: the wheel with `[engines]`) brings neither
    Dagster nor Delta nor pyspark: the loopback cluster, which resolves the extras from pyproject,
    would not have them, while everything the entrypoint imports is there."""
    spec = compute_for("http://127.0.0.1:1").submit_spec("r")
    (library,) = spec["tasks"][0]["libraries"]
    assert library == {"pypi": {"package": "callintel_dagster[engines] @ "
                                "file:///Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl"}}
    missing = modules_missing_on_cluster(["engines"])
    assert {"dagster", "dagster_databricks", "dagster_webserver", "deltalake", "pandera"} <= set(missing)
    assert not {"dagster_pipes", "faster_whisper", "pyannote", "transformers", "pandas", "pyarrow"} & set(missing)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {r.split("==")[0].lower() for r in extras["engines"]}
    assert not pins & {"dagster", "pyspark", "torch", "torchaudio", "torchcodec"}
    assert "dagster-pipes" in pins


@pytest.mark.slow
def test_entrypoint_runs_the_task_on_spark_and_reports_back(tmp_path: Path):
    """The real remote script under a real Pipes session (Pipes' local files instead of a
    volume), with a local Spark session standing in for the cluster's."""
    results_path = tmp_path / "results" / "run.parquet"
    calls = pd.DataFrame([_audio_call(tmp_path, call_id) for call_id in ("c1", "c2")])

    @dg.asset
    def gpu_stage(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        return pipes.run(
            context=context,
            command=[sys.executable, "-m", "callintel_dagster.databricks_entrypoint", "--pipes-io", "env"],
            extras=pipes_extras(calls, CharacteristicsTask(), "callintel test", str(results_path), calls_per_task=2),
            env={
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
                "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_SUBMIT_ARGS": "--master local[1] --conf spark.ui.enabled=false pyspark-shell",
            },
            cwd=str(REPO_ROOT),
        ).get_results()

    result = dg.materialize([gpu_stage], resources={"pipes": dg.PipesSubprocessClient()})
    (materialization,) = result.asset_materializations_for_node("gpu_stage")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["databricks_calls"] == 2
    assert metadata["databricks_calls_failed"] == 0
    assert metadata["databricks_cuda_devices"] == 0
    results = pd.read_parquet(results_path)
    assert list(results.columns) == RESULT_COLUMNS
    assert sorted(results["call_id"]) == ["c1", "c2"]
    assert list(results["status"]) == ["ok", "ok"], list(results["error"])
    for payload in results["payload"]:
        rows = json.loads(payload)["call_characteristics"]
        assert [(r["role"], r["n_turns"]) for r in rows] == [("agent", 1), ("customer", 1)]


def test_merge_sql_is_partition_scoped():
    sql = merge_sql(
        "`main`.`callintel`.`quarantine`", "src", ["call_id", "stage"], dt.date(2026, 11, 23),
        scope={"stage": "transcripts"}, call_ids=["c1", "o'brien"],
    )
    assert sql == (
        "MERGE INTO `main`.`callintel`.`quarantine` AS t\n"
        "USING src AS s\n"
        "ON t.`call_date` = s.`call_date` AND t.`call_id` = s.`call_id` AND t.`stage` = s.`stage`\n"
        "WHEN MATCHED THEN UPDATE SET *\n"
        "WHEN NOT MATCHED THEN INSERT *\n"
        "WHEN NOT MATCHED BY SOURCE AND t.`call_date` = CAST('2026-11-23' AS DATE) AND t.`stage` = 'transcripts' "
        "AND t.`call_id` IN ('c1', 'o''brien') THEN DELETE"
    )
    with pytest.raises(ValueError, match="plain column"):
        merge_sql("t", "s", ["call_id; DROP TABLE x"], dt.date(2026, 11, 23))


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
        .getOrCreate()
    )
    session.sql("CREATE DATABASE IF NOT EXISTS callintel")
    yield session
    session.stop()


@pytest.mark.slow
def test_spark_analyzes_the_merge_against_a_real_table(spark):
    """Without Delta jars no local table supports MERGE, but Spark's parser and analyzer still
    resolve the whole statement (keys, delete condition, source view) before refusing to execute
    it on a parquet table; a wrong key fails in analysis instead."""
    from pyspark.errors import AnalysisException

    spark.sql(
        "CREATE TABLE spark_catalog.callintel.transcripts (call_id STRING, turn_index BIGINT, call_date DATE) "
        "USING parquet PARTITIONED BY (call_date)"
    )
    lakehouse = SparkDeltaLakehouse(catalog="spark_catalog", schema_name="callintel")
    frame = pa.table({"call_id": ["c1"], "turn_index": [0], "call_date": [dt.date(2026, 11, 23)]})
    with pytest.raises(Exception, match=r"UNSUPPORTED_FEATURE.TABLE_OPERATION.*does not support MERGE INTO TABLE"):
        lakehouse.merge_partition("transcripts", frame, ["call_id", "turn_index"], dt.date(2026, 11, 23), call_ids=["c1"])
    with pytest.raises(AnalysisException, match="UNRESOLVED_COLUMN"):
        lakehouse.merge_partition("transcripts", frame, ["call_id", "turn"], dt.date(2026, 11, 23))
    # Schema evolution runs for real before the MERGE: the new column is added to the stored table.
    wider = frame.append_column("speaker", pa.array(["SPEAKER_00"]))
    with pytest.raises(Exception, match="does not support MERGE INTO TABLE"):
        lakehouse.merge_partition("transcripts", wider, ["call_id", "turn_index"], dt.date(2026, 11, 23))
    assert "speaker" in spark.table("spark_catalog.callintel.transcripts").columns


def test_vacuum_sql_is_pinned():
    """Neither Sail nor Spark without Delta's jars parses VACUUM (Delta's SQL extension does), so only
    the statement Databricks receives is checked, as text."""
    assert vacuum_sql("`main`.`callintel`.`transcripts`") == "VACUUM `main`.`callintel`.`transcripts` RETAIN 0 HOURS"


# --- what travels to the cluster (issue 17, item 5) ------------------------------------------------

CANARY = "hf_CANARY0do0not0ship0a1b2c3d4e5f6"


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _decodings(text: str) -> list[bytes]:
    """`text` itself and, when it is valid base64, what it decodes to (a pickle hid behind that)."""
    out = [text.encode()]
    try:
        out.append(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        pass
    return out


def test_the_staged_task_is_plain_json_without_the_token(monkeypatch):
    """The Pipes context file the orchestrator uploads for the cluster: the task in it is a JSON spec
    of allow-listed fields, rebuilt on the other side, and the HF token is neither in it (decoded
    or not) nor in the task's repr; the cluster gets it from its secret scope as HF_TOKEN."""
    monkeypatch.setenv("HF_TOKEN", CANARY)
    task = ModelSettings(pyannote_pipeline="pyannote/speaker-diarization-3.1", device="cuda").transcript_task()
    staged: dict[str, bytes] = {}

    def cluster(view: RemoteView) -> None:
        staged["context"] = view.fake.files[decode_param(view.env["DAGSTER_PIPES_CONTEXT"])["path"]]
        simulated_cluster(view)

    @dg.asset(name="gpu_stage")
    def transcript_stage(context: dg.AssetExecutionContext, compute: CallCompute) -> dg.MaterializeResult:
        results = compute.map_calls(CALLS, task, "callintel transcripts 2026-11-23")
        return dg.MaterializeResult(metadata={"calls": len(results)})

    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(remote=cluster))
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize([transcript_stage], resources={"compute": compute_for(fake.host)}, instance=instance)
        assert result.success
        request_bodies = json.dumps([r.body for r in fake.requests], default=str)

    context = json.loads(staged["context"])
    spec = context["extras"]["task"]
    assert spec["kind"] == "transcripts" and spec["fields"]["diarization"]["device"] == "cuda"
    assert task_from_spec(json.loads(json.dumps(spec))) == task
    scanned = [staged["context"], request_bodies.encode(), repr(task).encode()]
    scanned += [decoded for text in _strings(context) for decoded in _decodings(text)]
    assert not [blob[:80] for blob in scanned if CANARY.encode() in blob]
    env = fake.submitted[0]["tasks"][0]["new_cluster"]["spark_env_vars"]
    assert env["HF_TOKEN"] == "{{secrets/callintel/hf-token}}"


TONE_SPEC = task_to_spec(ToneTask(ToneConfig(model_path="/models/tone")))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "pickle", "fields": {}}, "unknown task kind 'pickle'"),
        ({"kind": "characteristics", "fields": {}, "code": "print(1)"}, "exactly the keys"),
        ({"kind": "tone", "fields": {"window_s": 4.0}}, r"missing fields \['config'\]"),
        (
            {"kind": "tone", "fields": {"window_s": 4.0, "hf_token": CANARY, "config": {}}},
            r"unknown fields \['hf_token'\]",
        ),
        (
            {"kind": "tone", "fields": {**TONE_SPEC["fields"], "window_s": [1, 2]}},
            r"tone\.window_s: list is not a JSON scalar",
        ),
    ],
)
def test_task_specs_outside_the_allow_list_are_refused(spec, message):
    with pytest.raises(TaskSpecError, match=message):
        task_from_spec(spec)


def test_only_registered_tasks_travel():
    with pytest.raises(TaskSpecError, match="not a registered task kind"):
        task_to_spec(lambda call: {})
    assert task_from_spec(task_to_spec(CharacteristicsTask())) == CharacteristicsTask()


def test_the_pyannote_token_is_read_from_the_worker_environment(monkeypatch, tmp_path):
    """The diarization config carries no token; loading the pipeline reads HF_TOKEN where it runs."""
    from pyannote.audio import Pipeline

    from callintel_dagster.engines.diarize import (
        DiarizationConfig,
        _load_pyannote_pipeline,
    )

    seen = []

    def from_pretrained(ref, token=None):
        seen.append(token)

    monkeypatch.setattr(Pipeline, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.setenv("HF_TOKEN", CANARY)
    config = DiarizationConfig(pyannote_pipeline=str(tmp_path))
    assert CANARY not in repr(config)
    with pytest.raises(RuntimeError, match="could not load pipeline"):
        _load_pyannote_pipeline(config)
    assert seen == [CANARY]


def test_a_task_with_a_credential_field_cannot_be_specced(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class LeakyTask:
        model: str = "m"
        hf_token: str | None = None

    monkeypatch.setitem(task_spec.TASK_KINDS, "leaky", LeakyTask)
    with pytest.raises(TaskSpecError, match=r"leaky: fields \['hf_token'\] look like credentials"):
        task_to_spec(LeakyTask(hf_token=CANARY))
    with pytest.raises(TaskSpecError, match="look like credentials"):
        task_from_spec({"kind": "leaky", "fields": {"model": "m", "hf_token": CANARY}})


# --- the model stages of the azure-databricks profile, on the executed loopback workspace ----------


@pytest.mark.slow
def test_the_model_stages_run_on_the_databricks_profile_through_executed_pipes(
    workspace, monkeypatch, resources, azure_store, azurite, tiny_wav2vec2_dir, tmp_path
):
    """`transcripts`, `tone_scores` and `call_characteristics` with the `azure-databricks` profile's
    compute, the recording in an Azurite container (lakehouse local): one Databricks run each,
    executed by the workspace's cluster on the real sample call with the real models. The cluster
    reads the `abfs://` URL and writes the masked copy back with the storage credential from its own
    secret scope (the orchestrator's environment never reaches it); the rows land in Delta, the
    cluster's logs stream into the run and each materialization links its Databricks run."""
    from callintel_dagster.assets.characteristics import call_characteristics
    from callintel_dagster.assets.ingest import raw_call_audio
    from callintel_dagster.assets.segments import valid_segments
    from callintel_dagster.assets.tone import tone_scores
    from callintel_dagster.assets.transcripts import transcripts
    from callintel_dagster.definitions import build_resources
    from callintel_dagster.engines.reference import sample_call_path
    from callintel_dagster_tests.conftest import DAY_ONE

    recording = f"{DAY_ONE}/agent-7__call.wav"
    azure_store.write(recording, sample_call_path().read_bytes())
    resources = {**resources, "blob_store": azure_store}
    assert dg.materialize([raw_call_audio, valid_segments], partition_key=DAY_ONE, resources=resources).success
    for name, value in {
        "DATABRICKS_HOST": workspace.host, "DATABRICKS_TOKEN": TOKEN, "CALLINTEL_DATABRICKS_ENTRYPOINT": ENTRYPOINT_FILE,
        "CALLINTEL_DATABRICKS_WHEEL": "/Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl",
        "CALLINTEL_DATABRICKS_STAGING": "/Volumes/main/callintel/staging",
        "CALLINTEL_AZURE_ACCOUNT": "unused", "CALLINTEL_AZURE_CONTAINER": "unused",
        "CALLINTEL_DATABRICKS_STORAGE_SECRET": "callintel/azure-storage",
    }.items():
        monkeypatch.setenv(name, value)
    workspace.cluster.secrets["callintel/llm-api-key"] = "sk-cluster-scope"
    workspace.cluster.secrets["callintel/azure-storage"] = azurite.connection_string
    profile = build_resources("azure-databricks")
    # Poll the loopback workspace often: the profile's 10 s suits a real cluster's minutes.
    assert profile["compute"].secret_env["AZURE_STORAGE_CONNECTION_STRING"] == "callintel/azure-storage"
    compute = profile["compute"].model_copy(update={"poll_interval_seconds": 0.5})
    models = ModelSettings(tone_backend="wav2vec2", tone_model_path=tiny_wav2vec2_dir, models_root=str(tmp_path))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [transcripts, tone_scores, call_characteristics], partition_key=DAY_ONE, instance=instance,
            resources={**profile, **resources, "compute": compute, "models": models},
        )
        logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert result.success

    lakehouse = resources["lakehouse"]
    transcript = lakehouse.read("transcripts")
    assert len(transcript) >= 2 and set(transcript["role"]) >= {"agent", "customer"}
    assert " ".join(transcript["text"]).strip()
    assert len(lakehouse.read("call_tone")) >= 1 and len(lakehouse.read("call_characteristics")) == 2
    assert lakehouse.read("quarantined_calls").empty
    masked = lakehouse.read("redacted_audio")["path"].tolist()
    assert masked and all(path.startswith("abfs://") for path in masked)
    with azure_store.local_copy(redacted_copy_key(recording, models.redacted_folder)) as copy:
        assert copy.stat().st_size > 1000  # the masked WAV the cluster wrote into the container
    urls = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "Databricks Job Run URL" in metadata:
            urls[event.asset_key.to_user_string()] = metadata["Databricks Job Run URL"].value
            assert metadata["databricks_calls"].value == 1 and metadata["databricks_calls_failed"].value == 0
    assert set(urls) >= {"transcripts", "tone_scores", "call_characteristics"}
    assert set(urls.values()) == {f"{workspace.host}/#job/runs/{run_id}" for run_id in (1000, 1001, 1002)}
    assert logs.count(f"{DAY_ONE}: 1 calls on Spark") == 3
    assert [run.result_state for run in workspace.runs.values()] == ["SUCCESS"] * 3
