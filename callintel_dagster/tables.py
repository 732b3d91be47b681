"""The table registry: one `Table` per Delta table, the single place a table is defined.

A table is its name, its Pandera contract (`schemas.py`), its key columns and a description. From
that one object come the Arrow/Delta schema, the MERGE keys, the empty frame a reader gets before the
table exists, and the asset spec (`assets/io.py`). Adding a table means adding a model to
`schemas.py` and one `Table` here; the asset that writes it declares it in `writes=`, and every
asset that reads it declares it in `reads=`, which is where the lineage in the Dagster UI comes from.

Every table is partitioned by `call_date` (a DATE column) and carries `run_id`; all but
`agent_voiceprints` (keyed by agent) are keyed by `call_id`. No Dagster import:
the lakehouse implementations and Spark tasks use this module too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pandera.pandas as pa
import pyarrow

from callintel_dagster import schemas

PARTITION_COLUMN = "call_date"
AUDIT_COLUMNS = (PARTITION_COLUMN, "run_id")


@dataclasses.dataclass(frozen=True)
class ContractViolation:
    """Why a frame was refused: the number of failures and the first failure cases (as text)."""

    failure_count: int
    failure_cases: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Table:
    """One Delta table: `keys` identify a row within its `call_date` partition."""

    name: str
    model: type[pa.DataFrameModel]
    keys: tuple[str, ...]
    description: str

    @property
    def columns(self) -> list[str]:
        return list(self.model.to_schema().columns)

    @property
    def payload_columns(self) -> list[str]:
        """The columns a producer fills; the audit columns are added at write time."""
        return [c for c in self.columns if c not in AUDIT_COLUMNS]

    def arrow_schema(self) -> pyarrow.Schema:
        return schemas.arrow_schema(self.model)

    def empty(self) -> pd.DataFrame:
        return pd.DataFrame(columns=self.columns)

    def rows(self, rows: list[dict]) -> pd.DataFrame:
        """`rows` as a frame with the payload columns, in contract order (plus `call_date` when the rows
        carry their own, as rows of a date-range run do)."""
        dated = bool(rows) and PARTITION_COLUMN in rows[0]
        return pd.DataFrame(rows, columns=self.payload_columns + ([PARTITION_COLUMN] if dated else []))

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A stored frame with at least the contract's columns (an absent table reads as empty)."""
        if not len(frame.columns):
            return self.empty()
        missing = [c for c in self.columns if c not in frame.columns]
        return frame.assign(**{c: None for c in missing}) if missing else frame

    def validate(self, frame: pd.DataFrame) -> pd.DataFrame | ContractViolation:
        """The coerced frame when it meets the contract, else what is wrong with it."""
        try:
            return self.model.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases[["column", "check", "failure_case", "index"]].head(20).astype(str)
            return ContractViolation(len(exc.failure_cases), cases)

    def arrow_rows(self, valid: pd.DataFrame, call_date: dt.date) -> pyarrow.Table:
        """The validated rows of one partition as an Arrow table of the Delta schema."""
        # reindex: an optional contract column a producer left out is stored as null.
        rows = valid.loc[valid[PARTITION_COLUMN] == call_date].reindex(columns=self.columns)
        return pyarrow.Table.from_pandas(rows, schema=self.arrow_schema(), preserve_index=False)


def _table(name: str, model: type[pa.DataFrameModel], keys: tuple[str, ...], description: str) -> Table:
    return Table(name=name, model=model, keys=("call_id", *keys), description=description)


