"""Per-role call characteristics, after Amazon Transcribe Call Analytics (pure Python; no Dagster).

Call Analytics reports, per participant, talk time, non-talk time, talk speed, loudness,
interruptions and sentiment (overall and per call quarter). `call_characteristics` computes the same
facts from what this pipeline already has: the mono call audio, the speaker-aligned transcript turns
(`Transcripts` table) and, when available, the acoustic tone windows (`ToneScores` table).

Timing comes from the transcript turns (word times), not from diarization, so every number here is
consistent with the text a QA reviewer reads and with the categories matched on it
(`engines/categories.py`). A role with no turns still gets a row, with zero talk time and NaN for
every figure that needs speech to be defined.

Definitions (D = call duration in seconds; "spans" of a role = the union of its turns' [start, end)):

- talk_time_s: total length of the role's spans.
- non_talk_time_s (call level, same in every row): D minus the union of *all* turns' spans — time
  nobody speaks, leading and trailing silence included, as Call Analytics counts hold music and dead
  air at either end.
- longest_gap_s (call level): the longest single stretch of that non-talk time (`silence_gaps`).
- n_turns, n_words: the role's turns and the sum of their `n_words`.
- words_per_minute: n_words / (talk_time_s / 60); NaN without talk time.
- loudness_mean_dbfs / loudness_peak_dbfs: the audio is cut into non-overlapping 50 ms frames; a frame
  belongs to a role when its centre lies inside that role's spans and inside no span of another
  role (overlapped speech is a mix of both voices and cannot be attributed). Frame level is
  20·log10(RMS), i.e. dBFS with a full-scale *square* wave at 0 dB, so a sine of amplitude A reads
  20·log10(A/√2). Mean = 10·log10 of the mean frame power (the RMS of everything the role said):
  averaging power rather than dB keeps the short pauses inside a turn from dragging the mean towards
  −∞. Peak = the loudest frame. Power is floored at −120 dBFS (digital silence). NaN without frames.
- interruptions / interruptions_json: the number of times this role cut the other off: one of its
  turns starts while a turn of another role is in progress (other.start < start < other.end) and
  overlaps it by at least `align.INTERRUPTION_MIN_OVERLAP_S`, the threshold `conversation_metrics`
  uses, so quick hand-overs do not count. The JSON lists each as {turn_index, at_s, by, of}.
- sentiment_mean: mean VADER compound score (−1..1) of the role's turns (`turn_sentiment`).
- sentiment_first_quarter / sentiment_last_quarter: the same mean over the role's turns whose
  midpoint lies in [0, D/4) / [3D/4, D]. A turn is a unit of meaning, so it is not split across
  quarters; its midpoint decides.
- tone_negative_mean: negative acoustic tone, p_angry + p_anxious + p_sad (= 1 − p_neutral_positive),
  averaged over the tone windows weighted by each window's overlap with the role's spans, so a window
  that barely touches a turn counts little. NaN without tone scores or without overlap.
- tone_negative_first_quarter / tone_negative_last_quarter: the same, with the role's spans clipped to
  [0, D/4) / [3D/4, D].
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from callintel_dagster.engines.align import INTERRUPTION_MIN_OVERLAP_S, TURN_COLUMNS
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio
from callintel_dagster.engines.sentiment import compound, sentiment_label
from callintel_dagster.engines.spans import Span, total_length, union_spans
from callintel_dagster.engines.vocabulary import AGENT, CUSTOMER, ROLES

FRAME_S = 0.05
SILENCE_FLOOR_DBFS = -120.0
PERIODS = ("call", "first_quarter", "last_quarter")


def _clip(spans: Sequence[Span], low: float, high: float) -> list[Span]:
    return [(max(s, low), min(e, high)) for s, e in spans if min(e, high) > max(s, low)]


def _overlap(spans: Sequence[Span], start: float, end: float) -> float:
    return total_length(_clip(spans, start, end))


def period_bounds(period: str, duration_s: float) -> Span:
    """[start, end) of `period` ("call", "first_quarter", "last_quarter") in a call of `duration_s`."""
    if period == "call":
        return 0.0, float(duration_s)
    if period == "first_quarter":
        return 0.0, duration_s / 4
    if period == "last_quarter":
        return 3 * duration_s / 4, float(duration_s)
    raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")


def in_period(turns: pd.DataFrame, period: str, duration_s: float) -> pd.Series:
    """Boolean mask of the turns whose midpoint lies in `period` (see module docstring)."""
    low, high = period_bounds(period, duration_s)
    middle = (turns["start_s"] + turns["end_s"]) / 2
    upper = middle <= high if period != "first_quarter" else middle < high
    return (middle >= low) & upper


def role_spans(turns: pd.DataFrame, role: str) -> list[Span]:
    """Union of the [start_s, end_s) spans of `role`'s turns."""
    chosen = turns[turns["role"] == role]
    return union_spans(list(zip(chosen["start_s"].astype(float), chosen["end_s"].astype(float))))


