"""`SparkDeltaLakehouse` on a real Spark Connect engine: Sail (pysail), a Rust Spark Connect server
with Delta Lake, started on loopback. The unchanged pyspark client sends the same SQL it sends to
Databricks: partition-scoped MERGE, reads, DELETE for erasure, and the whole graph plus `forget_call`
run on it. Statements Sail does not implement (VACUUM, ALTER TABLE ADD COLUMNS) are checked for a
clear error here; ALTER TABLE is also run by Spark's own analyzer, and VACUUM's text is pinned, in
test_databricks.py."""

import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow
import pytest

from callintel_dagster.assets.maintenance import forget_call, redacted_copy_key
from callintel_dagster.engines.ingest import call_id_for
from callintel_dagster.resources.lakehouse import SparkDeltaLakehouse, VacuumUnsupported
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.tables import CALL_SUMMARIES, TABLES
from callintel_dagster.tools.demo_data import write_sample_call
from callintel_dagster_tests.conftest import (
    DAY_ONE,
    PIPELINE_ASSETS,
    InlineCompute,
    as_date,
    pipeline_resources,
)

D1, D2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)


@pytest.fixture
def lakehouse(spark_connect_url, request):
    from pyspark.sql import SparkSession

    schema = f"callintel_{request.node.name[-40:].replace('[', '_').replace(']', '_')}"
    SparkSession.builder.remote(spark_connect_url).getOrCreate().sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
    return SparkDeltaLakehouse(catalog="sail", schema_name=schema, remote=spark_connect_url)


def _summaries(call_ids: list[str], day: dt.date, source: str = "extractive") -> pd.DataFrame:
    return pd.DataFrame([
        {"call_id": c, "call_date": day, "run_id": "r", "issues": "[]", "outcomes": "[]", "action_items": "[]",
         "source": source, "model_id": "extractive", "llm_error": None}
        for c in call_ids
    ])


def test_the_shared_write_path_merges_one_partition_on_spark(lakehouse):
    assert lakehouse.read(CALL_SUMMARIES).columns.tolist() == CALL_SUMMARIES.columns  # absent table
    assert lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001", "call-b-000000002"], D1), [D1]).written
    assert lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-x-000000009"], D2), [D2]).written
    # Re-run of D1: a is updated, b is no longer produced (deleted), c is new; D2 is untouched.
    outcome = lakehouse.write_validated(
        CALL_SUMMARIES, _summaries(["call-a-000000001", "call-c-000000003"], D1, source="llm"), [D1]
    )
    assert outcome.written and outcome.metrics
    rows = lakehouse.read(CALL_SUMMARIES).sort_values("call_id")
    assert list(zip(rows["call_id"], rows["source"])) == [
        ("call-a-000000001", "llm"), ("call-c-000000003", "llm"), ("call-x-000000009", "extractive"),
    ]
    assert list(lakehouse.read(CALL_SUMMARIES, [D2])["call_id"]) == ["call-x-000000009"]


def test_a_failed_call_keeps_its_rows_and_erasure_deletes_one_call_on_spark(lakehouse):
    lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001", "call-b-000000002"], D1), [D1])
    lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001"], D1, "llm"), [D1], keep_call_ids=["call-b-000000002"])
    assert sorted(lakehouse.read(CALL_SUMMARIES)["call_id"]) == ["call-a-000000001", "call-b-000000002"]

    lakehouse.delete_call(CALL_SUMMARIES.name, "call-b-000000002")
    assert list(lakehouse.read(CALL_SUMMARIES)["call_id"]) == ["call-a-000000001"]
    assert CALL_SUMMARIES.name in lakehouse.tables()


