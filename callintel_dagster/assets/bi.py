"""The BI gold layer: the fact tables of the star schema (`star_schema.py`) that Power BI reads."""

import dagster as dg

from callintel_dagster.assets.io import (
    TableReader,
    partition_date,
    table_asset_kwargs,
    write_table,
)
from callintel_dagster.engines.bi import fact_call_rows, fact_flag_rows, fact_turn_tone_rows
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import (
    COMPLIANCE_FLAGS,
    FACT_CALL,
    FACT_FLAG,
    FACT_TURN_TONE,
    FUSED_INSIGHTS,
    TURN_SENTIMENT,
)


def _materialize(context: dg.AssetExecutionContext, lakehouse: Lakehouse, table, read: TableReader, rows: list[dict]) -> dg.MaterializeResult:
    call_date = partition_date(context)
    check, written = write_table(context, lakehouse, table, table.rows(rows), [call_date])
    return dg.MaterializeResult(metadata={**written, **read.metadata()}, check_results=[check])


@dg.asset(**table_asset_kwargs(FACT_CALL, reads=[FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_call(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per call for Power BI: outcome, acoustic stress, sentiment, flags and QA priority."""
    read = TableReader(context, lakehouse)
    return _materialize(context, lakehouse, FACT_CALL, read, fact_call_rows(read(FUSED_INSIGHTS, [partition_date(context)])))


@dg.asset(**table_asset_kwargs(FACT_FLAG, reads=[COMPLIANCE_FLAGS, FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_flag(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per true compliance flag and piece of evidence, for the compliance page's drill-through."""
    read = TableReader(context, lakehouse)
    dates = [partition_date(context)]
    return _materialize(context, lakehouse, FACT_FLAG, read, fact_flag_rows(read(COMPLIANCE_FLAGS, dates), read(FUSED_INSIGHTS, dates)))


@dg.asset(**table_asset_kwargs(FACT_TURN_TONE, reads=[TURN_SENTIMENT, FUSED_INSIGHTS]), group_name="bi", kinds={"delta", "powerbi"})
def fact_turn_tone(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    """One row per turn: text sentiment and negative acoustic tone, with the call's agent and anger topic."""
    read = TableReader(context, lakehouse)
    dates = [partition_date(context)]
    return _materialize(context, lakehouse, FACT_TURN_TONE, read, fact_turn_tone_rows(read(TURN_SENTIMENT, dates), read(FUSED_INSIGHTS, dates)))
