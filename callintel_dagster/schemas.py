"""Table contracts: one Pandera model per Delta table.

Each asset validates its frame against its model before writing (a blocking asset check), and the
Delta/Arrow schema is derived from the same model, so the contract and the storage never drift.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.engines import pandas_engine
from pandera.typing import Series

from callintel_dagster.engines.vocabulary import (
    ALERT_KINDS,
    ALERT_STATUSES,
    BI_FLAGS,
    CHANNEL_LAYOUTS,
    PROB_COLUMNS,
    ROLE_SOURCES,
    ROLES,
    SENTIMENT_LABELS,
    TONE_LABELS,
    VOICE_ROLE_SOURCES,
)

CALL_STATUSES = ["ok", "quarantined"]
SEGMENT_KINDS = ["speech", "silence"]


class _Table(pa.DataFrameModel):
    """Columns every table shares: the call, its partition and the run that wrote it (audit)."""

    call_id: Series[str] = pa.Field(str_length={"min_value": 8})
    call_date: Series[pandas_engine.Date] = pa.Field()
    run_id: Series[str] = pa.Field()

    class Config:
        strict = True
        coerce = True


class RawCallAudio(_Table):
    """`raw_call_audio`: the partition's recordings as found in the blob store."""

    blob_key: Series[str] = pa.Field()
    blob_version: Series[str] = pa.Field()
    agent_id: Series[str] = pa.Field(nullable=True)
    size_bytes: Series[int] = pa.Field(ge=0)
    checksum_sha256: Series[str] = pa.Field(str_length={"min_value": 64, "max_value": 64})
    duration_s: Series[float] = pa.Field(nullable=True, ge=0)
    sample_rate: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    channels: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    codec: Series[str] = pa.Field(nullable=True)
    channel_layout: Series[str] = pa.Field(
        nullable=True, isin=list(CHANNEL_LAYOUTS),
        description="mono / split_stereo (one party per channel) / mono_in_stereo / multichannel (engines/channels.py)",
    )
    channel_separation: Series[float] = pa.Field(
        nullable=True, ge=0, le=1, description="Two-channel files: the energy-activity separation the layout came from",
    )
    status: Series[str] = pa.Field(isin=CALL_STATUSES)
    error: Series[str] = pa.Field(nullable=True)
    ingested_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()

    @pa.dataframe_check(error="a quarantined recording must carry an error, an ok one none")
    def error_iff_quarantined(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["status"] == "quarantined") == df["error"].notna()


class ValidSegments(_Table):
    """`valid_segments`: speech regions (silero-vad) and the silences between them, in time order."""

    segment_index: Series[int] = pa.Field(ge=0)
    kind: Series[str] = pa.Field(isin=SEGMENT_KINDS)
    start_s: Series[float] = pa.Field(ge=0)
    end_s: Series[float] = pa.Field(ge=0)
    duration_s: Series[float] = pa.Field(gt=0)
    flagged: Series[bool] = pa.Field()

    @pa.dataframe_check(error="segment end must not precede its start")
    def ordered(cls, df: pd.DataFrame) -> Series[bool]:
        return df["end_s"] >= df["start_s"]


class SpeechActivity(_Table):
    """`speech_activity`: per-call speech ratio and non-talk time."""

    duration_s: Series[float] = pa.Field(gt=0)
    speech_s: Series[float] = pa.Field(ge=0)
    speech_ratio: Series[float] = pa.Field(ge=0, le=1)
    non_talk_s: Series[float] = pa.Field(ge=0)
    longest_silence_s: Series[float] = pa.Field(ge=0)
    n_speech_segments: Series[int] = pa.Field(gt=0)
    n_flagged_silences: Series[int] = pa.Field(ge=0)


class QuarantinedCalls(_Table):
    """`quarantined_calls`: every call a stage could not process, with the reason."""

    stage: Series[str] = pa.Field()
    blob_key: Series[str] = pa.Field()
    blob_version: Series[str] = pa.Field()
    reason: Series[str] = pa.Field(str_length={"min_value": 1})
    quarantined_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()


class ProcessedCalls(_Table):
    """`processed_calls`: what each stage last computed a call from, so a re-run skips unchanged calls."""

    stage: Series[str] = pa.Field()
    input_digest: Series[str] = pa.Field(
        str_length={"min_value": 16}, description="hash of the call's inputs, the task configuration and the engine code"
    )
    processed_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()


