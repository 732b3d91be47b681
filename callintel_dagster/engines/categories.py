"""User-defined QA categories: YAML rules matched against one call (pure Python; no Dagster).

This is the counterpart of Amazon Transcribe Call Analytics *categories*: a QA lead writes rules in a
file, and every call is tagged with the categories whose rules it meets, with evidence (turn, time,
text) for each match. The rules see the speaker-aligned transcript turns (`Transcripts` table, text
already redacted, `phi_kinds` a JSON list), the per-role characteristics
(`characteristics.call_characteristics`) and the acoustic tone windows (`ToneScores` table).

File format
-----------
::

    categories:
      - name: recording_disclosure_missing      # unique within the file
        description: Agent did not say the call may be recorded in the first 15 s.
        rule:                                   # exactly one rule (below)
          not_said:
            role: agent
            phrases: ["this call may be recorded", "this call is being recorded"]
            fuzzy: 85
            within: {first_s: 15}

A rule is a mapping with exactly one key, its kind:

``said`` / ``not_said`` (phrase spec)
    ``phrases`` (list, required); ``role``: agent | customer | any (default any);
    ``fuzzy``: 0-100, omitted = exact. Text and phrases are normalised (lower case, punctuation to
    spaces, whitespace collapsed). Exact = the phrase occurs as whole words. Fuzzy = RapidFuzz
    ``partial_ratio`` (best-aligned substring) >= ``fuzzy``, which absorbs ASR errors: "billing
    department" matches "building department" at 80. ``unless``: phrases that disqualify a turn (e.g.
    "last four" for an SSN request). Scope, all optional and combined: ``within`` with exactly one
    of ``first_s`` / ``last_s`` (absolute seconds) or ``first_fraction`` / ``last_fraction`` (share of
    the call) — a turn is in the window when it overlaps it; ``before`` / ``after``: a nested phrase
    spec — only turns before / after the first turn where it matches (all turns when it never
    matches for ``before``, none for ``after``).
    ``said`` matches with one hit per matching turn; ``not_said`` matches when no turn in scope
    matches, with one hit describing what was missing.
``phi``
    Turns that contain PHI (``phi_kinds``): ``kinds`` (list; default all), ``role``, and the same
    scope keys (``within``, ``before``, ``after``).
``non_talk_time``
    ``min_total_s`` (total non-talk time) and/or ``min_gap_s`` (one silence at least that long).
``interruptions``
    ``by``: agent | customer | any (default any), ``min_count`` (default 1).
``sentiment``
    Text sentiment (VADER compound, −1..1): ``role`` (required), ``period``: call | first_quarter |
    last_quarter (default call), ``max`` and/or ``min`` bounds on the role's mean in that period.
``tone``
    Acoustic negative tone (p_angry + p_anxious + p_sad, 0..1): ``role``, ``period``, ``min`` /
    ``max``, as for ``sentiment``.
``all`` / ``any``
    A list of rules: all must match / at least one must match.

YAML anchors (``&name`` / ``*name``) reuse phrase lists. `load_categories` validates the file with
pydantic and reports the first error as ``<file>:<line>: <where>: <problem>``, the line being that of
the offending rule or field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from rapidfuzz import fuzz

from callintel_dagster.engines.characteristics import (
    in_period,
    period_bounds,
    silence_gaps,
    turn_sentiment,
)
from callintel_dagster.engines.vocabulary import ROLES

HEALTHCARE_CATEGORIES = Path(__file__).resolve().parent.parent / "categories" / "healthcare.yaml"
HEALTHCARE_CATEGORIES_ES = HEALTHCARE_CATEGORIES.with_name("healthcare_es.yaml")

Role = Literal["agent", "customer", "other_agent", "any"]
Period = Literal["call", "first_quarter", "last_quarter"]


class CategoryFileError(ValueError):
    """A categories file that is not valid YAML or breaks the format; the message names file:line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """An absolute or relative time range at the start or end of the call (exactly one key)."""

    first_s: float | None = Field(None, gt=0)
    last_s: float | None = Field(None, gt=0)
    first_fraction: float | None = Field(None, gt=0, le=1)
    last_fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Window:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of first_s, last_s, first_fraction, last_fraction (got {given})")
        return self

    def bounds(self, duration_s: float) -> tuple[float, float]:
        if self.first_s is not None:
            return 0.0, min(self.first_s, duration_s)
        if self.last_s is not None:
            return max(0.0, duration_s - self.last_s), duration_s
        if self.first_fraction is not None:
            return 0.0, duration_s * self.first_fraction
        return duration_s * (1 - self.last_fraction), duration_s

    def describe(self) -> str:
        name, value = next((n, v) for n, v in self if v is not None)
        return {"first_s": f"first {value:g} s", "last_s": f"last {value:g} s",
                "first_fraction": f"first {value:.0%}", "last_fraction": f"last {value:.0%}"}[name]


