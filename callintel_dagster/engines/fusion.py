"""Fuse every stage into one row per call: the facts a QA reviewer triages on (no Dagster).

Inputs are the stage tables of one partition (the Pandera contracts in ``schemas.py``). A call enters
the fused table when ``raw_call_audio`` has it with ``status == "ok"`` and ``speech_activity`` has it
(VAD ran, so there is at least a duration and a speech ratio). Every later stage is a left join: a call
whose tone, transcript or compliance stage is missing keeps its row with nulls there, because a call
that silently vanished from the review list is worse than one with gaps.

Derived columns
---------------
``text_voice_mismatch``: what was *said* and how it *sounded* disagree (first match wins):

- ``positive_text_angry_voice``: text sentiment positive, yet ``max_anger >= ANGRY_VOICE``.
- ``angry_voice_resolved``: the issue is marked resolved, yet ``max_anger >= ANGRY_VOICE`` and the tone
  did not calm down (``tone_trend >= 0``): "resolved" on paper, caller still upset.
- ``negative_text_calm_voice``: text sentiment negative, yet ``max_anger < CALM_VOICE`` and
  ``negative_share < CALM_NEGATIVE_SHARE``: a polite complaint the acoustic model cannot see.

``agent_voice_match`` / ``agent_voice_mismatch``: from ``agent_voice_samples`` (engines/voiceprints.py):
the agent speaker's similarity to the agent's voiceprint, and whether nobody on the call matched it
(someone else took the agent's side); null when the agent has no voiceprint yet.

``anger_peak_s``: midpoint of the tone window with the highest ``p_angry`` (ties: the earliest).
``anger_peak_turn_index``: the transcript turn containing that instant, else the nearest turn.
``anger_at_billing``: the peak turn is within ±``BILLING_TURN_WINDOW`` turns of a turn cited as
billing evidence (``evidence_json["billing_detected"]``). Null when there is no peak turn or no
compliance row. ``anger_peak_topic``: ``billing`` if ``anger_at_billing``, ``care_delay`` if the peak
turn or its neighbours talk about waiting/delays/referrals, else ``other``.

QA priority (0–100, capped)
---------------------------
Each rule adds fixed points and one reason string that shows the points, so a score can always be read
back as the sum of its reasons:

=================================  =====================================================
rule                               points
=================================  =====================================================
each true HIPAA flag               +25 (``phi_before_verification``,
                                   ``phi_requested_unnecessarily``,
                                   ``missing_recording_disclosure``)
issue not resolved                 +20 (``issue_resolved is False``; null adds nothing)
escalation requested               +15
vocal anger                        +round(20 × max_anger) when ``max_anger >= 0.5``
tone worsened                      +10 when ``tone_trend >= 0.2`` (negative probability rose
                                   from the first to the last third of the call)
dead air                           +10 when the longest silence is ``>= 10 s``
text/voice mismatch                +10 when ``text_voice_mismatch`` is set
agent voice mismatch               +15 when ``agent_voice_mismatch``: a voiceprint is on file
                                   for the call's agent and no speaker matches it
compliance not assessed            +5 when there is no compliance row or its status is
                                   ``pending`` (flags are rules-only or missing)
=================================  =====================================================

HIPAA weighs most because a disclosure is a reportable event whatever the caller felt; the acoustic
rules weigh less because the tone model is the least certain input.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from callintel_dagster.schemas import FusedInsights

from .compliance import FLAG_FIELDS, HIPAA_FIELDS

ANGRY_VOICE = 0.6
CALM_VOICE = 0.3
CALM_NEGATIVE_SHARE = 0.25
BILLING_TURN_WINDOW = 1

HIPAA_POINTS = 25
UNRESOLVED_POINTS = 20
ESCALATION_POINTS = 15
ANGER_MIN = 0.5
ANGER_SCALE = 20
TREND_MIN = 0.2
TREND_POINTS = 10
DEAD_AIR_S = 10.0
DEAD_AIR_POINTS = 10
MISMATCH_POINTS = 10
AGENT_VOICE_MISMATCH_POINTS = 15
UNASSESSED_POINTS = 5

# Words for a caller upset about delayed care rather than money; matched on the turns around the peak.
CARE_DELAY_RE = re.compile(
    r"\b(?:wait(?:ed|ing)?|delay(?:ed|s)?|weeks?|months?|appointments?|referrals?|prior auth\w*|"
    r"authori[sz]ation|reschedul\w*|cancel(?:l?ed)?|still (?:no|not|haven't|hasn't)|nobody called|"
    r"no one called|backlog|specialist)\b",
    re.IGNORECASE,
)

# Output columns and their pandas dtypes (a Pandera model can mirror this; call_date is a date object).
# The frame `fuse_calls` returns: the `fused_insights` contract's columns, in its order, without the
# `run_id` audit column (added at write time), as pandas dtypes.
_PANDAS_DTYPES = {"str": "object", "date": "object", "float64": "float64", "int64": "int64", "Int64": "Int64", "boolean": "boolean"}
OUTPUT_DTYPES: dict[str, str] = {
    name: _PANDAS_DTYPES[str(column.dtype)] for name, column in FusedInsights.to_schema().columns.items() if name != "run_id"
}

_ACTIVITY_COLS = ["call_id", "duration_s", "speech_ratio", "non_talk_s", "longest_silence_s"]
_METRIC_COLS = ["call_id", "talk_time_agent_s", "talk_time_customer_s", "talk_time_other_agent_s", "overlap_s", "interruptions"]
_VOICE_COLS = {"call_id": "call_id", "voice_match": "agent_voice_match", "voice_mismatch": "agent_voice_mismatch"}
_TONE_COLS = ["call_id", "max_anger", "negative_share", "tone_trend", "dominant_label"]
_FLAG_COLS = ["call_id", "overall_sentiment", *FLAG_FIELDS, "billing_topics", "evidence_json", "status"]


def is_true(value: object) -> bool:
    """True for a set flag (Python or numpy bool); False for False, None, NaN and pd.NA."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