def silence_gaps(turns: pd.DataFrame, duration_s: float) -> list[Span]:
    """Stretches of the call in which no turn is in progress, leading and trailing ones included."""
    speech = _clip(union_spans(list(zip(turns["start_s"].astype(float), turns["end_s"].astype(float)))),
                   0.0, float(duration_s))
    gaps, cursor = [], 0.0
    for start, end in speech:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if duration_s > cursor:
        gaps.append((cursor, float(duration_s)))
    return gaps


def turn_sentiment(turns: pd.DataFrame) -> pd.DataFrame:
    """VADER sentiment per turn.

    Columns: turn_index (int64), role (str), start_s, end_s (float64), sentiment (float64, the VADER
    compound score in −1..1), sentiment_label (str: "negative" at or below −0.05, "positive" at or
    above 0.05, else "neutral" — VADER's recommended cut-offs). VADER is lexicon-based: it needs no
    model, handles the negation and intensifiers of conversational English, and ships in a wheel.
    A Spanish turn (``language`` column "es") is scored over the Spanish valence list (engines/sentiment.py).
    """
    languages = turns["language"] if "language" in turns else [None] * len(turns)
    scores = [compound(text, language if isinstance(language, str) else "en")
              for text, language in zip(turns["text"], languages, strict=True)]
    labels = [sentiment_label(score) for score in scores]
    return pd.DataFrame({
        "turn_index": turns["turn_index"].astype("int64").to_numpy(),
        "role": turns["role"].astype(str).to_numpy(),
        "start_s": turns["start_s"].astype("float64").to_numpy(),
        "end_s": turns["end_s"].astype("float64").to_numpy(),
        "sentiment": pd.Series(scores, dtype="float64").to_numpy(),
        "sentiment_label": labels,
    })


def interruptions(turns: pd.DataFrame) -> list[dict]:
    """Every interruption (see module docstring), in time order: {turn_index, at_s, by, of}."""
    events = []
    rows = list(turns[["turn_index", "role", "start_s", "end_s"]].itertuples(index=False))
    for turn in rows:
        for other in rows:
            overlap = min(turn.end_s, other.end_s) - turn.start_s
            if (other.role != turn.role and other.start_s < turn.start_s < other.end_s
                    and overlap >= INTERRUPTION_MIN_OVERLAP_S):
                events.append({"turn_index": int(turn.turn_index), "at_s": float(turn.start_s),
                               "by": turn.role, "of": other.role})
                break
    return sorted(events, key=lambda e: (e["at_s"], e["turn_index"]))


