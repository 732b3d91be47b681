"""Shared write path of every asset: validate against the table's Pandera contract, then MERGE.

A frame that breaks its contract is not written; the asset reports a failed **blocking** check so
downstream assets of that partition do not run on bad data.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow

from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.schemas import QuarantinedCalls, arrow_schema

SCHEMA_CHECK = "schema_contract"


def table_spec(key: str, **spec) -> dg.AssetSpec:
    """One output table of a multi-asset: daily-partitioned, owned by the CallIntel team unless said."""
    spec.setdefault("owners", ["team:callintel"])
    return dg.AssetSpec(key, partitions_def=call_date_partitions, code_version="1", **spec)


def schema_check_spec(asset: str, description: str | None = None) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=asset,
        blocking=True,
        description=description or f"`{asset}` rows match their Pandera contract in callintel_dagster/schemas.py.",
    )


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def partition_dates(context: dg.AssetExecutionContext) -> list[dt.date]:
    """Every call date of the run: one for a partition run, the whole range for a single-run backfill."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=n) for n in range((end - start).days)]


AUDIT_COLUMNS = ("call_date", "run_id")


def rows_frame(model: type[pa.DataFrameModel], rows: list[dict]) -> pd.DataFrame:
    """`rows` as a frame with the contract's columns (minus the audit columns added at write time)."""
    columns = [c for c in model.to_schema().columns if c not in AUDIT_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def read_table(lakehouse: Lakehouse, model: type[pa.DataFrameModel], table: str, call_dates: list[dt.date]) -> pd.DataFrame:
    """Rows of `table` for the dates, with the contract's columns even when the table does not exist
    yet (an upstream stage never ran), so consumers can treat "no rows" uniformly."""
    frame = lakehouse.read(table, call_dates)
    return frame if len(frame.columns) else pd.DataFrame(columns=list(model.to_schema().columns))


def with_audit_columns(frame: pd.DataFrame, call_date: dt.date | None, run_id: str) -> pd.DataFrame:
    """Add `run_id`, and `call_date` unless the rows already carry their own (multi-date runs)."""
    frame = frame.copy()
    if call_date is not None:
        frame["call_date"] = call_date
    frame["run_id"] = run_id
    return frame


def validate_and_merge(
    lakehouse: Lakehouse,
    *,
    asset: str,
    model: type[pa.DataFrameModel],
    frame: pd.DataFrame,
    keys: list[str],
    call_date: dt.date | None = None,
    call_dates: list[dt.date] | None = None,
    table: str | None = None,
    scope: dict[str, str] | None = None,
    call_ids: list[str] | None = None,
) -> tuple[dg.AssetCheckResult, dict]:
    """Validate `frame` with `model`; write it only when valid, one partition-scoped MERGE per call
    date (`call_date`, or every date of `call_dates` for a range run). Returns the check and write
    metadata."""
    dates = [call_date] if call_date is not None else list(call_dates or [])
    table = table or asset
    columns = list(model.to_schema().columns)
    try:
        valid = model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases[["column", "check", "failure_case", "index"]].head(20)
        check = dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            asset_key=asset,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failure_count": len(exc.failure_cases),
                "failure_cases": dg.MetadataValue.md(cases.astype(str).to_markdown(index=False)),
            },
            description=f"{len(exc.failure_cases)} contract violations; nothing was written to `{table}`.",
        )
        return check, {"written": False, "table": table}
    totals: dict[str, int] = {}
    for date in dates:
        rows = valid.loc[valid["call_date"] == date, columns]
        arrow = pyarrow.Table.from_pandas(rows, schema=arrow_schema(model), preserve_index=False)
        metrics = lakehouse.merge_partition(table, arrow, keys, date, scope=scope, call_ids=call_ids)
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0) + value
    check = dg.AssetCheckResult(
        check_name=SCHEMA_CHECK, asset_key=asset, passed=True, metadata={"rows_checked": len(valid)}
    )
    return check, {
        "written": True,
        "table": table,
        "table_uri": dg.MetadataValue.path(lakehouse.table_uri(table)),
        "dagster/row_count": len(valid),
        **totals,
    }


def write_quarantine(
    lakehouse: Lakehouse,
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    call_dates: list[dt.date],
    rows: list[dict],
) -> int:
    """Replace `stage`'s quarantine rows for the run's dates: a re-run that now succeeds clears them.
    A row without `call_date` belongs to the run's only date."""
    now = pd.Timestamp.now(tz="UTC")
    default_date = call_dates[0] if len(call_dates) == 1 else None
    frame = pd.DataFrame(
        [{"call_date": default_date, **row, "stage": stage, "quarantined_at": now} for row in rows],
        columns=["call_id", "call_date", "blob_key", "blob_version", "reason", "stage", "quarantined_at"],
    )
    frame["run_id"] = context.run_id
    for row in rows:
        context.log.warning(f"[{stage}] quarantined call {row['call_id']} ({row['blob_key']}): {row['reason']}")
    check, _ = validate_and_merge(
        lakehouse, asset=stage, model=QuarantinedCalls, frame=frame, keys=["call_id", "stage"],
        call_dates=call_dates, table="quarantined_calls", scope={"stage": stage},
    )
    if not check.passed:
        raise ValueError(f"[{stage}] quarantine rows break their contract: {check.metadata}")
    return len(rows)
