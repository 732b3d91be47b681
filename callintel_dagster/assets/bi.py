"""The BI gold layer: the fact tables of the star schema (`star_schema.py`) that Power BI reads."""

import dagster as dg
import pandas as pd

from callintel_dagster.assets.io import (
    TableReader,
    partition_dates,
    table_asset_kwargs,
    with_call_dates,
    write_table,
)
from callintel_dagster.engines.bi import (
    fact_call_rows,
    fact_flag_rows,
    fact_turn_tone_rows,
)
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import (
    COMPLIANCE_FLAGS,
    FACT_CALL,
    FACT_FLAG,
    FACT_TURN_TONE,
    FUSED_INSIGHTS,
    TURN_SENTIMENT,
)


def _materialize(
    context: dg.AssetExecutionContext, lakehouse: Lakehouse, table, read: TableReader, rows: list[dict], dated_by: pd.DataFrame
) -> dg.MaterializeResult:
    """Write `rows`, each into the date of its call in `dated_by` (the table the rows come from)."""
    frame = with_call_dates(table.rows(rows), dated_by)
    check, written = write_table(context, lakehouse, table, frame, partition_dates(context))
    return dg.MaterializeResult(metadata={**written, **read.metadata()}, check_results=[check])


@dg.asset(**table_asset_kwargs(FACT_CALL, reads=[FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_call(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per call for Power BI: outcome, acoustic stress, sentiment, flags and QA priority."""
    read = TableReader(context, lakehouse)
    fused = read(FUSED_INSIGHTS, partition_dates(context))
    return _materialize(context, lakehouse, FACT_CALL, read, fact_call_rows(fused), fused)


@dg.asset(**table_asset_kwargs(FACT_FLAG, reads=[COMPLIANCE_FLAGS, FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_flag(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per true compliance flag and piece of evidence, for the compliance page's drill-through."""
    read = TableReader(context, lakehouse)
    dates = partition_dates(context)
    flags = read(COMPLIANCE_FLAGS, dates)
    return _materialize(context, lakehouse, FACT_FLAG, read, fact_flag_rows(flags, read(FUSED_INSIGHTS, dates)), flags)


@dg.asset(**table_asset_kwargs(FACT_TURN_TONE, reads=[TURN_SENTIMENT, FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_turn_tone(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per turn: text sentiment and negative acoustic tone, with the call's agent and anger topic."""
    read = TableReader(context, lakehouse)
    dates = partition_dates(context)
    turns = read(TURN_SENTIMENT, dates)
    return _materialize(context, lakehouse, FACT_TURN_TONE, read, fact_turn_tone_rows(turns, read(FUSED_INSIGHTS, dates)), turns)
