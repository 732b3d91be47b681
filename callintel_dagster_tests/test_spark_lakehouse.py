"""`SparkDeltaLakehouse` on a real Spark Connect engine: Sail (pysail), a Rust Spark Connect server
with Delta Lake, started on loopback. The unchanged pyspark client sends the same SQL it sends to
Databricks: partition-scoped MERGE, reads, DELETE for erasure. Statements Sail does not implement
(VACUUM, ALTER TABLE ADD COLUMNS) are checked for a clear error here and by Spark's own parser in
test_databricks.py."""

import datetime as dt

import pandas as pd
import pyarrow
import pytest

from callintel_dagster.resources.lakehouse import SparkDeltaLakehouse
from callintel_dagster.tables import CALL_SUMMARIES

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
    with pytest.raises(Exception, match="VACUUM"):
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
