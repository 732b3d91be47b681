"""`valid_segments` + `speech_activity`: decoded audio with silence removed by silero-vad."""

import time

import dagster as dg
import pandas as pd

from callintel_dagster.assets.incremental import StageConfig, plan_stage
from callintel_dagster.assets.io import (
    RANGE_BACKFILL,
    TableReader,
    partition_dates,
    schema_check_spec,
    table_spec,
    write_quarantine,
    write_table,
)
from callintel_dagster.engines.audio import SAMPLE_RATE, AudioDecodeError, decode_audio
from callintel_dagster.engines.vad import segment_table, speech_segments, speech_stats
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tables import RAW_CALL_AUDIO, SPEECH_ACTIVITY, VALID_SEGMENTS


@dg.multi_asset(
    specs=[
        table_spec(VALID_SEGMENTS, reads=[RAW_CALL_AUDIO], group_name="audio", kinds={"delta", "pytorch"}),
        table_spec(SPEECH_ACTIVITY, reads=[RAW_CALL_AUDIO], group_name="audio", kinds={"delta"}),
    ],
    check_specs=[schema_check_spec(VALID_SEGMENTS), schema_check_spec(SPEECH_ACTIVITY)],
    partitions_def=call_date_partitions,
    backfill_policy=RANGE_BACKFILL,
)
def valid_segments(
    context: dg.AssetExecutionContext,
    config: StageConfig,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    audio_settings: AudioSettings,
    compute: CallCompute,
    models: ModelSettings,
):
    """Decode every usable call of the day to 16 kHz mono and detect speech. A call that cannot be
    decoded, or holds less than `min_speech_s` of speech (silent / dead-air recording), is
    quarantined with the reason; the others are written. A call whose recording and settings are
    unchanged since its last run keeps its rows without being decoded again. While this runs here,
    the model stages' workers start and load their models (`compute.warm_up`)."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    inventory = read(RAW_CALL_AUDIO, call_dates)
    inventory = inventory.loc[inventory["status"] == "ok"]
    durations = dict(zip(inventory["call_id"], inventory["duration_s"].fillna(0.0)))
    inventory = inventory[["call_id", "call_date", "blob_key", "blob_version"]]
    vad_config = audio_settings.vad_config()
    settings = f"{vad_config!r}|{audio_settings.min_speech_s}|{audio_settings.max_duration_s}"
    plan = plan_stage(lakehouse, VALID_SEGMENTS.name, inventory, settings, call_dates, config.recompute)
    calls = plan.to_run
    context.log.info(f"VAD: {len(calls)} new or changed calls; {len(plan.unchanged_call_ids)} unchanged keep their rows")
    warming = compute.warm_up(models.model_tasks(audio_settings), sum(durations[c] for c in calls["call_id"]))
    segment_frames, stats_rows, quarantined = [], [], []
    started = time.perf_counter()
    audio_seconds = 0.0
    for number, call in enumerate(calls.itertuples(), start=1):
        try:
            with blob_store.local_copy(call.blob_key) as path:
                audio = decode_audio(path, max_duration_s=audio_settings.max_duration_s)
            duration = audio.size / SAMPLE_RATE
            segments = speech_segments(audio, vad_config)
            table = segment_table(segments, duration, vad_config)
            stats = speech_stats(table, duration)
            if stats["speech_s"] < audio_settings.min_speech_s:
                raise AudioDecodeError(
                    f"{call.blob_key}: silent recording ({stats['speech_s']:.1f} s of speech in {duration:.1f} s)"
                )
        except AudioDecodeError as exc:
            quarantined.append({
                "call_id": call.call_id, "call_date": call.call_date, "blob_key": call.blob_key,
                "blob_version": call.blob_version, "reason": str(exc),
            })
            continue
        audio_seconds += duration
        segment_frames.append(table.assign(call_id=call.call_id, call_date=call.call_date))
        stats_rows.append({"call_id": call.call_id, "call_date": call.call_date, **stats})
        context.log.info(
            f"VAD {number}/{len(calls)} {call.blob_key}: {stats['n_speech_segments']} speech segments, "
            f"speech ratio {stats['speech_ratio']:.2f}"
        )
    elapsed = time.perf_counter() - started
    if warming is not None:
        context.log.info(warming.result() if warming.done() else "Spark workers are still warming up in the background")
    write_quarantine(lakehouse, context, stage=VALID_SEGMENTS.name, call_dates=call_dates, rows=quarantined)
    failed = [row["call_id"] for row in quarantined]
    plan.record(context, lakehouse, failed, call_dates)

    segments = VALID_SEGMENTS.rows([])
    if segment_frames:
        segments = pd.concat(segment_frames, ignore_index=True)[[*segments.columns, "call_date"]]
    kept = plan.kept(failed)
    seg_check, seg_written = write_table(context, lakehouse, VALID_SEGMENTS, segments, call_dates, keep_call_ids=kept)
    act_check, act_written = write_table(
        context, lakehouse, SPEECH_ACTIVITY, SPEECH_ACTIVITY.rows(stats_rows), call_dates, keep_call_ids=kept
    )
    rate = {"realtime_factor": round(elapsed / audio_seconds, 4)} if audio_seconds else {}
    yield dg.MaterializeResult(
        asset_key="valid_segments",
        metadata={**seg_written, **read.metadata(), "calls": len(stats_rows),
                  "calls_unchanged": len(plan.unchanged_call_ids), "quarantined": len(quarantined), **rate},
    )
    yield dg.MaterializeResult(asset_key="speech_activity", metadata={**act_written, **read.metadata()})
    yield seg_check
    yield act_check