class PhraseSpec(_Strict):
    phrases: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    role: Role = "any"
    fuzzy: float | None = Field(None, ge=0, le=100)
    unless: list[str] = []
    within: Window | None = None
    before: PhraseSpec | None = None
    after: PhraseSpec | None = None


class PhiSpec(_Strict):
    kinds: list[str] | None = None
    role: Role = "any"
    within: Window | None = None
    before: PhraseSpec | None = None
    after: PhraseSpec | None = None


class NonTalkSpec(_Strict):
    min_total_s: float | None = Field(None, ge=0)
    min_gap_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_threshold(self) -> NonTalkSpec:
        if self.min_total_s is None and self.min_gap_s is None:
            raise ValueError("give min_total_s and/or min_gap_s")
        return self


class InterruptionSpec(_Strict):
    by: Role = "any"
    min_count: int = Field(1, ge=1)


class _BoundedSpec(_Strict):
    role: Literal["agent", "customer"]
    period: Period = "call"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> _BoundedSpec:
        if self.min is None and self.max is None:
            raise ValueError("give min and/or max")
        return self

    def admits(self, value: float) -> bool:
        return (not np.isnan(value) and (self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))

    def describe(self) -> str:
        bounds = [f"{sign} {value:g}" for sign, value in ((">=", self.min), ("<=", self.max)) if value is not None]
        return " and ".join(bounds)


class SentimentSpec(_BoundedSpec):
    min: float | None = Field(None, ge=-1, le=1)
    max: float | None = Field(None, ge=-1, le=1)


class ToneSpec(_BoundedSpec):
    min: float | None = Field(None, ge=0, le=1)
    max: float | None = Field(None, ge=0, le=1)


class SaidRule(_Strict):
    said: PhraseSpec


class NotSaidRule(_Strict):
    not_said: PhraseSpec


class PhiRule(_Strict):
    phi: PhiSpec


class NonTalkRule(_Strict):
    non_talk_time: NonTalkSpec


class InterruptionRule(_Strict):
    interruptions: InterruptionSpec


class SentimentRule(_Strict):
    sentiment: SentimentSpec


class ToneRule(_Strict):
    tone: ToneSpec


class AllRule(_Strict):
    all: list[Rule] = Field(min_length=1)


class AnyRule(_Strict):
    any: list[Rule] = Field(min_length=1)


_RULE_KINDS = {"said": SaidRule, "not_said": NotSaidRule, "phi": PhiRule, "non_talk_time": NonTalkRule,
               "interruptions": InterruptionRule, "sentiment": SentimentRule, "tone": ToneRule,
               "all": AllRule, "any": AnyRule}


def _rule_kind(value: Any) -> str | None:
    """The discriminator: a rule is a one-key mapping whose key is its kind."""
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        return kind if kind in _RULE_KINDS else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Rule = Annotated[
    Union[tuple(Annotated[model, Tag(kind)] for kind, model in _RULE_KINDS.items())],  # noqa: UP007
    Discriminator(_rule_kind, custom_error_type="rule_kind",
                  custom_error_message=f"a rule is a mapping with exactly one key, one of {sorted(_RULE_KINDS)}"),
]
AllRule.model_rebuild()
AnyRule.model_rebuild()


