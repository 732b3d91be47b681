"""The Databricks path: job spec as data, the Pipes client against a fake workspace over real HTTP,
the remote entrypoint under a real Pipes session on local Spark, and the MERGE INTO SQL."""

import base64
import binascii
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import sys
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
from callintel_dagster.resources.compute import RESULT_COLUMNS, CallCompute
from callintel_dagster.resources.databricks import (
    DatabricksPipesCompute,
    GpuClusterSpec,
    build_submit_spec,
    pipes_extras,
    staging_kind,
)
from callintel_dagster.resources.lakehouse import SparkDeltaLakehouse, merge_sql
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster_tests.fake_databricks_server import (
    FakeDatabricksServer,
    RemoteView,
    RunScript,
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
                    {"whl": "/Volumes/main/callintel/artifacts/callintel_dagster-0.1.0-py3-none-any.whl"},
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


def test_timeout_cancels_the_run():
    with FakeDatabricksServer(TOKEN) as fake:
        fake.scripts.append(RunScript(result_state=None))
        result, logs = materialize(compute_for(fake.host, timeout_seconds=1))
    assert not result.success
    assert "Databricks run 1000 timed out after 1 s and was cancelled" in failure_description(result)
    assert fake.cancelled == [1000]
    assert fake.runs[1000].result_state == "CANCELED"


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


@pytest.mark.integration
def test_delta_merge_replaces_only_the_partition(tmp_path: Path):
    """The real MERGE needs delta-spark's jars, which come from Maven (unreachable offline) and
    are built into Databricks runtimes; runs wherever `delta` and its jars are installed."""
    delta = pytest.importorskip("delta", reason="delta-spark not installed: its jars come from Maven, unreachable here")
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[1]")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", str(tmp_path / "warehouse"))
    )
    session = delta.configure_spark_with_delta_pip(builder).getOrCreate()
    session.sql("CREATE DATABASE IF NOT EXISTS callintel")
    lakehouse = SparkDeltaLakehouse(catalog="spark_catalog", schema_name="callintel")
    day1, day2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)

    def rows(ids: list[str], day: dt.date) -> pa.Table:
        return pa.table({"call_id": ids, "call_date": [day] * len(ids)})

    lakehouse.merge_partition("calls", rows(["a", "b"], day1), ["call_id"], day1)
    lakehouse.merge_partition("calls", rows(["x"], day2), ["call_id"], day2)
    metrics = lakehouse.merge_partition("calls", rows(["b", "c"], day1), ["call_id"], day1)
    assert metrics == {"num_target_rows_inserted": 1, "num_target_rows_updated": 1, "num_target_rows_deleted": 1}
    table = lakehouse.read("calls").sort_values("call_id")
    assert list(table["call_id"]) == ["b", "c", "x"]


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