def test_what_sail_lacks_fails_loudly_rather_than_silently(lakehouse):
    lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001"], D1), [D1])
    with pytest.raises(VacuumUnsupported, match="this Spark engine has no VACUUM"):
        lakehouse.purge_history(CALL_SUMMARIES.name)
    old = CALL_SUMMARIES.arrow_schema()
    narrow = "call_summaries_narrow"
    frame = pyarrow.Table.from_pandas(
        _summaries(["call-a-000000001"], D1).drop(columns=["llm_error"]), schema=old.remove(old.get_field_index("llm_error")),
        preserve_index=False,
    )
    lakehouse.merge_partition(narrow, frame, ["call_id"], D1)
    full = pyarrow.Table.from_pandas(_summaries(["call-a-000000001"], D1), schema=old, preserve_index=False)
    with pytest.raises(Exception, match="ALTER TABLE"):
        lakehouse.merge_partition(narrow, full, ["call_id"], D1)


def _per_call_rows(lakehouse, tables) -> dict[str, dict[str, int]]:
    return {t: lakehouse.read(TABLES[t]).groupby("call_id").size().to_dict() for t in tables}


@pytest.mark.slow
def test_the_graph_runs_on_spark_and_forget_call_erases_one_call(
    spark_connect_url, resources, blob_root, tiny_wav2vec2_dir, tmp_path
):
    """Every asset of one day with the Spark lakehouse on Sail: each table is created and MERGEd
    through Spark SQL, a re-run leaves the same rows, and `forget_call` deletes one call from every
    table (DELETE) while saying that Sail cannot VACUUM the older versions."""
    from pyspark.sql import SparkSession

    SparkSession.builder.remote(spark_connect_url).getOrCreate().sql("CREATE DATABASE IF NOT EXISTS callintel_graph")
    lakehouse = SparkDeltaLakehouse(catalog="sail", schema_name="callintel_graph", remote=spark_connect_url)
    keys = [f"{DAY_ONE}/agent-1__keep.wav", f"{DAY_ONE}/agent-2__forget.wav"]
    for key in keys:
        write_sample_call(blob_root / DAY_ONE, key.split("/")[1])
    resources = pipeline_resources(resources | {"lakehouse": lakehouse}, tmp_path, tiny_wav2vec2_dir, InlineCompute())

    first = dg.materialize(PIPELINE_ASSETS, partition_key=DAY_ONE, resources=resources)
    assert first.success
    assert all(check.passed for check in first.get_asset_check_evaluations())
    tables = lakehouse.tables()
    written = ("raw_call_audio", "valid_segments", "transcripts", "call_tone", "call_characteristics",
               "compliance_flags", "call_summaries", "fused_insights", "fact_call")
    assert set(written) <= set(tables)
    keep_id, forget_id = (call_id_for(key) for key in keys)
    before = _per_call_rows(lakehouse, written)
    for table in written:
        assert set(before[table]) == {keep_id, forget_id}, table
    assert set(lakehouse.read(TABLES["fused_insights"])["call_date"]) == {as_date(DAY_ONE)}

    assert dg.materialize(PIPELINE_ASSETS, partition_key=DAY_ONE, resources=resources).success
    assert _per_call_rows(lakehouse, written) == before  # MERGE on Spark: a re-run is idempotent

    with dg.DagsterInstance.ephemeral() as instance:
        erased = forget_call.execute_in_process(
            run_config={"ops": {"forget_call_data": {"config": {"call_id": forget_id}}}},
            resources={**resources, "models": ModelSettings(), "reports": ReportSettings(root=str(tmp_path / "dashboards"))},
            instance=instance,
        )
        logs = "\n".join(str(entry) for entry in instance.all_logs(erased.run_id))
    summary = erased.output_for_node("forget_call_data")
    masked = redacted_copy_key(keys[1], ModelSettings().redacted_folder)
    assert summary["blobs_deleted"] == 2  # the recording and its PHI-masked copy
    assert not (blob_root / keys[1]).exists() and not (blob_root / masked).exists() and (blob_root / keys[0]).exists()
    assert summary["rows_deleted"]["raw_call_audio"] == 1
    assert summary["tables_not_vacuumed"] == tables
    assert "this Spark engine has no VACUUM" in logs
    after = _per_call_rows(lakehouse, written)
    for table in written:
        assert after[table] == {keep_id: before[table][keep_id]}, table
