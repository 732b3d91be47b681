"""`raw_call_audio`: the inventory of a day's recordings in the blob store."""

import dagster as dg
import pandas as pd

from callintel_dagster.assets.io import (
    partition_date,
    table_asset_kwargs,
    write_quarantine,
    write_table,
)
from callintel_dagster.engines.ingest import inventory_recording
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tables import RAW_CALL_AUDIO


@dg.asset(**table_asset_kwargs(RAW_CALL_AUDIO, reads=[]), group_name="ingest", kinds={"delta", "python"})
def raw_call_audio(
    context: dg.AssetExecutionContext,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    audio_settings: AudioSettings,
) -> dg.MaterializeResult:
    """One row per recording in the day's blob folder: stable call id, checksum, duration, sample
    rate, channels, codec. Empty, truncated, non-audio or oversized files get `status=quarantined`
    with a reason (also in `quarantined_calls`); the rest of the day is processed normally."""
    call_date = partition_date(context)
    blobs = blob_store.list_recordings(context.partition_key)
    context.log.info(f"{len(blobs)} recordings under {blob_store.uri(context.partition_key)}")
    rows = []
    for number, blob in enumerate(blobs, start=1):
        with blob_store.local_copy(blob.key) as path:
            row = inventory_recording(path, blob.key, audio_settings.max_bytes, audio_settings.max_duration_s)
        rows.append({**row, "blob_version": blob.version})
        context.log.debug(f"inventoried {number}/{len(blobs)}: {blob.key} -> {row['status']}")
    frame = RAW_CALL_AUDIO.rows(rows)
    frame["ingested_at"] = pd.Timestamp.now(tz="UTC")

    quarantined = frame[frame["status"] == "quarantined"]
    write_quarantine(
        lakehouse, context, stage=RAW_CALL_AUDIO.name, call_dates=[call_date],
        rows=[
            {"call_id": r.call_id, "blob_key": r.blob_key, "blob_version": r.blob_version, "reason": r.error}
            for r in quarantined.itertuples()
        ],
    )
    check, written = write_table(context, lakehouse, RAW_CALL_AUDIO, frame, [call_date])
    return dg.MaterializeResult(
        metadata={
            **written,
            "recordings": len(frame),
            "quarantined": len(quarantined),
            "audio_hours": round(float(frame["duration_s"].fillna(0).sum()) / 3600, 3),
        },
        check_results=[check],
    )