def _is_false(value: object) -> bool:
    return _present(value) and not bool(value)


def _present(value: object) -> bool:
    return value is not None and not pd.isna(value)


def text_voice_mismatch(sentiment: object, issue_resolved: object, max_anger: float,
                        negative_share: float, tone_trend: float) -> str | None:
    """The mismatch label (see module docstring), or None when text and voice agree or one is missing."""
    if not _present(max_anger):
        return None
    if sentiment == "positive" and max_anger >= ANGRY_VOICE:
        return "positive_text_angry_voice"
    if is_true(issue_resolved) and max_anger >= ANGRY_VOICE and _present(tone_trend) and tone_trend >= 0:
        return "angry_voice_resolved"
    if (sentiment == "negative" and max_anger < CALM_VOICE
            and _present(negative_share) and negative_share < CALM_NEGATIVE_SHARE):
        return "negative_text_calm_voice"
    return None


def anger_peak_s(windows: pd.DataFrame) -> float | None:
    """Midpoint (s) of the angriest tone window of one call (ties: the earliest), None without windows."""
    if windows.empty:
        return None
    ordered = windows.sort_values(["start_s", "segment_index"], ignore_index=True)
    row = ordered.loc[ordered["p_angry"].idxmax()]
    return (float(row["start_s"]) + float(row["end_s"])) / 2.0


def turn_at(turns: pd.DataFrame, t: float) -> int | None:
    """Index of the turn that contains instant `t`, else of the turn nearest to it (None without turns).

    Overlapping turns both contain `t`; the earlier-starting one wins, so the result is deterministic."""
    if turns.empty:
        return None
    starts = turns["start_s"].to_numpy(dtype=np.float64)
    ends = turns["end_s"].to_numpy(dtype=np.float64)
    distance = np.maximum(starts - t, 0.0) + np.maximum(t - ends, 0.0)
    order = np.lexsort((starts, distance))
    return int(turns["turn_index"].to_numpy()[order[0]])


def evidence_turns(evidence_json: object, flag: str) -> list[int]:
    """Turn indices cited as evidence for `flag` in an ``evidence_json`` cell."""
    if not _present(evidence_json):
        return []
    return [int(q["turn_index"]) for q in json.loads(evidence_json).get(flag, [])]


def _peak_topic(at_billing: object, peak_turn: int, turns: pd.DataFrame) -> str:
    if is_true(at_billing):
        return "billing"
    near = turns.loc[(turns["turn_index"] - peak_turn).abs() <= BILLING_TURN_WINDOW, "text"]
    return "care_delay" if any(CARE_DELAY_RE.search(str(text)) for text in near) else "other"


def qa_score(row: pd.Series) -> tuple[int, list[str]]:
    """QA priority and its reasons for one fused row (formula in the module docstring)."""
    reasons: list[tuple[int, str]] = []
    for flag in HIPAA_FIELDS:
        if is_true(row[flag]):
            reasons.append((HIPAA_POINTS, f"HIPAA: {flag.replace('_', ' ')}"))
    if _is_false(row["issue_resolved"]):
        reasons.append((UNRESOLVED_POINTS, "issue not resolved"))
    if is_true(row["escalation_requested"]):
        reasons.append((ESCALATION_POINTS, "escalation requested"))
    if _present(row["max_anger"]) and row["max_anger"] >= ANGER_MIN:
        where = f" at {row['anger_peak_s']:.0f} s" if _present(row["anger_peak_s"]) else ""
        reasons.append((round(ANGER_SCALE * row["max_anger"]), f"vocal anger p_angry={row['max_anger']:.2f}{where}"))
    if _present(row["tone_trend"]) and row["tone_trend"] >= TREND_MIN:
        reasons.append((TREND_POINTS, f"tone worsened over the call (trend {row['tone_trend']:+.2f})"))
    if _present(row["longest_silence_s"]) and row["longest_silence_s"] >= DEAD_AIR_S:
        reasons.append((DEAD_AIR_POINTS, f"dead air: longest silence {row['longest_silence_s']:.1f} s"))
    if _present(row["text_voice_mismatch"]):
        reasons.append((MISMATCH_POINTS, f"text/voice mismatch: {row['text_voice_mismatch']}"))
    if is_true(row["agent_voice_mismatch"]):
        match = f" (match {row['agent_voice_match']:.2f})" if _present(row["agent_voice_match"]) else ""
        reasons.append((AGENT_VOICE_MISMATCH_POINTS, f"agent voice does not match the voiceprint on file{match}"))
    if row["compliance_status"] != "ok":
        reasons.append((UNASSESSED_POINTS, "compliance not assessed by the LLM (rules only or missing)"))
    reasons.sort(key=lambda r: -r[0])
    return min(100, sum(p for p, _ in reasons)), [f"{text}: +{points}" for points, text in reasons]


