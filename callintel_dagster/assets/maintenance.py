"""`forget_call`: erase one call from the lakehouse and the blob store (right to erasure, retention).

An op job, not an asset: forgetting produces no data, it removes it from every asset's table at once.
It refuses while pipeline runs are queued or running, holds the exclusive lakehouse lock
(`resources/locks.py`) against writers for its whole length, fails on a call id no table knows,
and deletes the rendered dashboards that show the call (re-materialize `insights_dashboard`).

`forget_agent` erases one agent's voice data the same way (voiceprints and their provenance, the
agent-side voice samples of the agent's calls): the biometric part of agent voice enrollment.

Run `forget_call` with the call's id (`raw_call_audio.call_id`) from the launchpad, or:

    dagster job execute -m callintel_dagster.definitions -j forget_call -c forget.yaml

    # forget.yaml
    ops:
      forget_call_data:
        config:
          call_id: 0123456789abcdef
          delete_recording: true
"""

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from callintel_dagster.resources.blob_store import BlobStore, redacted_copy_key
from callintel_dagster.resources.lakehouse import Lakehouse, VacuumUnsupported
from callintel_dagster.resources.locks import (
    LakehouseLockTimeout,
    lakehouse_lock,
    lock_key,
)
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.tables import (
    AGENT_VOICE_SAMPLES,
    AGENT_VOICEPRINTS,
    PARTITION_COLUMN,
    RAW_CALL_AUDIO,
)

# Runs that may write to the lakehouse now or soon. Zero-retention VACUUM would delete the data
# files of their not-yet-committed writes, so forgetting refuses while any exists. The lakehouse
# lock (resources/locks.py) closes the gap between this check and the VACUUM, and covers writers
# that are not Dagster runs.
_WRITING_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


class ForgetCallConfig(dg.Config):
    call_id: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="The call to erase: `call_id` as in every table (sha1 of the blob key, 16 hex digits). "
        "The strict pattern also keeps the value safe to embed in the Delta DELETE predicate.",
    )
    delete_recording: bool = Field(
        default=True,
        description="Also delete the original recording. When kept, the next run of the call's date "
        "ingests it again and re-creates its rows. The PHI-masked copy is always deleted.",
    )
    allow_unknown: bool = Field(
        default=False,
        description="Purge table history even when no table holds the call any more: to finish a forget_call "
        "that deleted the rows and then failed before its VACUUM. Off, an unknown call id fails the run.",
    )
    lock_timeout_s: float = Field(
        default=300.0, description="How long to wait for pipeline writes to release the lakehouse lock."
    )


def drop_voiceprints(lakehouse: Lakehouse, doomed: Callable[[object], bool]) -> int:
    """Delete the `agent_voiceprints` rows for which `doomed(row)` holds: each affected date is
    rewritten without them (a partition MERGE deletes the rows its source lacks), so this works on
    every lakehouse without a predicate DELETE on JSON. Runs under the caller's exclusive lock."""
    stored = lakehouse.read(AGENT_VOICEPRINTS)
    if stored.empty:
        return 0
    drop = pd.Series([bool(doomed(row)) for row in stored.itertuples()], index=stored.index, dtype=bool)
    dropped = stored[drop]
    for call_date in sorted(set(dropped[PARTITION_COLUMN])):
        remaining = stored[~drop & (stored[PARTITION_COLUMN] == call_date)]
        lakehouse.merge_partition(
            AGENT_VOICEPRINTS.name, AGENT_VOICEPRINTS.arrow_rows(remaining, call_date), list(AGENT_VOICEPRINTS.keys), call_date,
        )
    return len(dropped)



def _refuse_while_runs_write(context: dg.OpExecutionContext) -> None:
    active = [
        run.run_id
        for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=_WRITING_STATUSES))
        if run.run_id != context.run_id
    ]
    if active:
        raise dg.Failure(
            f"{len(active)} other run(s) queued or in progress ({', '.join(active)}); zero-retention VACUUM would "
            "delete their uncommitted files. Re-run forget_call when they have finished."
        )


