"""Delta tables: `deltalake` (delta-rs) on a folder or object-store URI by default.

Every table is partitioned by `call_date` (a DATE column) and written by MERGE on its key, scoped to
one partition: rows of the partition that the new run no longer produces are deleted, matched rows
are updated, new rows inserted. A re-run of a partition therefore replaces exactly that partition's
rows and never touches another date.
"""

from __future__ import annotations

import abc
import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from pydantic import Field

PARTITION_COLUMN = "call_date"
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"  # the Delta protocol's default when the property is unset
ZERO_LOG_RETENTION = "interval 0 seconds"


def _sql_literal(value: object) -> str:
    if isinstance(value, dt.date):
        return f"CAST('{value.isoformat()}' AS DATE)"
    text = str(value).replace("'", "''")
    return f"'{text}'"


class Lakehouse(dg.ConfigurableResource, abc.ABC):
    """Table storage the assets write to and read from."""

    @abc.abstractmethod
    def merge_partition(
        self,
        table: str,
        frame: pa.Table,
        keys: list[str],
        call_date: dt.date,
        scope: dict[str, str] | None = None,
        call_ids: list[str] | None = None,
    ) -> dict[str, int]:
        """MERGE `frame` into `table`, replacing the rows of `call_date`.

        `scope` narrows what is replaced to rows with those column values (one stage's quarantine
        rows); `call_ids` narrows it to those calls (a re-run of only some calls of a day)."""

    @abc.abstractmethod
    def read(self, table: str, call_dates: list[dt.date] | None = None) -> pd.DataFrame:
        """Rows of `table` (of the given dates only, when given); empty frame if the table is absent."""

    @abc.abstractmethod
    def table_uri(self, table: str) -> str: ...

    @abc.abstractmethod
    def tables(self) -> list[str]: ...

    def delete_rows(self, table: str, predicate: str) -> int:
        """Delete rows matching a SQL predicate; returns rows deleted. Used by `forget_call`."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete rows; `forget_call` needs a delta-rs lakehouse")

    def purge_history(self, table: str) -> int:
        """Physically remove every file and log entry the current table version does not need."""
        raise NotImplementedError(f"{type(self).__name__} cannot purge history; `forget_call` needs a delta-rs lakehouse")


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
            raise NotImplementedError("listing tables is only supported for a local lakehouse root")
        root = Path(self.root)
        return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []

    def _open(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri(table), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None

    def merge_partition(self, table, frame, keys, call_date, scope=None, call_ids=None):
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
                join = " AND ".join(f"t.{k} = s.{k}" for k in [PARTITION_COLUMN, *keys])
                stale = [f"t.{PARTITION_COLUMN} = {_sql_literal(call_date)}"]
                stale += [f"t.{col} = {_sql_literal(val)}" for col, val in (scope or {}).items()]
                if call_ids is not None:
                    stale.append(f"t.call_id IN ({', '.join(_sql_literal(c) for c in call_ids) or 'NULL'})")
                metrics = (
                    target.merge(frame, predicate=join, source_alias="s", target_alias="t")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(" AND ".join(stale))
                    .execute()
                )
                return {k: int(v) for k, v in metrics.items() if k.startswith("num_target_rows")}
            except CommitFailedError:
                if attempt == self.commit_retries:
                    raise
                time.sleep(0.2 * (2**attempt))
        raise AssertionError("unreachable")

    def read(self, table, call_dates=None):
        target = self._open(table)
        if target is None:
            return pd.DataFrame()
        filters = [(PARTITION_COLUMN, "in", [d.isoformat() for d in call_dates])] if call_dates else None
        # delta-rs's own pyarrow filesystem handler leaves threads running at interpreter exit, which
        # aborts about one process in five that has read a table ("terminate called without an active
        # exception", delta-io/delta-rs#2184): a local table is read through pyarrow's filesystem.
        filesystem = None if "://" in self.root else pafs.SubTreeFileSystem(self.table_uri(table), pafs.LocalFileSystem())
        return target.to_pyarrow_table(filters=filters, filesystem=filesystem).to_pandas()

    def delete_rows(self, table: str, predicate: str) -> int:
        target = self._open(table)
        if target is None:
            return 0
        return int(target.delete(predicate).get("num_deleted_rows", 0))

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
