"""`raw_call_audio`: the inventory of a day's recordings in the blob store."""

import datetime as dt

import dagster as dg
import pandas as pd

from callintel_dagster.assets.io import (
    TableReader,
    partition_dates,
    table_asset_kwargs,
    write_quarantine,
    write_table,
)
from callintel_dagster.engines.ingest import inventory_recording
from callintel_dagster.resources.blob_store import BlobStore, MissingLocationError
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tables import RAW_CALL_AUDIO


class IngestConfig(dg.Config):
    allow_purge: bool = False
    """Let this run delete the rows of recordings that vanished from the day folder, however many."""


def _refuse_mass_deletion(known: set[str], listed: set[str], max_share: float, folder: str) -> None:
    vanished = known - listed
    if known and len(vanished) > max_share * len(known):
        raise dg.Failure(
            f"{len(vanished)} of the {len(known)} recordings known for this day are no longer in {folder}; "
            f"nothing was changed. If they were removed on purpose, re-run with "
            f"`ops: raw_call_audio: config: allow_purge: true`.",
            allow_retries=False,
        )


def _inventory_day(
    context: dg.AssetExecutionContext,
    call_date: dt.date,
    known: pd.DataFrame,
    config: IngestConfig,
    blob_store: BlobStore,
    audio_settings: AudioSettings,
) -> list[dict]:
    """The inventory rows of one day folder; `known` holds the rows an earlier run stored for it."""
    folder = blob_store.url(call_date.isoformat())
    try:
        blobs = blob_store.list_recordings(call_date.isoformat())
    except MissingLocationError as exc:
        raise dg.Failure(str(exc)) from exc
    if not config.allow_purge:
        _refuse_mass_deletion(set(known["blob_key"]), {blob.key for blob in blobs}, audio_settings.max_vanished_share, folder)
    # A recording already inventoried at this version keeps its row: no download, probe or checksum.
    # Rows stored before channel layouts were measured (no `channel_layout`) are inventoried once more.
    current = (known["status"] == "ok") & known["channel_layout"].notna()
    unchanged = {
        (row["blob_key"], row["blob_version"]): row
        for row in known[current][RAW_CALL_AUDIO.payload_columns].to_dict("records")
    }
    rows = []
    for number, blob in enumerate(blobs, start=1):
        row = unchanged.get((blob.key, blob.version))
        if row is None:
            with blob_store.local_copy(blob.key) as path:
                row = inventory_recording(path, blob.key, audio_settings.max_bytes, audio_settings.max_duration_s)
            row = {**row, "blob_version": blob.version, "ingested_at": pd.Timestamp.now(tz="UTC")}
            context.log.debug(f"inventoried {number}/{len(blobs)}: {blob.key} -> {row['status']}")
        rows.append({**row, "call_date": call_date})
    fresh = len(blobs) - len(unchanged.keys() & {(b.key, b.version) for b in blobs})
    context.log.info(f"{call_date}: {len(blobs)} recordings under {folder}, {fresh} new or changed inventoried")
    return rows


@dg.asset(**table_asset_kwargs(RAW_CALL_AUDIO, reads=[]), group_name="ingest", kinds={"delta", "python"})
def raw_call_audio(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    audio_settings: AudioSettings,
) -> dg.MaterializeResult:
    """One row per recording in the day's blob folder: stable call id, checksum, duration, sample
    rate, channels, codec, channel layout (a two-channel file with one party per channel is
    `split_stereo`; a copied mix is `mono_in_stereo`). Empty, truncated, non-audio or oversized files get `status=quarantined`
    with a reason (also in `quarantined_calls`); the rest of the day is processed normally. A missing
    folder, or a listing that lost most of the day's recordings, fails the step and changes nothing."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    known = read(RAW_CALL_AUDIO, call_dates)
    rows = []
    for call_date in call_dates:
        rows += _inventory_day(context, call_date, known[known["call_date"] == call_date], config, blob_store, audio_settings)
    frame = RAW_CALL_AUDIO.rows(rows)

    quarantined = frame[frame["status"] == "quarantined"]
    write_quarantine(
        lakehouse, context, stage=RAW_CALL_AUDIO.name, call_dates=call_dates,
        rows=[
            {"call_id": r.call_id, "call_date": r.call_date, "blob_key": r.blob_key, "blob_version": r.blob_version, "reason": r.error}
            for r in quarantined.itertuples()
        ],
    )
    check, written = write_table(context, lakehouse, RAW_CALL_AUDIO, frame, call_dates)
    return dg.MaterializeResult(
        metadata={
            **written,
            **read.metadata(),
            "recordings": len(frame),
            "quarantined": len(quarantined),
            "audio_hours": round(float(frame["duration_s"].fillna(0).sum()) / 3600, 3),
        },
        check_results=[check],
    )