class Category(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    rule: Rule


class _CategoryFile(_Strict):
    categories: list[Category] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------
# Loading: pydantic validates the plain data; the composed YAML node tree maps its error back to a line.


def _node_line(root: yaml.Node, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest node of `root` that the pydantic error location `loc` reaches.

    Location parts that are not keys of the current mapping (the discriminator tags pydantic inserts
    for the rule union) are skipped.
    """
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
            if child is None:
                continue
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
    return node.start_mark.line + 1


def load_categories(path: str | Path) -> list[Category]:
    """Parse and validate a categories file (format in the module docstring).

    Raises CategoryFileError naming the file and line of the first problem: YAML syntax, a field
    or rule that breaks the format, or a duplicate category name.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise CategoryFileError(f"{path}:{line}: invalid YAML: {error.problem or error}") from error
    if root is None:
        raise CategoryFileError(f"{path}:1: the file is empty; expected a 'categories:' list")
    try:
        categories = _CategoryFile.model_validate(data).categories
    except ValidationError as error:
        first = error.errors()[0]
        # Drop the union tag pydantic puts before each rule's own key ("said.said" -> "said").
        parts = [str(part) for i, part in enumerate(first["loc"]) if i == 0 or part != first["loc"][i - 1]]
        where = ".".join(parts) or "<top>"
        raise CategoryFileError(f"{path}:{_node_line(root, first['loc'])}: {where}: {first['msg']}") from error
    seen: set[str] = set()
    for index, category in enumerate(categories):
        if category.name in seen:
            line = _node_line(root, ("categories", index, "name"))
            raise CategoryFileError(f"{path}:{line}: duplicate category name {category.name!r}")
        seen.add(category.name)
    return categories


# ---------------------------------------------------------------------------------------------
# Matching. A rule evaluates to a list of hits; an empty list means it did not match.

_NORMALIZE_DROP = re.compile(r"[^\w']")


def _normalize(text: str) -> tuple[str, list[int]]:
    """Lower-cased text with punctuation as spaces and whitespace collapsed, plus, for each of its
    characters, the index of the source character (so evidence can quote the original text)."""
    chars: list[str] = []
    offsets: list[int] = []
    for index, char in enumerate(text.replace("\u2019", "'")):
        for out in " " if _NORMALIZE_DROP.match(char) else char.lower():  # lower() may yield 2 chars
            if out == " " and (not chars or chars[-1] == " "):
                continue
            chars.append(out)
            offsets.append(index)
    if chars and chars[-1] == " ":
        chars.pop()
        offsets.pop()
    return "".join(chars), offsets


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to word boundaries: the best-aligned substring of a fuzzy match has the
    phrase's length, so it can cut a misheard word ("ilding department" for "building department")
    or start on a space."""
    while start < end and text[start] == " ":
        start += 1
    while end > start and text[end - 1] == " ":
        end -= 1
    while start > 0 and text[start - 1] != " ":
        start -= 1
    while end < len(text) and text[end] != " ":
        end += 1
    return start, end


def _find_phrase(phrase: str, text: str, fuzzy: float | None) -> tuple[int, int] | None:
    """Source-text [start, end) of `phrase` in `text` (exact whole words, or fuzzy partial_ratio)."""
    needle, _ = _normalize(phrase)
    haystack, offsets = _normalize(text)
    if not needle or not haystack:
        return None
    if fuzzy is None:
        match = re.search(rf"(?<![\w']){re.escape(needle)}(?![\w'])", haystack)
        span = match.span() if match else None
    else:
        alignment = fuzz.partial_ratio_alignment(needle, haystack, score_cutoff=fuzzy)
        span = _whole_words(haystack, alignment.dest_start, alignment.dest_end) if alignment else None
    if span is None or span[1] <= span[0]:
        return None
    return offsets[span[0]], offsets[span[1] - 1] + 1


class _Call:
    """One call's inputs, prepared once for every category."""

    def __init__(self, turns: pd.DataFrame, characteristics: Sequence[dict] | pd.DataFrame,
                 tone_scores: pd.DataFrame | None, duration_s: float):
        self.turns = turns.sort_values("start_s", kind="stable").reset_index(drop=True)
        self.duration_s = float(duration_s)
        rows = characteristics.to_dict("records") if isinstance(characteristics, pd.DataFrame) else characteristics
        self.by_role = {row["role"]: row for row in rows}
        self.tone_scores = tone_scores
        self._sentiment: pd.DataFrame | None = None

    @property
    def sentiment(self) -> pd.DataFrame:
        if self._sentiment is None:
            self._sentiment = turn_sentiment(self.turns)
        return self._sentiment

    def whole_call(self) -> tuple[float, float]:
        return 0.0, self.duration_s


def _hit(path: str, evidence: str, start_s: float, end_s: float, turn_index: int | None = None) -> dict:
    return {"rule": path, "turn_index": turn_index, "start_s": float(start_s), "end_s": float(end_s),
            "evidence": evidence}


def _turn_matches(spec: PhraseSpec, text: str) -> tuple[int, int] | None:
    if any(_find_phrase(p, text, spec.fuzzy) for p in spec.unless):
        return None
    return next(filter(None, (_find_phrase(p, text, spec.fuzzy) for p in spec.phrases)), None)


def _scoped(spec: PhraseSpec | PhiSpec, call: _Call) -> pd.DataFrame:
    """The turns a phrase or PHI rule looks at: its role, time window and before/after anchors."""
    turns = call.turns
    mask = pd.Series(True, index=turns.index)
    if spec.role != "any":
        mask &= turns["role"] == spec.role
    if spec.within is not None:
        low, high = spec.within.bounds(call.duration_s)
        mask &= (turns["start_s"] < high) & (turns["end_s"] > low)
    if spec.before is not None:
        anchor = _first_match(spec.before, call)
        if anchor is not None:
            mask &= turns.index < anchor
    if spec.after is not None:
        anchor = _first_match(spec.after, call)
        mask &= turns.index > anchor if anchor is not None else False
    return turns[mask]


def _first_match(spec: PhraseSpec, call: _Call) -> int | None:
    """Row position (in start order) of the first turn in which `spec` matches."""
    return next((index for index, turn in _scoped(spec, call).iterrows() if _turn_matches(spec, turn["text"])),
                None)


def _scope_text(spec: PhraseSpec | PhiSpec) -> str:
    parts = [f"by {spec.role}" if spec.role != "any" else "by anyone"]
    if spec.within is not None:
        parts.append(f"in the {spec.within.describe()}")
    if spec.before is not None:
        parts.append(f"before {spec.before.phrases[0]!r}")
    if spec.after is not None:
        parts.append(f"after {spec.after.phrases[0]!r}")
    return " ".join(parts)


def _said(spec: PhraseSpec, call: _Call, path: str) -> list[dict]:
    hits = []
    for _, turn in _scoped(spec, call).iterrows():
        span = _turn_matches(spec, turn["text"])
        if span is not None:
            hits.append(_hit(path, turn["text"][span[0]:span[1]], turn["start_s"], turn["end_s"],
                             int(turn["turn_index"])))
    return hits


def _not_said(spec: PhraseSpec, call: _Call, path: str) -> list[dict]:
    if _said(spec, call, path):
        return []
    low, high = spec.within.bounds(call.duration_s) if spec.within else call.whole_call()
    phrases = " / ".join(repr(p) for p in spec.phrases)
    return [_hit(path, f"not said {_scope_text(spec)}: {phrases}", low, high)]


def _phi(spec: PhiSpec, call: _Call, path: str) -> list[dict]:
    wanted = set(spec.kinds) if spec.kinds is not None else None
    hits = []
    for _, turn in _scoped(spec, call).iterrows():
        raw = turn.get("phi_kinds", "[]")
        kinds = set(json.loads(raw) if isinstance(raw, str) else raw or [])
        found = kinds if wanted is None else kinds & wanted
        if found:
            hits.append(_hit(path, f"{', '.join(sorted(found))} {_scope_text(spec)}: {turn['text']}",
                             turn["start_s"], turn["end_s"], int(turn["turn_index"])))
    return hits


def _non_talk(spec: NonTalkSpec, call: _Call, path: str) -> list[dict]:
    gaps = silence_gaps(call.turns, call.duration_s)
    total = sum(end - start for start, end in gaps)
    hits = []
    if spec.min_total_s is not None:
        if total < spec.min_total_s:
            return []
        hits.append(_hit(path, f"non-talk time {total:.1f} s >= {spec.min_total_s:g} s", *call.whole_call()))
    if spec.min_gap_s is not None:
        long_gaps = [(s, e) for s, e in gaps if e - s >= spec.min_gap_s]
        if not long_gaps:
            return []
        hits += [_hit(path, f"silence of {e - s:.1f} s >= {spec.min_gap_s:g} s", s, e) for s, e in long_gaps]
    return hits


def _interruptions(spec: InterruptionSpec, call: _Call, path: str) -> list[dict]:
    roles = list(ROLES) if spec.by == "any" else [spec.by]
    events = sorted((event for role in roles if role in call.by_role
                     for event in json.loads(call.by_role[role]["interruptions_json"])),
                    key=lambda e: e["at_s"])
    if len(events) < spec.min_count:
        return []
    ends = dict(zip(call.turns["turn_index"], call.turns["end_s"]))
    return [_hit(path, f"{e['by']} interrupted {e['of']} at {e['at_s']:.1f} s", e["at_s"],
                 ends.get(e["turn_index"], e["at_s"]), e["turn_index"]) for e in events]


def _sentiment(spec: SentimentSpec, call: _Call, path: str) -> list[dict]:
    column = "sentiment_mean" if spec.period == "call" else f"sentiment_{spec.period}"
    value = float(call.by_role.get(spec.role, {}).get(column, np.nan))
    if not spec.admits(value):
        return []
    turns = call.turns
    mask = ((turns["role"] == spec.role) & in_period(turns, spec.period, call.duration_s)).to_numpy()
    summary = f"{spec.role} sentiment {value:+.2f} over {spec.period.replace('_', ' ')} ({spec.describe()})"
    # The mean is within bounds, so at least one turn is too: those turns are the evidence.
    return [_hit(path, f"{summary}: {text}", start, end, int(index))
            for index, text, start, end, score in zip(turns["turn_index"][mask], turns["text"][mask],
                                                      turns["start_s"][mask], turns["end_s"][mask],
                                                      call.sentiment["sentiment"][mask])
            if spec.admits(float(score))]


def _tone(spec: ToneSpec, call: _Call, path: str) -> list[dict]:
    column = "tone_negative_mean" if spec.period == "call" else f"tone_negative_{spec.period}"
    value = float(call.by_role.get(spec.role, {}).get(column, np.nan))
    if not spec.admits(value):
        return []
    low, high = period_bounds(spec.period, call.duration_s)
    own = call.turns[call.turns["role"] == spec.role]
    windows = call.tone_scores if call.tone_scores is not None else pd.DataFrame()
    summary = f"{spec.role} negative tone {value:.2f} over {spec.period.replace('_', ' ')} ({spec.describe()})"
    hits = []
    for window in windows.itertuples(index=False):
        start, end = max(window.start_s, low), min(window.end_s, high)
        touches_role = ((own["start_s"] < end) & (own["end_s"] > start)).any()
        if end > start and touches_role and spec.admits(1.0 - window.p_neutral_positive):
            hits.append(_hit(path, f"{summary}: window {window.start_s:.1f}-{window.end_s:.1f} s is "
                                   f"{1.0 - window.p_neutral_positive:.2f} negative ({window.top_label})",
                             window.start_s, window.end_s))
    return hits or [_hit(path, summary, low, high)]


def _evaluate(rule: BaseModel, call: _Call, path: str) -> list[dict]:
    kind = next(iter(type(rule).model_fields))
    spec = getattr(rule, kind)
    path = f"{path}.{kind}" if path else kind
    if kind in ("all", "any"):
        results = [_evaluate(child, call, f"{path}[{i}]") for i, child in enumerate(spec)]
        if kind == "all" and not all(results):
            return []
        return [hit for hits in results for hit in hits]
    return _EVALUATORS[kind](spec, call, path)


_EVALUATORS = {"said": _said, "not_said": _not_said, "phi": _phi, "non_talk_time": _non_talk,
               "interruptions": _interruptions, "sentiment": _sentiment, "tone": _tone}


def match_categories(categories: Sequence[Category], turns: pd.DataFrame,
                     characteristics: Sequence[dict] | pd.DataFrame, tone_scores: pd.DataFrame | None,
                     duration_s: float) -> list[dict]:
    """The categories one call meets, as evidence rows.

    Each row: category (str), rule (str: the path of the leaf rule that produced it, e.g.
    ``all[1].not_said``), turn_index (int, or None when the evidence is not one turn: a missing
    phrase, a silence, a tone window), start_s / end_s (float: the turn, window or period), evidence
    (str: the matched text as spoken, or a description). A category appears iff it matched, with at
    least one row.
    """
    call = _Call(turns, characteristics, tone_scores, duration_s)
    return [{"category": category.name, **hit}
            for category in categories for hit in _evaluate(category.rule, call, "")]
