"""The BI gold layer and its Power BI project: the fact assets write the star schema's Delta tables,
and a TMDL parser (independent of the renderer) checks that every table, column and measure the
project references exists in the Delta schemas, so the template cannot drift from the tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd

from callintel_dagster.assets.bi import fact_call, fact_flag
from callintel_dagster.assets.compliance import compliance_flags
from callintel_dagster.assets.insights import fused_insights
from callintel_dagster.engines.bi import UNKNOWN_AGENT, fact_turn_tone_rows
from callintel_dagster.resources.llm import RulesAssessor
from callintel_dagster.star_schema import (
    DIMENSIONS,
    FACTS,
    HIDDEN_COLUMNS,
    databricks_views_sql,
)
from callintel_dagster.tables import FACT_TURN_TONE, TABLES
from callintel_dagster.tools.powerbi import render_project
from callintel_dagster_tests.conftest import (
    DAY_TWO,
    SEED_CALLS,
    as_date,
    write_seed_transcripts,
)

POWERBI = Path(__file__).resolve().parent.parent / "powerbi"
MODEL = POWERBI / "CallIntel.SemanticModel" / "definition"
TMDL_TYPES = {"string": "string", "int64": "int64", "double": "double", "bool": "boolean", "date32[day]": "dateTime"}
REF = re.compile(r"'?\b([a-z_]+)'?\[([^\]]+)\]")


def test_committed_project_is_what_the_star_schema_renders():
    rendered = render_project()
    committed = {p.relative_to(POWERBI).as_posix(): p.read_text() for p in POWERBI.rglob("*") if p.is_file()}
    assert committed == rendered, "powerbi/ drifted from star_schema.py: run `callintel powerbi` from the repo root"


def _parse_tmdl(text: str) -> dict:
    """table name, columns {name: (dataType, sourceColumn)}, measures {name: dax}, partition kind and source."""
    table = re.search(r"^table (\w+)", text, re.M).group(1)
    columns = {
        name: (data_type, source)
        for name, data_type, source in re.findall(r"^\tcolumn (\w+)\n\t\tdataType: (\w+)\n(?:\t\t.*\n)*?\t\tsourceColumn: (.+)$", text, re.M)
    }
    measures = dict(re.findall(r"^\tmeasure '([^']+)' = (.+)$", text, re.M))
    kind = re.search(rf"^\tpartition {table} = (\w+)$", text, re.M).group(1)
    source = text.split("source =", 1)[1]
    return {"table": table, "columns": columns, "measures": measures, "kind": kind, "source": source}


def _model() -> dict[str, dict]:
    return {t["table"]: t for t in map(_parse_tmdl, (p.read_text() for p in sorted((MODEL / "tables").glob("*.tmdl"))))}


def test_tmdl_tables_and_columns_exist_in_the_delta_schemas():
    model = _model()
    assert set(model) == {t.name for t in FACTS} | {d.name for d in DIMENSIONS}
    names = {name: set(t["columns"]) for name, t in model.items()}
    for name, table in model.items():
        if table["kind"] == "m":  # a fact: its columns are the Delta table's, with their types
            delta = TABLES[name].arrow_schema()
            expected = {f.name: TMDL_TYPES[str(f.type)] for f in delta if f.name not in HIDDEN_COLUMNS}
            assert {c: t for c, (t, _) in table["columns"].items()} == expected, name
            assert all(source == column for column, (_, source) in table["columns"].items())
            assert f'"{name}", Kind = "View"' in table["source"] and f'"\\{name}"' in table["source"]
            assert set(re.findall(r'"(\w+)"', table["source"].split("SelectColumns", 1)[1])) == set(expected)
        else:  # a dimension computed in DAX from fact columns
            assert table["kind"] == "calculated"
            for ref_table, column in REF.findall(table["source"]):
                assert column in names.get(ref_table, ()), f"{name}: {ref_table}[{column}]"
            produced = set(re.findall(r'"(\w+)", ', table["source"]))
            assert produced == set(table["columns"]), name
    measures = {m for t in model.values() for m in t["measures"]}
    for name, table in model.items():
        for measure, dax in table["measures"].items():
            for ref_table, column in REF.findall(dax):
                assert column in names[ref_table], f"{name}[{measure}]: {ref_table}[{column}]"
            for bare in re.findall(r"(?<![\w'\]])\[([^\]]+)\]", dax):
                assert bare in measures, f"{name}[{measure}] uses unknown measure [{bare}]"
    relationships = (MODEL / "relationships.tmdl").read_text()
    for side in re.findall(r"(?:from|to)Column: (\w+)\.(\w+)", relationships):
        assert side[1] in names[side[0]], side
    report = json.loads((POWERBI / "CallIntel.Report" / "report.json").read_text())
    assert [s["displayName"] for s in report["sections"]][:3] == [
        "Sentiment and anger by topic", "Agent performance", "Compliance monitoring"]
    for section in report["sections"]:
        fields = [p["queryRef"] for v in section["visualContainers"]
                  for p in json.loads(v["config"])["singleVisual"]["projections"]["Values"]]
        fields += json.loads(section.get("config", "{}")).get("drillthroughFields", [])
        for field in fields:
            ref_table, column = REF.fullmatch(field).groups()
            assert column in names[ref_table] or column in model[ref_table]["measures"], field


def test_databricks_views_select_only_delta_columns():
    sql = databricks_views_sql("cat", "silver", "gold")
    for fact in FACTS:
        select = re.search(rf"VIEW cat\.gold\.{fact.name} AS\nSELECT (.+)\nFROM cat\.silver\.{fact.name};", sql).group(1)
        assert select.split(", ") == [c for c in fact.columns if c not in HIDDEN_COLUMNS]
    for dim in DIMENSIONS:
        assert f"CREATE OR REPLACE VIEW cat.gold.{dim.name} AS" in sql
        for fact in FACTS:
            assert f"SELECT {dim.fact_column} FROM cat.silver.{fact.name}" in sql


def test_fact_assets_write_the_star_schema(resources, lakehouse):
    write_seed_transcripts(lakehouse, as_date(DAY_TWO))
    result = dg.materialize(
        [compliance_flags, fused_insights, fact_call, fact_flag], partition_key=DAY_TWO,
        resources=resources | {"compliance_assessor": RulesAssessor()},
    )
    assert result.success
    flags = lakehouse.read("fact_flag")
    assert set(flags["call_id"]) <= set(SEED_CALLS) and "billing_detected" in set(flags["flag"])
    billing = flags[(flags["call_id"] == "call-bad-00000002") & (flags["flag"] == "billing_detected")]
    assert len(billing) >= 1 and billing["quote"].notna().all() and list(billing["evidence_index"]) == list(range(len(billing)))
    assert set(flags["agent_id"]) <= {UNKNOWN_AGENT} | set(lakehouse.read("fact_call")["agent_id"])
    turns = pd.DataFrame([{"call_id": "call-bad-00000002", "turn_index": 0, "role": "agent", "start_s": 0.0,
                           "sentiment": 0.2, "sentiment_label": "positive", "tone_negative": None}])
    fused = pd.DataFrame([{"call_id": "call-bad-00000002", "agent_id": None, "anger_peak_topic": "billing"}])
    row = fact_turn_tone_rows(turns, fused)[0]
    assert row["agent_id"] == UNKNOWN_AGENT and row["anger_peak_topic"] == "billing"
    assert list(FACT_TURN_TONE.rows([row]).columns) == FACT_TURN_TONE.payload_columns


def test_databricks_views_run_on_spark_sql_over_the_tables_the_lakehouse_writes(spark_connect_url):
    """The generated SQL on a real Spark Connect engine (Sail), over fact tables written by
    `SparkDeltaLakehouse`, the production write path."""
    import datetime as dt

    from pyspark.sql import SparkSession

    from callintel_dagster.resources.lakehouse import SparkDeltaLakehouse
    from callintel_dagster.tables import FACT_CALL, FACT_FLAG

    url = spark_connect_url
    spark = SparkSession.builder.remote(url).getOrCreate()
    spark.sql("CREATE DATABASE IF NOT EXISTS silver")
    lakehouse = SparkDeltaLakehouse(catalog="sail", schema_name="silver", remote=url)
    day = dt.date(2026, 11, 24)
    rows = {
        FACT_CALL: [{"call_id": "call-a-000000001", "agent_id": "agent-1", "duration_s": 10.0, "qa_priority": 50}],
        FACT_FLAG: [{"call_id": "call-a-000000001", "agent_id": "agent-2", "flag": "billing_detected", "evidence_index": 0}],
        FACT_TURN_TONE: [{"call_id": "call-a-000000001", "agent_id": "agent-1", "turn_index": 0, "role": "agent",
                          "start_s": 0.0, "sentiment": 0.1, "sentiment_label": "neutral"}],
    }
    for table, payload in rows.items():
        assert lakehouse.write_validated(table, table.rows(payload).assign(call_date=day, run_id="r"), [day]).written
    for statement in databricks_views_sql("sail", "silver", "gold").split(";\n"):
        if statement.strip():
            spark.sql(statement.strip().rstrip(";"))
    assert [r.agent_id for r in spark.sql("SELECT agent_id FROM sail.gold.dim_agent ORDER BY agent_id").collect()] == [
        "agent-1", "agent-2"]
    date = spark.sql("SELECT * FROM sail.gold.dim_date").collect()
    assert [(r.date, r.year, r.month, r.weekday) for r in date] == [(day, 2026, "2026-11", "Tue")]
    for fact in FACTS:
        columns = spark.sql(f"SELECT * FROM sail.gold.{fact.name}").columns
        assert columns == [c for c in fact.columns if c not in HIDDEN_COLUMNS]