def _drop_dashboards_showing(context: dg.OpExecutionContext, reports: ReportSettings, call_id: str) -> list[str]:
    """Delete the rendered dashboards that show the call: HTML is a copy of the tables, not a view
    of them, so a dashboard rendered before the erasure would keep the call on screen."""
    root = Path(reports.root)
    shown = sorted(p for p in root.glob("*.html") if call_id in p.read_text(encoding="utf-8", errors="replace")) if root.is_dir() else []
    for path in shown:
        path.unlink()
    if shown:
        context.log.warning(
            f"call {call_id}: deleted {len(shown)} dashboard(s) that showed it ({', '.join(p.name for p in shown)}); "
            "re-materialize insights_dashboard for their dates to render them without it"
        )
    return [p.name for p in shown]


@dg.op(
    description="Delete the call's recording and PHI-masked copy, its rows in every Delta table, every "
    "old table version that still holds them (VACUUM, retention 0) and the dashboards that show it.",
)
def forget_call_data(
    context: dg.OpExecutionContext,
    config: ForgetCallConfig,
    lakehouse: Lakehouse,
    blob_store: BlobStore,
    models: ModelSettings,
    reports: ReportSettings,
) -> dg.Output[dict]:
    """Order matters for retries: blobs go first, while `raw_call_audio` still names them, so a run
    that fails half-way can be repeated and no pipeline run can re-ingest the recording after its rows
    are gone. Blob keys are deliberately not logged: the event log outlives the erasure.

    Everything runs under the exclusive lakehouse lock, which pipeline writes hold shared: no write
    can start between the run check and the VACUUM, nor commit files the VACUUM is deleting."""
    _refuse_while_runs_write(context)
    try:
        with lakehouse_lock(lock_key(lakehouse), exclusive=True, timeout_s=config.lock_timeout_s):
            return _forget(context, config, lakehouse, blob_store, models, reports)
    except LakehouseLockTimeout as exc:
        raise dg.Failure(f"call {config.call_id}: not erased: {exc} (a pipeline run writing?); re-run forget_call later") from exc


def _forget(
    context: dg.OpExecutionContext,
    config: ForgetCallConfig,
    lakehouse: Lakehouse,
    blob_store: BlobStore,
    models: ModelSettings,
    reports: ReportSettings,
) -> dg.Output[dict]:
    call_id = config.call_id
    tables = lakehouse.tables()

    inventory = lakehouse.read(RAW_CALL_AUDIO)
    blob_keys = sorted(set(inventory.loc[inventory["call_id"] == call_id, "blob_key"]))
    doomed = [redacted_copy_key(key, models.redacted_folder) for key in blob_keys]
    if config.delete_recording:
        doomed += blob_keys
    elif blob_keys:
        context.log.warning(f"call {call_id}: recording kept; the next run of its date will ingest it again")
    blobs_deleted = sum(blob_store.delete(key) for key in doomed)
    context.log.info(f"call {call_id}: deleted {blobs_deleted} of {len(doomed)} blob(s) (recording and/or masked copy)")

    rows_deleted = {}
    for table in tables:
        if table == AGENT_VOICEPRINTS.name:  # keyed by agent: a voiceprint built from the call goes
            rows_deleted[table] = drop_voiceprints(lakehouse, lambda row: call_id in json.loads(row.call_ids_json))
        else:
            rows_deleted[table] = lakehouse.delete_call(table, call_id)
        context.log.info(f"call {call_id}: {table}: {rows_deleted[table]} row(s) deleted")
    if not blob_keys and not any(rows_deleted.values()) and not config.allow_unknown:
        raise dg.Failure(
            f"call {call_id}: unknown: not in raw_call_audio nor in any of {len(tables)} table(s); nothing erased. "
            "Check the id; to finish an earlier forget_call of it that failed after deleting the rows, "
            "re-run with allow_unknown: true."
        )
    files_purged, not_vacuumed = {}, []
    for table in tables:
        try:
            files_purged[table] = lakehouse.purge_history(table)
        except VacuumUnsupported:
            files_purged[table] = 0
            not_vacuumed.append(table)
    context.log.info(f"VACUUM (retention 0) removed {sum(files_purged.values())} data file(s) across {len(tables)} table(s)")
    if not_vacuumed:
        context.log.warning(
            f"call {call_id}: this Spark engine has no VACUUM: the rows are deleted from the current version of "
            f"{len(not_vacuumed)} table(s), but older versions' data files still hold them until VACUUM ... "
            "RETAIN 0 HOURS runs on an engine that has it (Databricks)"
        )
    dashboards = _drop_dashboards_showing(context, reports, call_id)

    summary = {
        "rows_deleted": rows_deleted, "files_purged": files_purged, "blobs_deleted": blobs_deleted,
        "dashboards_deleted": dashboards, "tables_not_vacuumed": not_vacuumed,
    }
    return dg.Output(
        summary,
        metadata={
            "call_id": call_id,
            "rows_deleted": dg.MetadataValue.json(rows_deleted),
            "total_rows_deleted": sum(rows_deleted.values()),
            "data_files_purged": sum(files_purged.values()),
            "blobs_deleted": blobs_deleted,
            "dashboards_deleted": dg.MetadataValue.json(dashboards),
            "tables_not_vacuumed": dg.MetadataValue.json(not_vacuumed),
        },
    )