class Transcripts(_Table):
    """`transcripts`: speaker-aligned turns (Whisper words grouped by diarized speaker)."""

    turn_index: Series[int] = pa.Field(ge=0)
    speaker: Series[str] = pa.Field()
    role: Series[str] = pa.Field(isin=list(ROLES))
    start_s: Series[float] = pa.Field(ge=0)
    end_s: Series[float] = pa.Field(ge=0)
    text: Series[str] = pa.Field()
    confidence: Series[float] = pa.Field(ge=0, le=1)
    n_words: Series[int] = pa.Field(gt=0)
    phi_kinds: Series[str] = pa.Field(description="JSON list of the PHI kinds found in the turn")
    language: Series[str] = pa.Field(
        nullable=True, description="Whisper code of the call's detected language (en, es); null = written before detection, read as en")
    # Added with voice enrollment: optional in a frame (null when absent), as in older rows.
    voice_match: Optional[Series[float]] = pa.Field(
        ge=-1, le=1, nullable=True, description="agent turns: the speaker's similarity to the agent's voiceprint"
    )

    @pa.dataframe_check(error="turn end must not precede its start")
    def ordered(cls, df: pd.DataFrame) -> Series[bool]:
        return df["end_s"] >= df["start_s"]


class ConversationMetrics(_Table):
    """`conversation_metrics`: per-call talk time, non-talk time, overlap, interruptions, pace."""

    duration_s: Series[float] = pa.Field(gt=0)
    n_speakers: Series[int] = pa.Field(ge=0)
    talk_time_agent_s: Series[float] = pa.Field(ge=0)
    talk_time_customer_s: Series[float] = pa.Field(ge=0)
    non_talk_time_s: Series[float] = pa.Field(ge=0)
    overlap_s: Series[float] = pa.Field(ge=0)
    interruptions: Series[int] = pa.Field(ge=0)
    words_per_minute_agent: Series[float] = pa.Field(ge=0, nullable=True)
    words_per_minute_customer: Series[float] = pa.Field(ge=0, nullable=True)
    model_id: Series[str] = pa.Field(description="ASR and diarization models that produced the call's transcript")
    language: Series[str] = pa.Field(nullable=True, description="Whisper code of the call's detected language (en, es)")
    language_probability: Series[float] = pa.Field(
        nullable=True, ge=0, le=1, description="Whisper's probability of that language on the first 30 s of speech; null = not detected (one language configured)")
    role_source: Series[str] = pa.Field(
        isin=list(ROLE_SOURCES), description="channel_map (split-stereo call, one party per channel) or diarization",
    )
    # Added with the other_agent role: optional in a frame (null when absent), as in older rows.
    talk_time_other_agent_s: Optional[Series[float]] = pa.Field(ge=0, nullable=True)
    words_per_minute_other_agent: Optional[Series[float]] = pa.Field(ge=0, nullable=True)


class AgentVoiceSamples(_Table):
    """`agent_voice_samples`: per call, the agent side's voice (engines/voiceprints.py): its d-vector
    (a future enrolment sample), how it was chosen, and how it compares with the agent's voiceprint."""

    agent_id: Series[str] = pa.Field(nullable=True)
    speaker: Series[str] = pa.Field(nullable=True, description="the diarized speaker given the agent role")
    speech_s: Series[float] = pa.Field(ge=0, description="seconds of the agent speaker's solo speech")
    embedding_json: Series[str] = pa.Field(nullable=True, description="JSON list: unit d-vector of that speech")
    role_source: Series[str] = pa.Field(isin=list(VOICE_ROLE_SOURCES))
    voiceprint_calls: Series[int] = pa.Field(ge=0, description="calls the voiceprint on file was built from (0: none)")
    voice_match: Series[float] = pa.Field(ge=-1, le=1, nullable=True, description="agent speaker vs voiceprint (cosine)")
    voice_mismatch: Series[pd.BooleanDtype] = pa.Field(
        nullable=True, description="a voiceprint is on file and no speaker of the call matches it"
    )
    model_id: Series[str] = pa.Field()


class RedactedAudio(_Table):
    """`redacted_audio`: where each call's PHI-masked recording was written, and what was masked."""

    path: Series[str] = pa.Field(description="fsspec URL of the masked copy in the blob store (file:// or abfs://)")
    mode: Series[str] = pa.Field(isin=["tone", "silence"])
    n_spans: Series[int] = pa.Field(ge=0)
    spans_json: Series[str] = pa.Field(description="JSON list of [start_s, end_s] masked spans")



