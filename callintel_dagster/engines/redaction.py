"""PHI redaction for transcripts (pure Python; no Dagster).

HIPAA Safe Harbor (45 CFR 164.514(b)(2)) lists the identifiers that must go before text counts as
de-identified. Call transcripts carry the spoken subset of them: names, dates tied to a person,
phone numbers, e-mail, SSNs, medical record / member / account numbers, street addresses, ZIP codes,
URLs and IP addresses. Each is replaced with a typed placeholder (``[SSN]``, ``[DOB]`` …) rather than
deleted, so downstream readers (the LLM, the rules engine, a QA reviewer) still see *that* a date of
birth was spoken — which is exactly what the compliance flags are about — without seeing its value.

Patterns are deliberately regexes with spoken-language cues ("my name is", "date of birth is"),
because ASR output has no structure to lean on. Placeholders never match any pattern, so redaction is
idempotent: redacting already-redacted text changes nothing, and quotes taken from redacted text stay
valid against it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
# Numeric (03/14/1980, 3-14-80), ISO (1980-03-14), "March 14th, 1980", "14th of March 1980".
_DATE = (
    rf"(?:\b\d{{1,2}}[/-]\d{{1,2}}[/-]\d{{2,4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b"
    rf"|\b{_MONTH}\.?\s+{_DAY}\b(?:,?\s+\d{{4}}\b)?"
    rf"|\b{_DAY}\s+of\s+{_MONTH}\b(?:,?\s+\d{{4}}\b)?)"
)
_ID = r"[A-Za-z]{0,4}[-#]?\d[\dA-Za-z-]{3,}"
_CUE_GAP = r"(?:\s+(?:number|no\.?|id|#))?(?:\s*(?:is|was|as|of|:|#))?\s*"
_STREET_TYPES = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace"
    r"|circle|cir|parkway|pkwy|highway|hwy"
)
# Words that precede a street type in ordinary speech ("20 dollars on the way") but never in a name.
_NOT_STREET_WORD = r"(?!(?:the|a|an|on|in|to|of|for|my|your|dollars?|minutes?|days?|times?)\b)"
_NAME = r"[A-Z][a-z'\u2019-]+(?:\s+[A-Z][a-z'\u2019-]+)?"  # ASR may emit a typographic apostrophe
# Capitalised words that follow "this is" without being a name ("This is Correct", "this is About").
_NOT_NAME = (
    r"(?!(?:The|A|An|It|Not|Just|Really|Correct|Right|Great|Good|Fine|Okay|Ok|About|Regarding"
    r"|For|Your|My|What|Why|How|Urgent|Important|Sorry|So|Here|Calling|Looking|Trying)\b)"
)

# (kind, pattern, group): group 0 redacts the whole match; group 1 redacts only the value after a cue.
# Order matters only for ties: overlapping matches keep the earliest start, then the longest.
_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), 0),
    ("URL", re.compile(r"\b(?:https?://|www\.)[^\s,;]+", re.I), 0),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), 0),
    ("SSN", re.compile(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b"), 0),
    ("SSN", re.compile(r"(?i:\b(?:social security|social|ssn)" + _CUE_GAP + r")(\d{9}|\d{4})\b"), 1),
    ("DOB", re.compile(r"(?i:\b(?:date of birth|birth ?date|birthday|dob|born on|birth)" + _CUE_GAP + r")("
                       + _DATE + r")", re.I), 1),
    ("MRN", re.compile(r"(?i:\b(?:mrn|medical record)" + _CUE_GAP + r")(" + _ID + r")"), 1),
    ("MEMBER_ID", re.compile(r"(?i:\b(?:member|subscriber|policy|insurance|group)" + _CUE_GAP
                             + r")(" + _ID + r")"), 1),
    ("ACCOUNT", re.compile(r"(?i:\b(?:account|acct|claim|invoice)" + _CUE_GAP + r")(" + _ID + r")"), 1),
    ("ACCOUNT", re.compile(r"\b\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}\b"), 0),  # payment card
    ("PHONE", re.compile(r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b|\b\d{10}\b"), 0),
    ("DATE", re.compile(_DATE, re.I), 0),
    ("ADDRESS", re.compile(
        r"\b\d{1,6}\s+(?:" + _NOT_STREET_WORD + r"[A-Za-z0-9]+\s+){1,3}(?:" + _STREET_TYPES
        + r")\b\.?(?:,?\s+(?:apt|apartment|suite|unit|#)\.?\s*\w+)?"
        # The city, when a state code follows: Safe Harbor covers every unit smaller than a state.
        r"(?-i:,\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?(?=,?\s+[A-Z]{2}\b))?", re.I), 0),
    ("ZIP", re.compile(r"(?i:\bzip(?:\s*code)?" + _CUE_GAP + r")(\d{5}(?:-\d{4})?)\b"), 1),
    ("ZIP", re.compile(r"\b(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]"
                       r"|O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY]),?\s+(\d{5}(?:-\d{4})?)\b"), 1),
    ("NAME", re.compile(r"(?i:\b(?:my name is|name's|this is|i'm|i am|speaking with|patient is|calling for)\s+)"
                        + _NOT_NAME + r"(" + _NAME + r")"), 1),
    ("NAME", re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+(" + _NAME + r")"), 1),
)

PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(sorted({kind for kind, _, _ in _PATTERNS})) + r")\]")


@dataclasses.dataclass(frozen=True)
class Span:
    """One redacted identifier: ``original`` occupied ``text[start:end]`` of the input."""

    kind: str
    start: int
    end: int
    original: str

    @property
    def placeholder(self) -> str:
        return f"[{self.kind}]"


def find_phi(text: str) -> list[Span]:
    """All PHI spans in ``text``, sorted and non-overlapping (earliest, then longest, wins)."""
    candidates = []
    for kind, pattern, group in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span(group)
            if end > start:
                candidates.append(Span(kind, start, end, text[start:end]))
    candidates.sort(key=lambda s: (s.start, -(s.end - s.start)))
    spans: list[Span] = []
    for span in candidates:
        if not spans or span.start >= spans[-1].end:
            spans.append(span)
    return spans


def redact_text(text: str) -> tuple[str, list[Span]]:
    """Replace every PHI span with its typed placeholder; spans index into the *original* text."""
    spans = find_phi(text)
    pieces, cursor = [], 0
    for span in spans:
        pieces += [text[cursor:span.start], span.placeholder]
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), spans


def redact_slice(text: str, start: int, end: int) -> str:
    """The redacted rendering of ``text[start:end]``, widened to whole PHI spans.

    Evidence quotes are located in raw text but must be stored redacted *and* still be a verbatim
    substring of the redacted turn, so the slice is mapped through the same spans as the whole text.
    """
    redacted, spans = redact_text(text)
    offset = 0  # redacted index minus raw index, for positions after the spans seen so far
    r_start = r_end = None
    for span in spans:
        if r_start is None and start < span.end:
            r_start = start + offset if start < span.start else span.start + offset
        if r_end is None and end <= span.end:
            r_end = end + offset if end <= span.start else span.start + offset + len(span.placeholder)
        offset += len(span.placeholder) - (span.end - span.start)
    r_start = start + offset if r_start is None else r_start
    r_end = end + offset if r_end is None else r_end
    return redacted[r_start:r_end]


def redact_turns(turns: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """Transcript turns with ``text`` redacted and a ``phi_kinds`` column (sorted kinds found)."""
    frame = pd.DataFrame(turns).copy()
    results = [redact_text(str(text)) for text in frame["text"]]
    frame["text"] = [redacted for redacted, _ in results]
    frame["phi_kinds"] = [sorted({span.kind for span in spans}) for _, spans in results]
    return frame


def phi_word_indices(words: Sequence[str | Mapping]) -> list[int]:
    """Indices of words that are (part of) PHI, for muting audio by word timestamps.

    ``words`` are strings or dicts with a ``word`` (faster-whisper) or ``text`` key. Words are joined
    with single spaces so multi-word identifiers ("March 14th, 1980", "555 123 4567") are found
    exactly as in a transcript line; any word overlapping a span is PHI.
    """
    tokens = [(w if isinstance(w, str) else w.get("word", w.get("text", ""))).strip() for w in words]
    bounds, cursor = [], 0
    for token in tokens:
        bounds.append((cursor, cursor + len(token)))
        cursor += len(token) + 1
    spans = find_phi(" ".join(tokens))
    return [i for i, (start, end) in enumerate(bounds)
            if end > start and any(start < s.end and s.start < end for s in spans)]