@dg.job(
    description="Erase one call (run config: `ops.forget_call_data.config.call_id`) from every table, "
    "old table version, blob and rendered dashboard. It refuses while pipeline runs are queued or running "
    "and waits for the lakehouse lock that writes hold."
)
def forget_call():
    forget_call_data()


class ForgetAgentConfig(dg.Config):
    agent_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="The agent whose voice data to erase (`agent_id`, the `agent-7__…` file-name prefix). The "
        "strict pattern keeps the value safe in table predicates.",
    )
    allow_unknown: bool = Field(
        default=False,
        description="Purge table history even when no voice data of the agent is left (to finish an earlier "
        "forget_agent that failed before its VACUUM). Off, an unknown agent fails the run.",
    )
    lock_timeout_s: float = Field(
        default=300.0, description="How long to wait for pipeline writes to release the lakehouse lock."
    )


@dg.op(
    description="Delete an agent's voiceprints (every date, with their provenance) and the agent-side voice "
    "samples of their calls, then every old table version that still holds them (VACUUM, retention 0).",
)
def forget_agent_voice(context: dg.OpExecutionContext, config: ForgetAgentConfig, lakehouse: Lakehouse) -> dg.Output[dict]:
    """The calls themselves stay (their transcripts are not biometric data); the agent's calls that
    are processed again after this are enrolled again unless `models.voice_enrollment` is off."""
    _refuse_while_runs_write(context)
    agent_id = config.agent_id
    try:
        with lakehouse_lock(lock_key(lakehouse), exclusive=True, timeout_s=config.lock_timeout_s):
            samples = lakehouse.read(AGENT_VOICE_SAMPLES)
            calls = sorted(set(samples.loc[samples["agent_id"] == agent_id, "call_id"]))
            rows_deleted = {
                AGENT_VOICE_SAMPLES.name: sum(lakehouse.delete_call(AGENT_VOICE_SAMPLES.name, call_id) for call_id in calls),
                AGENT_VOICEPRINTS.name: drop_voiceprints(lakehouse, lambda row: row.agent_id == agent_id),
            }
            if not any(rows_deleted.values()) and not config.allow_unknown:
                raise dg.Failure(
                    f"agent {agent_id}: no voiceprint or voice sample on file; nothing erased. Check the id; to finish "
                    "an earlier forget_agent that failed after deleting the rows, re-run with allow_unknown: true."
                )
            files_purged = {table: lakehouse.purge_history(table) for table in rows_deleted}
    except LakehouseLockTimeout as exc:
        raise dg.Failure(f"agent {agent_id}: not erased: {exc} (a pipeline run writing?); re-run forget_agent later") from exc
    context.log.info(f"agent {agent_id}: deleted {rows_deleted}; VACUUM removed {sum(files_purged.values())} data file(s)")
    return dg.Output(
        {"rows_deleted": rows_deleted, "files_purged": files_purged},
        metadata={"agent_id": agent_id, "rows_deleted": dg.MetadataValue.json(rows_deleted),
                  "data_files_purged": sum(files_purged.values())},
    )


@dg.job(
    description="Erase one agent's voiceprints and voice samples (run config: `ops.forget_agent_voice.config.agent_id`) "
    "and the old table versions holding them. Like forget_call, it refuses while pipeline runs are queued or running."
)
def forget_agent():
    forget_agent_voice()