RAW_CALL_AUDIO = _table(
    "raw_call_audio", schemas.RawCallAudio, (),
    "One row per recording in the day's blob folder: stable call id, blob version, checksum, duration, "
    "sample rate, channels, channel layout (split_stereo = one party per channel), codec, status (ok / quarantined) "
    "and the reason.",
)
VALID_SEGMENTS = _table(
    "valid_segments", schemas.ValidSegments, ("segment_index",),
    "Speech segments (silero-vad) and the silences between them, one row each, per usable call. "
    "Silences of at least `flagged_silence_s` are flagged as dead air.",
)
SPEECH_ACTIVITY = _table(
    "speech_activity", schemas.SpeechActivity, (),
    "Per call: duration, speech time, speech ratio, non-talk time, longest silence.",
)
QUARANTINED_CALLS = _table(
    "quarantined_calls", schemas.QuarantinedCalls, ("stage",),
    "Every call a stage could not process, with the reason. Each stage owns its own rows (`stage`).",
)
PROCESSED_CALLS = _table(
    "processed_calls", schemas.ProcessedCalls, ("stage",),
    "What each per-call stage last computed each call from (a digest of its inputs, the task "
    "configuration and the engine code): a re-run skips the calls whose digest is unchanged.",
)
TRANSCRIPTS = _table(
    "transcripts", schemas.Transcripts, ("turn_index",),
    "One row per speaker turn: speaker, role (agent/customer), start, end, text (PHI redacted at rest by "
    "default), ASR confidence, the call's language.",
)
CONVERSATION_METRICS = _table(
    "conversation_metrics", schemas.ConversationMetrics, (),
    "Per call: talk time per role, non-talk time, overlap, interruptions, words per minute, detected language "
    "and its probability, and where the roles came from (channel_map / diarization).",
)
REDACTED_AUDIO = _table(
    "redacted_audio", schemas.RedactedAudio, (),
    "A copy of each recording with PHI word spans masked (tone or silence), from word timestamps; the "
    "table records where it is and which spans were masked.",
)
AGENT_VOICE_SAMPLES = _table(
    "agent_voice_samples", schemas.AgentVoiceSamples, (),
    "Per call: the agent side's voice (d-vector of its solo speech, an enrolment sample), whether the "
    "agent role came from the voiceprint, its match score and the voice-mismatch flag (engines/voiceprints.py).",
)
# Keyed by agent, not by call: erasure (`forget_call`, `forget_agent`) removes a voiceprint whose
# provenance names the erased call, or the agent's.
AGENT_VOICEPRINTS = Table(
    name="agent_voiceprints", model=schemas.AgentVoiceprints, keys=("agent_id",),
    description="Per date and enrolled agent: the voiceprint roles were assigned with that day (mean d-vector "
    "of the agent's agreeing samples from earlier dates), with its provenance: calls, dates, seconds, encoder.",
)
TONE_SCORES = _table(
    "tone_scores", schemas.ToneScores, ("segment_index",),
    "Acoustic tone per speech window: p_angry, p_anxious, p_sad, p_neutral_positive, top label.",
)
CALL_TONE = _table(
    "call_tone", schemas.CallTone, (),
    "Per call: max anger, share of negative tone, negative tone in the first vs last third.",
)
COMPLIANCE_FLAGS = _table(
    "compliance_flags", schemas.ComplianceFlags, (),
    "One row per call: sentiment, issue resolved, billing (+topics), HIPAA risk flags, escalation, summary, "
    "evidence (turn + quote) for every true flag, LLM-vs-rules disagreements, audit columns.",
)
MALFORMED_LLM_OUTPUTS = _table(
    "malformed_llm_outputs", schemas.MalformedLlmOutputs, (),
    "Calls whose LLM answer never validated: raw response, error, attempts. `reprocess_malformed_job` "
    "re-runs just these.",
)
CALL_SUMMARIES = _table(
    "call_summaries", schemas.CallSummaries, (),
    "Issues, outcomes and action items per call, each a verbatim sentence citing its turn.",
)
CALL_CHARACTERISTICS = _table(
    "call_characteristics", schemas.CallCharacteristics, ("role",),
    "Per call and role: talk / non-talk time (total, longest gap), words per minute, loudness (dBFS "
    "mean/peak), interruptions (who cut off whom, when), sentiment and tone overall and in the first vs "
    "last quarter. Definitions: engines/characteristics.py.",
)
TURN_SENTIMENT = _table(
    "turn_sentiment", schemas.TurnSentiment, ("turn_index",),
    "Per turn: VADER text sentiment (score + label) and negative acoustic tone.",
)
CALL_CATEGORIES = _table(
    "call_categories", schemas.CallCategories, ("match_index",),
    "One row per piece of evidence of a QA category a call meets: rule, turn, timestamps, quote.",
)
FUSED_INSIGHTS = _table(
    "fused_insights", schemas.FusedInsights, (),
    "One row per call joining acoustic tone, conversation metrics and semantic flags, with the QA "
    "priority (0-100) and its reasons (formula in engines/fusion.py).",
)
ALERTS_SENT = _table(
    "alerts_sent", schemas.AlertsSent, ("kind", "channel"),
    "One row per high-priority finding and alert channel: call, agent, finding, QA priority, evidence link, "
    "outcome (sent / failed / skipped), attempts, error. A finding already sent on a channel is not sent again.",
)
FACT_CALL = _table(
    "fact_call", schemas.FactCall, (),
    "BI gold: one row per call (outcome, acoustic stress, sentiment, flags, QA priority), joined to "
    "dim_agent and dim_date in the Power BI model (`star_schema.py`).",
)
FACT_FLAG = _table(
    "fact_flag", schemas.FactFlag, ("flag", "evidence_index"),
    "BI gold: one row per true compliance flag and piece of evidence (turn, quote), for drill-through.",
)
FACT_TURN_TONE = _table(
    "fact_turn_tone", schemas.FactTurnTone, ("turn_index",),
    "BI gold: one row per turn: text sentiment and negative acoustic tone, with the call's agent and anger topic.",
)

# Bookkeeping tables that every per-call stage writes, each stage owning its own rows (`stage`); they
# are not assets, so they are not lineage either.
STAGE_TABLES = (QUARANTINED_CALLS, PROCESSED_CALLS)

TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        RAW_CALL_AUDIO, VALID_SEGMENTS, SPEECH_ACTIVITY, QUARANTINED_CALLS, PROCESSED_CALLS, TRANSCRIPTS, CONVERSATION_METRICS,
        REDACTED_AUDIO, AGENT_VOICE_SAMPLES, AGENT_VOICEPRINTS, TONE_SCORES, CALL_TONE, COMPLIANCE_FLAGS, MALFORMED_LLM_OUTPUTS, CALL_SUMMARIES,
        CALL_CHARACTERISTICS, TURN_SENTIMENT, CALL_CATEGORIES, FUSED_INSIGHTS, ALERTS_SENT,
        FACT_CALL, FACT_FLAG, FACT_TURN_TONE,
    )
}