class ToneScores(_Table):
    """`tone_scores`: acoustic tone per speech window (probabilities over the call-centre classes)."""

    segment_index: Series[int] = pa.Field(ge=0)
    start_s: Series[float] = pa.Field(ge=0)
    end_s: Series[float] = pa.Field(ge=0)
    p_angry: Series[float] = pa.Field(ge=0, le=1)
    p_anxious: Series[float] = pa.Field(ge=0, le=1)
    p_sad: Series[float] = pa.Field(ge=0, le=1)
    p_neutral_positive: Series[float] = pa.Field(ge=0, le=1)
    top_label: Series[str] = pa.Field(isin=list(TONE_LABELS))

    @pa.dataframe_check(error="tone probabilities must sum to 1")
    def probabilities_sum_to_one(cls, df: pd.DataFrame) -> Series[bool]:
        total = df[list(PROB_COLUMNS)].sum(axis=1)
        return (total - 1).abs() < 1e-3


class CallTone(_Table):
    """`call_tone`: per-call tone aggregates and the model that produced them."""

    n_segments: Series[int] = pa.Field(ge=0)
    scored_duration_s: Series[float] = pa.Field(ge=0)
    max_anger: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    negative_share: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_first_third: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_last_third: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_trend: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    dominant_label: Series[str] = pa.Field(isin=list(TONE_LABELS), nullable=True)
    model_id: Series[str] = pa.Field()


class ComplianceFlags(_Table):
    """`compliance_flags`: one row per call: the extraction contract (engines/compliance.py) flattened,
    with evidence and audit columns. `status=pending` means the LLM answer is still missing/malformed
    and the flags shown are the rules engine's."""

    overall_sentiment: Series[str] = pa.Field(isin=list(SENTIMENT_LABELS), nullable=True)
    issue_resolved: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    billing_detected: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    phi_before_verification: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    phi_requested_unnecessarily: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    missing_recording_disclosure: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    escalation_requested: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    billing_topics: Series[str] = pa.Field(description="JSON list")
    summary: Series[str] = pa.Field(nullable=True)
    evidence_json: Series[str] = pa.Field(description="JSON: flag -> [{turn_index, quote}]")
    source: Series[str] = pa.Field(isin=["llm", "rules", "llm+rules"])
    disagreements: Series[str] = pa.Field(description="JSON list of fields where the LLM and the rules differ")
    model_id: Series[str] = pa.Field()
    prompt_version: Series[str] = pa.Field()
    attempts: Series[int] = pa.Field(ge=0)
    status: Series[str] = pa.Field(isin=["ok", "pending"])
    extracted_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()


class MalformedLlmOutputs(_Table):
    """`malformed_llm_outputs`: calls whose LLM answer never validated (or whose endpoint was down)."""

    outcome: Series[str] = pa.Field(isin=["malformed", "unavailable"])
    raw_response: Series[str] = pa.Field(nullable=True)
    error: Series[str] = pa.Field(nullable=True)
    attempts: Series[int] = pa.Field(ge=0)
    model_id: Series[str] = pa.Field()
    prompt_version: Series[str] = pa.Field()
    extracted_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()


class CallSummaries(_Table):
    """`call_summaries`: issues, outcomes and action items per call, each item citing its turn."""

    issues: Series[str] = pa.Field(description="JSON list of {turn_index, text}")
    outcomes: Series[str] = pa.Field(description="JSON list of {turn_index, text}")
    action_items: Series[str] = pa.Field(description="JSON list of {turn_index, text, owner}")
    source: Series[str] = pa.Field(isin=["llm", "extractive"])
    model_id: Series[str] = pa.Field()
    llm_error: Series[str] = pa.Field(nullable=True)


class CallCharacteristics(_Table):
    """`call_characteristics`: per call and role (definitions in engines/characteristics.py)."""

    role: Series[str] = pa.Field(isin=list(ROLES))
    talk_time_s: Series[float] = pa.Field(ge=0)
    non_talk_time_s: Series[float] = pa.Field(ge=0)
    longest_gap_s: Series[float] = pa.Field(ge=0)
    n_turns: Series[int] = pa.Field(ge=0)
    n_words: Series[int] = pa.Field(ge=0)
    words_per_minute: Series[float] = pa.Field(ge=0, nullable=True)
    loudness_mean_dbfs: Series[float] = pa.Field(le=0.5, nullable=True)
    loudness_peak_dbfs: Series[float] = pa.Field(le=0.5, nullable=True)
    interruptions: Series[int] = pa.Field(ge=0)
    interruptions_json: Series[str] = pa.Field(description="JSON list of {turn_index, at_s, by, of}")
    sentiment_mean: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    sentiment_first_quarter: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    sentiment_last_quarter: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    tone_negative_mean: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_negative_first_quarter: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_negative_last_quarter: Series[float] = pa.Field(ge=0, le=1, nullable=True)


