"""`valid_segments` + `speech_activity`: decoded audio with silence removed by silero-vad."""

import time

import dagster as dg
import pandas as pd

from callintel_dagster.assets.tables import (
    partition_date,
    rows_frame,
    schema_check_spec,
    table_spec,
    validate_and_merge,
    with_audit_columns,
    write_quarantine,
)
from callintel_dagster.engines.audio import SAMPLE_RATE, AudioDecodeError, decode_audio
from callintel_dagster.engines.vad import segment_table, speech_segments, speech_stats
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.schemas import SpeechActivity, ValidSegments

STAGE = "valid_segments"


@dg.multi_asset(
    specs=[
        table_spec(
            "valid_segments", deps=["raw_call_audio"], group_name="audio", kinds={"delta", "pytorch"},
            description="Speech segments (silero-vad) and the silences between them, one row each, "
            "per usable call. Silences of at least `flagged_silence_s` are flagged as dead air.",
        ),
        table_spec(
            "speech_activity", deps=["raw_call_audio"], group_name="audio", kinds={"delta"},
            description="Per call: duration, speech time, speech ratio, non-talk time, longest silence.",
        ),
    ],
    check_specs=[schema_check_spec("valid_segments"), schema_check_spec("speech_activity")],
    partitions_def=call_date_partitions,
)
def valid_segments(
    context: dg.AssetExecutionContext,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    audio_settings: AudioSettings,
):
    """Decode every usable call of the day to 16 kHz mono and detect speech. A call that cannot be
    decoded, or holds less than `min_speech_s` of speech (silent / dead-air recording), is
    quarantined with the reason; the others are written."""
    call_date = partition_date(context)
    calls = lakehouse.read("raw_call_audio", [call_date])
    calls = calls[calls["status"] == "ok"] if len(calls) else calls
    vad_config = audio_settings.vad_config()
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
            quarantined.append(
                {"call_id": call.call_id, "blob_key": call.blob_key, "blob_version": call.blob_version, "reason": str(exc)}
            )
            continue
        audio_seconds += duration
        segment_frames.append(table.assign(call_id=call.call_id))
        stats_rows.append({"call_id": call.call_id, **stats})
        context.log.info(
            f"VAD {number}/{len(calls)} {call.blob_key}: {stats['n_speech_segments']} speech segments, "
            f"speech ratio {stats['speech_ratio']:.2f}"
        )
    elapsed = time.perf_counter() - started
    write_quarantine(lakehouse, context, stage=STAGE, call_dates=[call_date], rows=quarantined)

    segments = rows_frame(ValidSegments, [])
    if segment_frames:
        segments = pd.concat(segment_frames, ignore_index=True)[segments.columns]
    seg_check, seg_written = validate_and_merge(
        lakehouse, asset="valid_segments", model=ValidSegments,
        frame=with_audit_columns(segments, call_date, context.run_id),
        keys=["call_id", "segment_index"], call_date=call_date,
    )
    activity = rows_frame(SpeechActivity, stats_rows)
    act_check, act_written = validate_and_merge(
        lakehouse, asset="speech_activity", model=SpeechActivity,
        frame=with_audit_columns(activity, call_date, context.run_id),
        keys=["call_id"], call_date=call_date,
    )
    rate = {"realtime_factor": round(elapsed / audio_seconds, 4)} if audio_seconds else {}
    yield dg.MaterializeResult(
        asset_key="valid_segments",
        metadata={**seg_written, "calls": len(stats_rows), "quarantined": len(quarantined), **rate},
    )
    yield dg.MaterializeResult(asset_key="speech_activity", metadata=act_written)
    yield seg_check
    yield act_check