def _frame_levels(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre time, mean power) of each whole non-overlapping FRAME_S frame of `audio`."""
    size = int(round(FRAME_S * sample_rate))
    n_frames = len(audio) // size
    frames = np.asarray(audio)[: n_frames * size].reshape(n_frames, size)
    centres = (np.arange(n_frames) + 0.5) * size / sample_rate
    power = np.empty(n_frames)
    # In float64 a block of frames at a time: the whole of a 2-hour call at once took two 1 GB copies.
    for first in range(0, n_frames, _FRAMES_PER_BLOCK):
        power[first:first + _FRAMES_PER_BLOCK] = np.mean(
            frames[first:first + _FRAMES_PER_BLOCK].astype(np.float64) ** 2, axis=1)
    return centres, power


_FRAMES_PER_BLOCK = 4096


def _inside(times: np.ndarray, spans: Sequence[Span]) -> np.ndarray:
    mask = np.zeros(len(times), dtype=bool)
    for start, end in spans:
        mask |= (times >= start) & (times < end)
    return mask


def _db(power: np.ndarray | float) -> np.ndarray | float:
    return 10 * np.log10(np.maximum(power, 10 ** (SILENCE_FLOOR_DBFS / 10)))


def _loudness(centres: np.ndarray, power: np.ndarray, own: Sequence[Span],
              other: Sequence[Span]) -> tuple[float, float]:
    chosen = power[_inside(centres, own) & ~_inside(centres, other)]
    if chosen.size == 0:
        return float("nan"), float("nan")
    return float(_db(chosen.mean())), float(_db(chosen.max()))


def negative_tone(tone_scores: pd.DataFrame | None, spans: Sequence[Span]) -> float:
    """Overlap-weighted mean of 1 − p_neutral_positive over the tone windows touching `spans`."""
    if tone_scores is None or tone_scores.empty or not spans:
        return float("nan")
    weights = np.array([_overlap(spans, float(s), float(e))
                        for s, e in zip(tone_scores["start_s"], tone_scores["end_s"])])
    if weights.sum() <= 0:
        return float("nan")
    negative = 1.0 - tone_scores["p_neutral_positive"].to_numpy(dtype=np.float64)
    return float(np.average(negative, weights=weights))


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def call_characteristics(audio: np.ndarray, turns: pd.DataFrame, tone_scores: pd.DataFrame | None,
                         duration_s: float, sample_rate: int = SAMPLE_RATE) -> list[dict]:
    """One row per role (agent, customer, then other_agent when the call has one) with the
    characteristics defined in the module docstring. `audio` is the whole call, mono float32 at `sample_rate` (`audio.decode_audio`)."""
    duration_s = float(duration_s)
    gaps = silence_gaps(turns, duration_s)
    sentiment = turn_sentiment(turns)
    events = interruptions(turns)
    centres, power = _frame_levels(audio, sample_rate)
    spans = {role: role_spans(turns, role) for role in ROLES}
    first_q, last_q = period_bounds("first_quarter", duration_s), period_bounds("last_quarter", duration_s)

    rows = []
    # Agent and customer always get a row; another agent only on calls that have one (a transfer).
    for role in [r for r in ROLES if r in (AGENT, CUSTOMER) or spans[r]]:
        others = union_spans([span for r in ROLES if r != role for span in spans[r]])
        mine = turns["role"] == role
        own_sentiment = sentiment.loc[mine.to_numpy(), "sentiment"]
        talk = total_length(spans[role])
        n_words = int(turns.loc[mine, "n_words"].sum())
        mean_db, peak_db = _loudness(centres, power, spans[role], others)
        own_events = [e for e in events if e["by"] == role]
        rows.append({
            "role": role,
            "talk_time_s": talk,
            "non_talk_time_s": total_length(gaps),
            "longest_gap_s": max((e - s for s, e in gaps), default=0.0),
            "n_turns": int(mine.sum()),
            "n_words": n_words,
            "words_per_minute": n_words / (talk / 60) if talk > 0 else float("nan"),
            "loudness_mean_dbfs": mean_db,
            "loudness_peak_dbfs": peak_db,
            "interruptions": len(own_events),
            "interruptions_json": json.dumps(own_events),
            "sentiment_mean": _mean(own_sentiment),
            "sentiment_first_quarter": _mean(
                own_sentiment[in_period(turns, "first_quarter", duration_s)[mine].to_numpy()]),
            "sentiment_last_quarter": _mean(
                own_sentiment[in_period(turns, "last_quarter", duration_s)[mine].to_numpy()]),
            "tone_negative_mean": negative_tone(tone_scores, spans[role]),
            "tone_negative_first_quarter": negative_tone(tone_scores, _clip(spans[role], *first_q)),
            "tone_negative_last_quarter": negative_tone(tone_scores, _clip(spans[role], *last_q)),
        })
    return rows


TURN_TABLE_COLUMNS = [*TURN_COLUMNS, "phi_kinds", "language"]


@dataclasses.dataclass(frozen=True)
class CharacteristicsTask:
    """Picklable per-call task for the Spark workers (loudness needs the decoded audio).

    `call` carries the call's transcript turns and tone windows as JSON, read once per day by the
    driver, so a worker never queries the lakehouse."""

    # Milliseconds per call: few Spark tasks (spark_calls.PACKED_TASK_MAX_AUDIO_S).
    packs_calls: ClassVar[bool] = True

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        audio = decode_call_audio(call)
        turns = pd.DataFrame(json.loads(call["turns_json"]), columns=TURN_TABLE_COLUMNS)
        tone = pd.DataFrame(json.loads(call["tone_json"])) if call["tone_json"] != "[]" else None
        duration = audio.size / SAMPLE_RATE
        per_turn = turn_sentiment(turns) if len(turns) else pd.DataFrame()
        if len(per_turn):
            per_turn["tone_negative"] = [negative_tone(tone, [(s, e)]) for s, e in zip(per_turn["start_s"], per_turn["end_s"])]
        return {
            "call_characteristics": call_characteristics(audio, turns, tone, duration),
            "turn_sentiment": per_turn.to_dict("records"),
        }