class TurnSentiment(_Table):
    """`turn_sentiment`: text sentiment (VADER) and negative acoustic tone per transcript turn."""

    turn_index: Series[int] = pa.Field(ge=0)
    role: Series[str] = pa.Field(isin=list(ROLES))
    start_s: Series[float] = pa.Field(ge=0)
    end_s: Series[float] = pa.Field(ge=0)
    sentiment: Series[float] = pa.Field(ge=-1, le=1)
    sentiment_label: Series[str] = pa.Field(isin=list(SENTIMENT_LABELS))
    tone_negative: Series[float] = pa.Field(ge=0, le=1, nullable=True)


class CallCategories(_Table):
    """`call_categories`: one row per piece of evidence of a QA category a call meets."""

    match_index: Series[int] = pa.Field(ge=0)
    category: Series[str] = pa.Field()
    rule: Series[str] = pa.Field()
    turn_index: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    start_s: Series[float] = pa.Field(ge=0, nullable=True)
    end_s: Series[float] = pa.Field(ge=0, nullable=True)
    evidence: Series[str] = pa.Field()


class FusedInsights(_Table):
    """`fused_insights`: one row per call joining acoustic tone, conversation metrics and semantic
    flags, with the QA priority and its reasons (formula in engines/fusion.py)."""

    agent_id: Series[str] = pa.Field(nullable=True)
    duration_s: Series[float] = pa.Field(ge=0)
    speech_ratio: Series[float] = pa.Field(ge=0, le=1)
    non_talk_s: Series[float] = pa.Field(ge=0)
    longest_silence_s: Series[float] = pa.Field(ge=0)
    talk_time_agent_s: Series[float] = pa.Field(ge=0, nullable=True)
    talk_time_customer_s: Series[float] = pa.Field(ge=0, nullable=True)
    overlap_s: Series[float] = pa.Field(ge=0, nullable=True)
    interruptions: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    max_anger: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    negative_share: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    tone_trend: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    dominant_label: Series[str] = pa.Field(isin=list(TONE_LABELS), nullable=True)
    overall_sentiment: Series[str] = pa.Field(isin=list(SENTIMENT_LABELS), nullable=True)
    issue_resolved: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    billing_detected: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    phi_before_verification: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    phi_requested_unnecessarily: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    missing_recording_disclosure: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    escalation_requested: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    hipaa_flag_count: Series[pd.Int64Dtype] = pa.Field(ge=0, le=3, nullable=True)
    billing_topics: Series[str] = pa.Field(nullable=True)
    compliance_status: Series[str] = pa.Field(isin=["ok", "pending"], nullable=True)
    text_voice_mismatch: Series[str] = pa.Field(nullable=True)
    anger_peak_s: Series[float] = pa.Field(ge=0, nullable=True)
    anger_peak_turn_index: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    anger_at_billing: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    anger_peak_topic: Series[str] = pa.Field(isin=["billing", "care_delay", "other"], nullable=True)
    qa_priority: Series[int] = pa.Field(ge=0, le=100)
    qa_reasons: Series[str] = pa.Field(description="JSON list of reasons, each with its points")
    # Added with the other_agent role and voice enrollment: optional in a frame (null when absent).
    talk_time_other_agent_s: Optional[Series[float]] = pa.Field(ge=0, nullable=True)
    agent_voice_match: Optional[Series[float]] = pa.Field(ge=-1, le=1, nullable=True)
    agent_voice_mismatch: Optional[Series[pd.BooleanDtype]] = pa.Field(nullable=True)



class AlertsSent(_Table):
    """`alerts_sent`: one row per finding and channel: what was sent where, when, and the outcome.
    Identifiers and scores only (no quote), like the message itself."""

    alert_id: Series[str] = pa.Field(str_length={"min_value": 16, "max_value": 16})
    kind: Series[str] = pa.Field(isin=list(ALERT_KINDS))
    channel: Series[str] = pa.Field(description="Channel name; `none` when no channel is configured")
    agent_id: Series[str] = pa.Field(nullable=True)
    qa_priority: Series[int] = pa.Field(ge=0, le=100)
    status: Series[str] = pa.Field(isin=list(ALERT_STATUSES))
    attempts: Series[int] = pa.Field(ge=0)
    error: Series[str] = pa.Field(nullable=True)
    link: Series[str] = pa.Field()
    attempted_at: Series[pd.DatetimeTZDtype(tz="UTC")] = pa.Field()


