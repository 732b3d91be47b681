"""Ground truth for the one real call we can test on, and the metrics that score against it.

The `pyannote.audio` wheel ships `pyannote/audio/sample/`: a real 30 s two-party phone call
(`sample.wav`), who spoke when (`sample.rttm`, speakers `speaker90`/`speaker91`) and a timed
transcript (`sample.stm`, one utterance per line: `uri channel speaker start end text...`).
It is the only real, licensed, offline reference for both WER and DER, so tests and the
evaluation CLI read it from the installed wheel instead of copying audio into the repo.

The folder is located with `importlib.util.find_spec`, which does not execute
`pyannote/audio/__init__.py` (that would import torch + torchaudio just to find three files).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

import jiwer
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from callintel_dagster.engines.packaged import packaged_file
from callintel_dagster.engines.spans import total_length, union_spans

SAMPLE_URI = "sample"


@dataclasses.dataclass(frozen=True)
class StmUtterance:
    """One line of an STM file: a timed utterance of one speaker."""

    speaker: str
    start: float
    end: float
    text: str


def sample_dir() -> Path:
    """Folder of the pyannote.audio sample inside the installed wheel."""
    return packaged_file("pyannote.audio", f"sample/{SAMPLE_URI}.wav", "the reference sample call").parent


def sample_call_path() -> Path:
    """The real two-party phone call (`sample.wav`, 30 s)."""
    return sample_dir() / f"{SAMPLE_URI}.wav"


def load_rttm(path: str | Path | None = None, uri: str = SAMPLE_URI) -> Annotation:
    """Parse an RTTM file (`SPEAKER uri channel start duration ... speaker ...`) into an Annotation."""
    path = Path(path) if path is not None else sample_dir() / f"{SAMPLE_URI}.rttm"
    annotation = Annotation(uri=uri)
    for line_no, line in enumerate(path.read_text().splitlines()):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER" or fields[1] != uri:
            continue
        start, duration, speaker = float(fields[3]), float(fields[4]), fields[7]
        annotation[Segment(start, start + duration), line_no] = speaker
    return annotation


def load_stm(path: str | Path | None = None, uri: str = SAMPLE_URI) -> list[StmUtterance]:
    """Parse an STM file into utterances, in file order."""
    path = Path(path) if path is not None else sample_dir() / f"{SAMPLE_URI}.stm"
    utterances = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != uri:
            continue
        _, _, speaker, start, end, *words = fields
        utterances.append(StmUtterance(speaker, float(start), float(end), " ".join(words)))
    return utterances


def load_stm_words(path: str | Path | None = None, uri: str = SAMPLE_URI) -> list[str]:
    """Reference words in spoken order (the STM is timed per utterance, not per word)."""
    return [word for utterance in load_stm(path, uri) for word in utterance.text.split()]


def reference_transcript(path: str | Path | None = None, uri: str = SAMPLE_URI) -> str:
    """The whole reference transcript as one string."""
    return " ".join(utterance.text for utterance in load_stm(path, uri))


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (keeping in-word apostrophes: "didn't"), collapse whitespace.

    Whisper punctuates and capitalises; references differ in style. Scoring only the words keeps WER
    about recognition, not formatting.
    """
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of `hypothesis` against `reference` after `normalize_text` on both."""
    ref = normalize_text(reference)
    if not ref:
        raise ValueError("reference transcript is empty after normalization")
    return float(jiwer.wer(ref, normalize_text(hypothesis)))


def turns_to_annotation(turns: Iterable, uri: str = SAMPLE_URI) -> Annotation:
    """Objects with `start`, `end`, `speaker` (e.g. diarize.SpeakerTurn) as a pyannote Annotation."""
    annotation = Annotation(uri=uri)
    for index, turn in enumerate(turns):
        if turn.end > turn.start:
            annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def diarization_error_rate(
    hypothesis_turns: Iterable, reference: Annotation, collar: float = 0.0, duration_s: float | None = None
) -> float:
    """DER (missed + false alarm + confusion, over reference speech), overlapped speech scored.

    `collar` is the total forgiveness around each reference boundary (pyannote.metrics convention:
    0.25 means ±0.125 s). The scored region (uem) is the whole call, [0, `duration_s`] — by default up
    to the last reference or hypothesis boundary — so false alarms before the first reference turn
    count too.
    """
    hypothesis = turns_to_annotation(hypothesis_turns, uri=reference.uri or SAMPLE_URI)
    if duration_s is None:
        ends = [segment.end for segment in (*reference.itersegments(), *hypothesis.itersegments())]
        duration_s = max(ends, default=0.0)
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    return float(metric(reference, hypothesis, uem=Segment(0.0, duration_s)))


def role_accuracy_by_time(hypothesis: Iterable, reference: Iterable) -> float:
    """Share of the reference speech time the hypothesis attributes to a role that it attributes to
    the right one. Both are objects with `start`, `end` and `speaker` naming the role (agent /
    customer); each role's turns are merged first. Time the hypothesis leaves unattributed (missed
    speech) is left out: DER counts that; this scores who, not when."""
    def by_role(turns: Iterable) -> dict[str, list[tuple[float, float]]]:
        spans: dict[str, list[tuple[float, float]]] = {}
        for turn in turns:
            spans.setdefault(turn.speaker, []).append((turn.start, turn.end))
        return {role: union_spans(role_spans) for role, role_spans in spans.items()}

    def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
        return total_length([(max(s, t), min(e, u)) for s, e in a for t, u in b if min(e, u) > max(s, t)])

    hyp, ref = by_role(hypothesis), by_role(reference)
    anywhere = union_spans([span for spans in hyp.values() for span in spans])
    attributed = sum(overlap(spans, anywhere) for spans in ref.values())
    if attributed <= 0:
        return 0.0
    return sum(overlap(spans, hyp.get(role, [])) for role, spans in ref.items()) / attributed
