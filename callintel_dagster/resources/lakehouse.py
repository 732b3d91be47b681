"""Delta tables: `deltalake` (delta-rs) on a folder or object-store URI by default.

`Lakehouse.write_validated` is the only way a table is written: validate the frame against the
table's contract (`tables.py`), convert it to the table's Arrow schema, then MERGE it one partition
at a time. The MERGE is scoped to one partition: matched rows are updated, new rows inserted, and
rows of that date that the run no longer produces are deleted, unless the run says it must keep
them (`keep_call_ids`: calls that failed this time keep their last good rows). A re-run of a
partition therefore replaces exactly that partition's rows and never touches another date.

Both implementations (delta-rs here, Spark SQL in `resources/databricks.py`) share that write path,
the delete predicate (`stale_rows_predicate`), schema evolution and erasure; they differ only in how
they run a MERGE, a read, a DELETE and a VACUUM.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from pydantic import Field

from callintel_dagster.resources.locks import lock_key, shared_lakehouse_lock
from callintel_dagster.tables import PARTITION_COLUMN, TABLES, ContractViolation, Table

LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"  # the Delta protocol's default when the property is unset
ZERO_LOG_RETENTION = "interval 0 seconds"

logger = logging.getLogger(__name__)


class SchemaMismatchError(ValueError):
    """A writer's column type differs from the stored table's: changing a type needs a migration."""


class VacuumUnsupported(RuntimeError):
    """The Spark engine has no `VACUUM` (Sail 0.7): rows deleted from the current version still sit in
    the data files of older versions until a VACUUM runs on an engine that has it (Databricks)."""


def sql_literal(value: object) -> str:
    if isinstance(value, dt.date):
        return f"CAST('{value.isoformat()}' AS DATE)"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def stale_rows_predicate(
    call_date: dt.date,
    scope: Mapping[str, str] | None = None,
    call_ids: list[str] | None = None,
    keep_call_ids: list[str] | None = None,
    column: Callable[[str], str] = lambda name: f"t.{name}",
) -> str:
    """Which target rows a partition MERGE may delete when the source no longer has them: rows of
    `call_date`, narrowed to a `scope` (one stage's quarantine rows) and to `call_ids` (a re-run of
    some calls), never the rows of `keep_call_ids` (calls that failed and keep their last results)."""
    clauses = [f"{column(PARTITION_COLUMN)} = {sql_literal(call_date)}"]
    clauses += [f"{column(name)} = {sql_literal(value)}" for name, value in (scope or {}).items()]
    if call_ids is not None:
        clauses.append(f"{column('call_id')} IN ({', '.join(sql_literal(c) for c in call_ids) or 'NULL'})")
    if keep_call_ids:
        clauses.append(f"{column('call_id')} NOT IN ({', '.join(sql_literal(c) for c in keep_call_ids)})")
    return " AND ".join(clauses)


def added_columns(table: str, stored: pa.Schema, incoming: pa.Schema) -> list[pa.Field]:
    """Columns `incoming` has and the stored table lacks. A column whose type changed raises (an
    all-null column, typed `null`, fits any type)."""
    changed = [
        f"{field.name}: stored {stored.field(field.name).type}, written {field.type}"
        for field in incoming
        if field.name in stored.names and not pa.types.is_null(field.type)
        and not stored.field(field.name).type.equals(field.type)
    ]
    if changed:
        raise SchemaMismatchError(f"table {table!r}: column types changed ({'; '.join(changed)}); migrate the table first")
    return [field for field in incoming if field.name not in stored.names]


@dataclasses.dataclass(frozen=True)
class WriteOutcome:
    """What `write_validated` did: `violation` is set (and nothing written) when the frame broke its contract."""

    table: str
    rows: int = 0
    metrics: dict[str, int] = dataclasses.field(default_factory=dict)
    violation: ContractViolation | None = None

    @property
    def written(self) -> bool:
        return self.violation is None


class Lakehouse(dg.ConfigurableResource, abc.ABC):
    """Table storage the assets write to and read from. Subclasses implement the storage verbs;
    validation, conversion and the partition scoping live here, once."""

    write_lock_timeout_s: float = Field(
        default=1800.0,
        description="How long a write waits for a running `forget_call` (which holds the lakehouse lock "
        "exclusively) before it fails.",
    )

    def read(self, table: Table | str, call_dates: list[dt.date] | None = None) -> pd.DataFrame:
        """Rows of `table` (of the given dates only, when given). A registered table always comes back
        with its contract's columns, even before it exists; an unregistered name as stored."""
        spec = table if isinstance(table, Table) else TABLES.get(table)
        frame = self._read(spec.name if spec else str(table), call_dates)
        return spec.conform(frame) if spec else frame

    def write_validated(
        self,
        table: Table,
        frame: pd.DataFrame,
        call_dates: list[dt.date],
        *,
        scope: Mapping[str, str] | None = None,
        call_ids: list[str] | None = None,
        keep_call_ids: list[str] | None = None,
    ) -> WriteOutcome:
        """Validate `frame` against `table`'s contract and, only when it passes, MERGE it into each
        partition of `call_dates` (see `merge_partition` for `scope` / `call_ids` / `keep_call_ids`)."""
        valid = table.validate(frame)
        if isinstance(valid, ContractViolation):
            return WriteOutcome(table.name, violation=valid)
        totals: dict[str, int] = {}
        # Erasure (`forget_call`) holds this lock exclusively while it vacuums with zero retention,
        # which would delete the files of a write in flight.
        with shared_lakehouse_lock(lock_key(self), timeout_s=self.write_lock_timeout_s):
            for call_date in call_dates:
                metrics = self.merge_partition(
                    table.name, table.arrow_rows(valid, call_date), list(table.keys), call_date,
                    scope=scope, call_ids=call_ids, keep_call_ids=keep_call_ids,
                )
                for name, value in metrics.items():
                    totals[name] = totals.get(name, 0) + value
        return WriteOutcome(table.name, rows=len(valid), metrics=totals)

    @abc.abstractmethod
    def merge_partition(
        self,
        table: str,
        frame: pa.Table,
        keys: list[str],
        call_date: dt.date,
        scope: Mapping[str, str] | None = None,
        call_ids: list[str] | None = None,
        keep_call_ids: list[str] | None = None,
    ) -> dict[str, int]:
        """MERGE `frame` into `table`, replacing the rows of `call_date` (see `stale_rows_predicate`).
        A column the stored table lacks is added first; a changed column type raises."""

    @abc.abstractmethod
    def _read(self, table: str, call_dates: list[dt.date] | None) -> pd.DataFrame:
        """Stored rows; an empty frame without columns when the table does not exist."""

    @abc.abstractmethod
    def table_uri(self, table: str) -> str: ...

    @abc.abstractmethod
    def tables(self) -> list[str]: ...

    @abc.abstractmethod
    def delete_call(self, table: str, call_id: str) -> int:
        """Delete one call's rows (erasure); returns the rows deleted."""

    @abc.abstractmethod
    def purge_history(self, table: str) -> int:
        """Physically remove every file and log entry the current table version does not need.
        Raises `VacuumUnsupported` where the engine cannot."""


