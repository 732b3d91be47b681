"""How assets use the table registry (`callintel_dagster/tables.py`).

- `table_spec` / `table_asset_kwargs`: an asset's lineage is derived from the tables it declares it
  reads (`reads=`), so the graph in the Dagster UI is the reads the code does. A look-back read (the
  dashboard's history) is a `Lookback`, i.e. a time-window partition mapping, not a hidden query.
- `TableReader`: the only way an asset body reads a table. Reading a table the asset did not
  declare fails the step, and every materialization records `tables_read`, which a test compares
  with the declared lineage over a run of the whole graph.
- `write_table`: the only way an asset body writes a table: audit columns, then
  `Lakehouse.write_validated`, reported as the blocking `schema_contract` check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
import pandas as pd

from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import PARTITION_COLUMN, QUARANTINED_CALLS, Table

SCHEMA_CHECK = "schema_contract"
TABLES_READ = "tables_read"
# Every partitioned asset handles a range of dates in one run, so a backfill over N days from the UI is
# one run, and the model stages load their models once for the whole range.
RANGE_BACKFILL = dg.BackfillPolicy.single_run()


@dataclasses.dataclass(frozen=True)
class Lookback:
    """A read of `table` over the run's dates plus the `days` before them; with `earlier_only`, the
    `days` before the run's dates only (an asset reading earlier partitions of its own table)."""

    table: Table
    days: int
    earlier_only: bool = False


Read = Table | Lookback | str  # str: a non-table asset (e.g. the unpartitioned `tone_model`)


def _dep(read: Read) -> dg.AssetDep | str:
    if isinstance(read, Lookback):
        return dg.AssetDep(
            read.table.name,
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-read.days, end_offset=-1 if read.earlier_only else 0),
        )
    return read.name if isinstance(read, Table) else read


def table_spec(table: Table, *, reads: Sequence[Read], group_name: str, kinds: set[str], owners: Iterable[str] = ("team:callintel",)) -> dg.AssetSpec:
    """The daily-partitioned asset that owns `table`, with `deps` derived from `reads`."""
    return dg.AssetSpec(
        table.name, deps=[_dep(r) for r in reads], description=table.description, group_name=group_name,
        kinds=kinds, owners=list(owners), partitions_def=call_date_partitions, code_version="1",
    )


def schema_check_spec(table: Table) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK, asset=table.name, blocking=True,
        description=f"`{table.name}` rows match their Pandera contract (`schemas.{table.model.__name__}`).",
    )


def table_asset_kwargs(table: Table, *, reads: Sequence[Read], owners: Iterable[str] = ("team:callintel",)) -> dict:
    """`@dg.asset` keyword arguments for a single-table asset (deps from `reads`, the schema check)."""
    return dict(
        name=table.name, deps=[_dep(r) for r in reads], description=table.description, owners=list(owners),
        partitions_def=call_date_partitions, backfill_policy=RANGE_BACKFILL, code_version="1",
        check_specs=[schema_check_spec(table)],
    )


def partition_dates(context: dg.AssetExecutionContext) -> list[dt.date]:
    """Every call date of the run: one for a partition run, the whole range for a single-run backfill."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=n) for n in range((end - start).days)]


def with_call_dates(frame: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each row's `call_date` taken from its call's rows in `source` (a table read for the
    run's dates): what a date-range run needs to write each row into its own partition."""
    dates = dict(zip(source["call_id"], source[PARTITION_COLUMN]))
    return frame.assign(**{PARTITION_COLUMN: frame["call_id"].map(dates)})


class UndeclaredReadError(dg.Failure):
    pass


class TableReader:
    """Reads tables for the running asset, refusing any table it did not declare (or own)."""

    def __init__(self, context: dg.AssetExecutionContext, lakehouse: Lakehouse):
        assets_def = context.assets_def
        self._context = context
        self._lakehouse = lakehouse
        self._allowed = {key.to_user_string() for key in (*assets_def.dependency_keys, *assets_def.keys)}
        self.read_names: set[str] = set()

    def __call__(self, table: Table, call_dates: list[dt.date] | None) -> pd.DataFrame:
        if table.name not in self._allowed:
            raise UndeclaredReadError(
                f"asset {self._context.assets_def.key.to_user_string()!r} reads table {table.name!r} without "
                f"declaring it: add it to the asset's reads= so the lineage shows it",
                allow_retries=False,
            )
        self.read_names.add(table.name)
        return self._lakehouse.read(table, call_dates)

    def metadata(self) -> dict:
        return {TABLES_READ: dg.MetadataValue.json(sorted(self.read_names))}


def write_table(
    context: dg.AssetExecutionContext,
    lakehouse: Lakehouse,
    table: Table,
    frame: pd.DataFrame,
    call_dates: list[dt.date],
    *,
    check_asset: str | None = None,
    scope: Mapping[str, str] | None = None,
    call_ids: list[str] | None = None,
    keep_call_ids: list[str] | None = None,
) -> tuple[dg.AssetCheckResult, dict]:
    """Stamp `run_id` (and `call_date` on single-date frames), then validate and MERGE through the
    lakehouse. Returns the blocking check result and the write metadata."""
    frame = frame.copy()
    if PARTITION_COLUMN not in frame.columns:
        if len(call_dates) != 1 and len(frame):
            raise ValueError(f"{table.name}: rows of a multi-date run must carry their own {PARTITION_COLUMN}")
        frame[PARTITION_COLUMN] = call_dates[0] if len(call_dates) == 1 else None
    frame["run_id"] = context.run_id
    outcome = lakehouse.write_validated(table, frame, call_dates, scope=scope, call_ids=call_ids, keep_call_ids=keep_call_ids)
    asset = check_asset or table.name
    if not outcome.written:
        violation = outcome.violation
        check = dg.AssetCheckResult(
            check_name=SCHEMA_CHECK, asset_key=asset, passed=False, severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failure_count": violation.failure_count,
                "failure_cases": dg.MetadataValue.md(violation.failure_cases.to_markdown(index=False)),
            },
            description=f"{violation.failure_count} contract violations; nothing was written to `{table.name}`.",
        )
        return check, {"written": False, "table": table.name}
    check = dg.AssetCheckResult(check_name=SCHEMA_CHECK, asset_key=asset, passed=True, metadata={"rows_checked": outcome.rows})
    return check, {
        "written": True, "table": table.name, "table_uri": dg.MetadataValue.path(lakehouse.table_uri(table.name)),
        "dagster/row_count": outcome.rows, **outcome.metrics,
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
    frame = QUARANTINED_CALLS.rows([{**row, "stage": stage, "quarantined_at": now} for row in rows])
    frame[PARTITION_COLUMN] = [row.get(PARTITION_COLUMN, default_date) for row in rows]
    for row in rows:
        context.log.warning(f"[{stage}] quarantined call {row['call_id']} ({row['blob_key']}): {row['reason']}")
    check, _ = write_table(context, lakehouse, QUARANTINED_CALLS, frame, call_dates, check_asset=stage, scope={"stage": stage})
    if not check.passed:
        raise ValueError(f"[{stage}] quarantine rows break their contract: {check.metadata}")
    return len(rows)