def fuse_calls(raw: pd.DataFrame, activity: pd.DataFrame, metrics: pd.DataFrame, call_tone: pd.DataFrame,
               tone_scores: pd.DataFrame, transcripts: pd.DataFrame, flags: pd.DataFrame,
               voice_samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per call with every stage's facts, the derived alignment columns and the QA priority.

    Columns and dtypes are ``OUTPUT_DTYPES`` (in that order); rows are sorted by ``qa_priority``
    descending, then ``call_id``, so the head of the frame is the review queue.
    """
    ok = raw.loc[raw["status"] == "ok", ["call_id", "call_date", "agent_id", "duration_s"]]
    fused = ok.rename(columns={"duration_s": "raw_duration_s"}).merge(
        activity.reindex(columns=_ACTIVITY_COLS), on="call_id", how="inner")
    # speech_activity's duration is measured on the decoded audio; the inventory's is the fallback.
    fused["duration_s"] = fused["duration_s"].fillna(fused.pop("raw_duration_s"))
    for frame, columns in ((metrics, _METRIC_COLS), (call_tone, _TONE_COLS), (flags, _FLAG_COLS)):
        fused = fused.merge(frame.reindex(columns=columns), on="call_id", how="left")
    voice = (voice_samples if voice_samples is not None else pd.DataFrame()).reindex(columns=list(_VOICE_COLS))
    voice = voice.astype({"call_id": "object"})
    fused = fused.merge(voice.rename(columns=_VOICE_COLS), on="call_id", how="left")
    fused = fused.rename(columns={"status": "compliance_status"})
    has_flags = fused["compliance_status"].notna()
    fused["hipaa_flag_count"] = sum(fused[f].map(is_true).astype(int) for f in HIPAA_FIELDS).where(has_flags)

    windows_by_call = dict(iter(tone_scores.groupby("call_id"))) if not tone_scores.empty else {}
    turns_by_call = dict(iter(transcripts.groupby("call_id"))) if not transcripts.empty else {}
    empty_turns = pd.DataFrame(columns=["turn_index", "start_s", "end_s", "text"])
    peak_s, peak_turn, at_billing, topic, mismatch = [], [], [], [], []
    for row in fused.itertuples(index=False):
        peak = anger_peak_s(windows_by_call.get(row.call_id, pd.DataFrame()))
        turns = turns_by_call.get(row.call_id, empty_turns)
        turn = turn_at(turns, peak) if peak is not None else None
        billing: bool | None = None
        if turn is not None and _present(row.compliance_status):
            billing = any(abs(turn - t) <= BILLING_TURN_WINDOW
                          for t in evidence_turns(row.evidence_json, "billing_detected"))
        peak_s.append(np.nan if peak is None else peak)
        peak_turn.append(turn)
        at_billing.append(billing)
        topic.append(_peak_topic(billing, turn, turns) if turn is not None else None)
        mismatch.append(text_voice_mismatch(row.overall_sentiment, row.issue_resolved, row.max_anger,
                                            row.negative_share, row.tone_trend))
    fused["anger_peak_s"] = peak_s
    fused["anger_peak_turn_index"] = peak_turn
    fused["anger_at_billing"] = at_billing
    fused["anger_peak_topic"] = topic
    fused["text_voice_mismatch"] = mismatch
    fused = fused.drop(columns="evidence_json")

    scored = [qa_score(row) for _, row in fused.iterrows()]
    fused["qa_priority"] = np.array([s for s, _ in scored], dtype=np.int64)
    fused["qa_reasons"] = [json.dumps(r) for _, r in scored]
    fused = fused.sort_values(["qa_priority", "call_id"], ascending=[False, True], ignore_index=True)
    return _coerce(fused)


def _coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in ``OUTPUT_DTYPES`` order and dtype; object columns hold None (not NaN) for nulls."""
    out = frame.reindex(columns=[c for c in OUTPUT_DTYPES if c in frame.columns])
    for column in out.columns:
        dtype = OUTPUT_DTYPES[column]
        if dtype == "object":
            out[column] = out[column].astype(object).where(out[column].notna(), None)
        elif dtype in ("Int64", "boolean"):
            out[column] = pd.array(
                [None if not _present(v) else v for v in out[column]], dtype=dtype)
        else:
            out[column] = out[column].astype(dtype)
    return out