class DeltaLakehouse(Lakehouse):
    """Delta tables under `root` (a local folder, or `s3://` / `abfss://` with storage options)."""

    root: str = Field(default="data/lakehouse", description="Folder or URI that holds one sub-folder per Delta table.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="delta-rs object-store options (credentials via EnvVar)."
    )
    commit_retries: int = Field(default=5, description="Retries when a concurrent writer wins the commit race.")

    def table_uri(self, table: str) -> str:
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{table}"
        return str(Path(self.root).resolve() / table)

    def tables(self) -> list[str]:
        if "://" in self.root:
            return [name for name in TABLES if self._open(name) is not None]
        root = Path(self.root)
        return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []

    def _open(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri(table), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None

    def _evolve(self, table: str, target: DeltaTable, frame: pa.Table) -> None:
        new = added_columns(table, pa.schema(target.schema().to_arrow()), frame.schema)
        if new:
            from deltalake import Field as DeltaField
            from deltalake import Schema as DeltaSchema

            fields = DeltaSchema.from_arrow(pa.schema(new)).fields
            target.alter.add_columns([DeltaField(f.name, f.type, nullable=True) for f in fields])
            logger.warning(f"table {table!r}: added column(s) {', '.join(f.name for f in new)} (schema migration)")

    def merge_partition(self, table, frame, keys, call_date, scope=None, call_ids=None, keep_call_ids=None):
        if PARTITION_COLUMN not in frame.column_names:
            raise ValueError(f"table {table!r}: frame lacks the partition column {PARTITION_COLUMN!r}")
        uri = self.table_uri(table)
        for attempt in range(self.commit_retries + 1):
            try:
                target = self._open(table)
                if target is None:
                    write_deltalake(
                        uri, frame, partition_by=[PARTITION_COLUMN], mode="append",
                        storage_options=self.storage_options or None,
                    )
                    return {"num_target_rows_inserted": frame.num_rows, "num_target_rows_deleted": 0, "num_target_rows_updated": 0}
                self._evolve(table, target, frame)
                target = self._open(table)
                join = " AND ".join(f"t.{k} = s.{k}" for k in [PARTITION_COLUMN, *keys])
                metrics = (
                    target.merge(frame, predicate=join, source_alias="s", target_alias="t")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(stale_rows_predicate(call_date, scope, call_ids, keep_call_ids))
                    .execute()
                )
                return {k: int(v) for k, v in metrics.items() if k.startswith("num_target_rows")}
            except CommitFailedError:
                if attempt == self.commit_retries:
                    raise
                time.sleep(0.2 * (2**attempt))
        raise AssertionError("unreachable")

    def _read(self, table, call_dates):
        target = self._open(table)
        if target is None:
            return pd.DataFrame()
        filters = [(PARTITION_COLUMN, "in", [d.isoformat() for d in call_dates])] if call_dates else None
        # delta-rs's own pyarrow filesystem handler leaves threads running at interpreter exit, which
        # aborts about one process in five that has read a table ("terminate called without an active
        # exception", delta-io/delta-rs#2184): a local table is read through pyarrow's filesystem.
        filesystem = None if "://" in self.root else pafs.SubTreeFileSystem(self.table_uri(table), pafs.LocalFileSystem())
        return target.to_pyarrow_table(filters=filters, filesystem=filesystem).to_pandas()

    def delete_call(self, table: str, call_id: str) -> int:
        target = self._open(table)
        if target is None:
            return 0
        return int(target.delete(f"call_id = {sql_literal(call_id)}").get("num_deleted_rows", 0))

    def purge_history(self, table: str) -> int:
        """VACUUM with zero retention, then drop the transaction log before the current version.

        A Delta DELETE only rewrites the data files that held the rows; the old files stay on disk
        for time travel until VACUUM removes them. `full=True` also removes files no commit ever
        referenced (left by a killed writer), which may hold the same rows. The log itself keeps
        per-file min/max column statistics (call ids, blob keys, transcript text prefixes) and the
        DELETE predicate, so the log before a fresh checkpoint is expired too: log cleanup only
        honours `delta.logRetentionDuration`, which is set to zero for that one cleanup and then
        restored. Time travel to any earlier version is gone afterwards, by design.

        Zero retention deletes the files of a write that has not committed yet, so this must not run
        while another writer is active (`forget_call` holds the exclusive lakehouse lock, `resources/locks.py`).
        Returns the number of data files removed."""
        target = self._open(table)
        if target is None:
            return 0
        removed = target.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
        previous = target.metadata().configuration.get(LOG_RETENTION_PROPERTY, DEFAULT_LOG_RETENTION)
        if previous == ZERO_LOG_RETENTION:  # left behind by a purge that was killed mid-way
            previous = DEFAULT_LOG_RETENTION
        target.alter.set_table_properties({LOG_RETENTION_PROPERTY: ZERO_LOG_RETENTION})
        try:
            target.create_checkpoint()
            target.cleanup_metadata()
        finally:
            # Never leave zero log retention behind: every later commit would expire the history.
            target.alter.set_table_properties({LOG_RETENTION_PROPERTY: previous})
        return len(removed)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quoted(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain column name: {name!r}")
    return f"`{name}`"


def merge_sql(
    target: str,
    source_view: str,
    keys: list[str],
    call_date: dt.date,
    scope: Mapping[str, str] | None = None,
    call_ids: list[str] | None = None,
    keep_call_ids: list[str] | None = None,
) -> str:
    """Delta `MERGE INTO` with the semantics of `DeltaLakehouse.merge_partition`: join on
    `call_date` + keys, update matches, insert new rows, delete only `stale_rows_predicate`'s rows."""
    on = " AND ".join(f"t.{_quoted(k)} = s.{_quoted(k)}" for k in [PARTITION_COLUMN, *keys])
    stale = stale_rows_predicate(call_date, scope, call_ids, keep_call_ids, column=lambda name: f"t.{_quoted(name)}")
    return (
        f"MERGE INTO {target} AS t\n"
        f"USING {source_view} AS s\n"
        f"ON {on}\n"
        "WHEN MATCHED THEN UPDATE SET *\n"
        "WHEN NOT MATCHED THEN INSERT *\n"
        f"WHEN NOT MATCHED BY SOURCE AND {stale} THEN DELETE"
    )


class SparkDeltaLakehouse(Lakehouse):
    """Delta tables written with Spark SQL `MERGE INTO` (Unity Catalog on Databricks, or any Spark
    session with Delta). Same keys, partition-scoped delete, schema evolution and erasure as
    `DeltaLakehouse`."""

    catalog: str = Field(default="main", description="Unity Catalog catalog.")
    schema_name: str = Field(default="callintel", description="Schema (database) that holds one table per asset.")
    remote: str | None = Field(
        default=None,
        description="Spark Connect URL (`sc://host:port`, e.g. Databricks Connect or Sail). Unset: the process's "
        "own Spark session (code running on a cluster).",
    )

    def _spark(self):
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.remote(self.remote) if self.remote else SparkSession.builder
        return builder.getOrCreate()

    def table_uri(self, table: str) -> str:
        return f"`{self.catalog}`.`{self.schema_name}`.`{table}`"

    def _exists(self, spark, table: str) -> bool:
        return spark.catalog.tableExists(f"{self.catalog}.{self.schema_name}.{table}")

    def tables(self) -> list[str]:
        return sorted(t.name for t in self._spark().catalog.listTables(f"{self.catalog}.{self.schema_name}"))

    def merge_partition(self, table, frame, keys, call_date, scope=None, call_ids=None, keep_call_ids=None):
        if PARTITION_COLUMN not in frame.column_names:
            raise ValueError(f"table {table!r}: frame lacks the partition column {PARTITION_COLUMN!r}")
        spark = self._spark()
        source = spark.createDataFrame(frame.to_pandas(), schema=_spark_schema(frame.schema))
        name = self.table_uri(table)
        if not self._exists(spark, table):
            source.write.format("delta").partitionBy(PARTITION_COLUMN).saveAsTable(name)
            return {"num_target_rows_inserted": frame.num_rows, "num_target_rows_deleted": 0, "num_target_rows_updated": 0}
        stored = _arrow_schema_of(spark.table(name).schema)
        for field in added_columns(table, stored, frame.schema):
            spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({_quoted(field.name)} {_SPARK_SQL_TYPES[str(field.type)]})")
            logger.warning(f"table {table!r}: added column {field.name} (schema migration)")
        view = f"callintel_merge_source_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        try:
            row = spark.sql(merge_sql(name, view, keys, call_date, scope, call_ids, keep_call_ids)).first()
        finally:
            spark.catalog.dropTempView(view)
        # Databricks reports inserted/updated/deleted rows; engines that report only a total (Sail) give that.
        reported = row.asDict() if row is not None else {}
        metrics = {f"num_target_rows_{what}": int(reported[f"num_{what}_rows"])
                   for what in ("inserted", "updated", "deleted") if f"num_{what}_rows" in reported}
        return metrics or {"num_target_rows_affected": int(next(iter(reported.values()), 0))}

    def _read(self, table, call_dates):
        spark = self._spark()
        if not self._exists(spark, table):
            return pd.DataFrame()
        frame = spark.table(self.table_uri(table))
        if call_dates:
            frame = frame.where(frame[PARTITION_COLUMN].isin(list(call_dates)))
        return frame.toPandas()

    def delete_call(self, table: str, call_id: str) -> int:
        spark = self._spark()
        if not self._exists(spark, table):
            return 0
        row = spark.sql(f"DELETE FROM {self.table_uri(table)} WHERE call_id = {sql_literal(call_id)}").first()
        return int(next(iter(row.asDict().values()), 0)) if row is not None else 0

    def purge_history(self, table: str) -> int:
        """`VACUUM … RETAIN 0 HOURS` (Delta's retention check must be off for the session). Returns the
        number of files removed where the engine reports it, else 0; raises `VacuumUnsupported` on an
        engine whose SQL has no VACUUM (Sail)."""
        spark = self._spark()
        if not self._exists(spark, table):
            return 0
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        try:
            return len(spark.sql(vacuum_sql(self.table_uri(table))).collect())
        except Exception as exc:
            if _NO_VACUUM.search(str(exc)):
                raise VacuumUnsupported(f"table {table!r}: this Spark engine has no VACUUM ({exc})".splitlines()[0]) from exc
            raise


def vacuum_sql(table_uri: str) -> str:
    return f"VACUUM {table_uri} RETAIN 0 HOURS"


# How Sail 0.7 refuses a statement its SQL parser does not know.
_NO_VACUUM = re.compile(r"VACUUM", re.IGNORECASE)

_SPARK_SQL_TYPES = {
    "string": "STRING", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN",
    "date32[day]": "DATE", "timestamp[us, tz=UTC]": "TIMESTAMP",
}


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(", ".join(f"{f.name}: {_SPARK_SQL_TYPES[str(f.type)]}" for f in schema))


def _arrow_schema_of(spark_schema) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_schema, timezone="UTC")
