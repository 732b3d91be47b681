"""`forget_call`: erase one call from the lakehouse and the blob store (right to erasure, retention).

An op job, not an asset: forgetting produces no data, it removes it from every asset's table at once.

Run it with the call's id (`raw_call_audio.call_id`) from the launchpad, or:

    dagster job execute -m callintel_dagster.definitions -j forget_call -c forget.yaml

    # forget.yaml
    ops:
      forget_call_data:
        config:
          call_id: 0123456789abcdef
          delete_recording: true
"""

from pathlib import PurePosixPath

import dagster as dg
from pydantic import Field

from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.tables import RAW_CALL_AUDIO

# Runs that may be writing to the lakehouse right now. Zero-retention VACUUM would delete the data
# files of their not-yet-committed writes, so forgetting waits until none is left.
_WRITING_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


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


def redacted_copy_key(blob_key: str, redacted_folder: str) -> str:
    """Blob key of the PHI-masked copy that `transcripts` writes next to a recording."""
    key = PurePosixPath(blob_key)
    return str(key.parent / redacted_folder / f"{key.stem}.redacted.wav")


def _refuse_while_runs_write(context: dg.OpExecutionContext) -> None:
    active = [
        run.run_id
        for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=_WRITING_STATUSES))
        if run.run_id != context.run_id
    ]
    if active:
        raise dg.Failure(
            f"{len(active)} other run(s) in progress ({', '.join(active)}); zero-retention VACUUM would delete "
            "their uncommitted files. Re-run forget_call when they have finished."
        )


@dg.op(
    description="Delete the call's recording and PHI-masked copy, its rows in every Delta table, and every "
    "old table version that still holds them (VACUUM, retention 0). Idempotent.",
)
def forget_call_data(
    context: dg.OpExecutionContext,
    config: ForgetCallConfig,
    lakehouse: Lakehouse,
    blob_store: BlobStore,
    models: ModelSettings,
) -> dg.Output[dict]:
    """Order matters for retries: blobs go first, while `raw_call_audio` still names them, so a run
    that fails half-way can be repeated and no pipeline run can re-ingest the recording after its rows
    are gone. Blob keys are deliberately not logged: the event log outlives the erasure."""
    _refuse_while_runs_write(context)
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
        rows_deleted[table] = lakehouse.delete_call(table, call_id)
        context.log.info(f"call {call_id}: {table}: {rows_deleted[table]} row(s) deleted")
    files_purged = {table: lakehouse.purge_history(table) for table in tables}
    context.log.info(f"VACUUM (retention 0) removed {sum(files_purged.values())} data file(s) across {len(tables)} table(s)")

    summary = {"rows_deleted": rows_deleted, "files_purged": files_purged, "blobs_deleted": blobs_deleted}
    return dg.Output(
        summary,
        metadata={
            "call_id": call_id,
            "rows_deleted": dg.MetadataValue.json(rows_deleted),
            "total_rows_deleted": sum(rows_deleted.values()),
            "data_files_purged": sum(files_purged.values()),
            "blobs_deleted": blobs_deleted,
        },
    )


@dg.job(
    description="Erase one call (run config: `ops.forget_call_data.config.call_id`) from every table, "
    "old table version and blob. Run it when no pipeline run is writing; it refuses otherwise."
)
def forget_call():
    forget_call_data()