class _AgentTable(pa.DataFrameModel):
    """Columns of a per-agent table: the agent, the partition and the run that wrote it (audit)."""

    agent_id: Series[str] = pa.Field(str_length={"min_value": 1})
    call_date: Series[pandas_engine.Date] = pa.Field()
    run_id: Series[str] = pa.Field()

    class Config:
        strict = True
        coerce = True


class AgentVoiceprints(_AgentTable):
    """`agent_voiceprints`: the voiceprint each enrolled agent had on `call_date` (built from samples
    of earlier dates only), with its provenance."""

    embedding_json: Series[str] = pa.Field(description="JSON list: unit mean d-vector of the agreeing samples")
    n_calls: Series[int] = pa.Field(ge=1)
    n_rejected: Series[int] = pa.Field(ge=0, description="samples dropped as outliers")
    speech_s: Series[float] = pa.Field(ge=0)
    call_ids_json: Series[str] = pa.Field(description="JSON list of the calls it was built from")
    first_call_date: Series[pandas_engine.Date] = pa.Field()
    last_call_date: Series[pandas_engine.Date] = pa.Field()
    model_id: Series[str] = pa.Field()


# Gold layer for BI (`star_schema.py`): facts at the grain Power BI measures count. `agent_id` is
# never null here ("unknown"), so every fact row joins `dim_agent`.
ANGER_TOPICS = ["billing", "care_delay", "other"]


class FactCall(_Table):
    """`fact_call`: one row per call: outcome, acoustic stress, sentiment, flags, QA priority."""

    agent_id: Series[str] = pa.Field()
    duration_s: Series[float] = pa.Field(ge=0)
    talk_time_agent_s: Series[float] = pa.Field(ge=0, nullable=True)
    talk_time_customer_s: Series[float] = pa.Field(ge=0, nullable=True)
    max_anger: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    acoustic_stress: Series[float] = pa.Field(ge=0, le=1, nullable=True, description="Share of negative acoustic tone")
    overall_sentiment: Series[str] = pa.Field(isin=list(SENTIMENT_LABELS), nullable=True)
    sentiment_score: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    issue_resolved: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    escalation_requested: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    billing_detected: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    anger_at_billing: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    anger_peak_topic: Series[str] = pa.Field(isin=ANGER_TOPICS, nullable=True)
    hipaa_flag_count: Series[pd.Int64Dtype] = pa.Field(ge=0, le=3, nullable=True)
    qa_priority: Series[int] = pa.Field(ge=0, le=100)
    compliance_status: Series[str] = pa.Field(isin=["ok", "pending"], nullable=True)


class FactFlag(_Table):
    """`fact_flag`: one row per true compliance flag and piece of evidence (turn + quote, PHI redacted
    at rest); a flag without evidence has one row with no turn."""

    agent_id: Series[str] = pa.Field()
    flag: Series[str] = pa.Field(isin=list(BI_FLAGS))
    evidence_index: Series[int] = pa.Field(ge=0)
    turn_index: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    quote: Series[str] = pa.Field(nullable=True)


class FactTurnTone(_Table):
    """`fact_turn_tone`: one row per turn: text sentiment and negative acoustic tone, with the call's
    agent and anger topic, for sentiment trends and anger spikes by topic."""

    agent_id: Series[str] = pa.Field()
    turn_index: Series[int] = pa.Field(ge=0)
    role: Series[str] = pa.Field(isin=list(ROLES))
    start_s: Series[float] = pa.Field(ge=0)
    sentiment: Series[float] = pa.Field(ge=-1, le=1)
    sentiment_label: Series[str] = pa.Field(isin=list(SENTIMENT_LABELS))
    tone_negative: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    anger_peak_topic: Series[str] = pa.Field(isin=ANGER_TOPICS, nullable=True)

_ARROW_TYPES = {
    "str": pyarrow.string(),
    "int64": pyarrow.int64(),
    "Int64": pyarrow.int64(),
    "float64": pyarrow.float64(),
    "bool": pyarrow.bool_(),
    "boolean": pyarrow.bool_(),
    "date": pyarrow.date32(),
    "datetime64[ns, UTC]": pyarrow.timestamp("us", tz="UTC"),
}


def arrow_schema(model: type[pa.DataFrameModel]) -> pyarrow.Schema:
    """The Delta table schema of `model` (column order and nullability from the contract)."""
    fields = []
    for name, column in model.to_schema().columns.items():
        dtype = str(column.dtype)
        if dtype not in _ARROW_TYPES:
            raise TypeError(f"{model.__name__}.{name}: no Delta type for pandera dtype {dtype!r}")
        fields.append(pyarrow.field(name, _ARROW_TYPES[dtype], nullable=bool(column.nullable)))
    return pyarrow.schema(fields)
