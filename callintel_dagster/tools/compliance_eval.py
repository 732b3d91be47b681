"""Compliance evaluation on calls written apart from the rules: corpus, fixed split, scores.

The demo scripts were written after ``engines/rules.py`` and use its trigger phrases, so scoring the
rules on them measures the rules on the text they were written for (the bench keeps that figure as a
smoke test). The corpus in ``eval_corpus/*.yaml`` was written before the rules were broadened, in
everyday wording: outcomes without the word "resolved", third-party callers, agent-offered and
caller-demanded escalations, negated mentions ("this is not about a bill"), disclosures phrased
every which way, several clinics, agents and customer voices.

The split is fixed by :data:`SPLIT_SEED`: rules and prompts may be tuned on the ``dev`` part only;
the ``test`` part is scored once, by ``make bench``, through the whole audio pipeline
(:func:`audio_evaluation`) and on the script text (:func:`text_evaluation`).

Each call expands to a demo-script body, so the demo machinery (TTS voices, telephone line, truth
sidecars, :func:`~callintel_dagster.tools.demo_calls.flag_scores`) synthesizes and scores it unchanged.
Run ``python -m callintel_dagster.tools.compliance_eval --part dev`` for the fast text-level loop
(``--language es`` for the Spanish corpus in ``eval_corpus/es/``, written before the Spanish lexicon
and split with the same seed; :func:`languages_section` scores language detection, Spanish WER and
the Spanish flags for the bench), and add ``--through-audio`` for the same scores on cached ASR +
diarization output of the part's audio (:func:`cached_transcriptions`, :func:`cached_audio_evaluation`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from callintel_dagster.engines.redaction import PLACEHOLDER_RE, redact_call, redact_turns
from callintel_dagster.tools.demo_calls import (
    DEMO_DATES,
    DemoScript,
    flag_scores,
    iter_truth,
    load_truth,
    write_demo_calls,
)
from callintel_dagster.tools.report_format import fmt, prf

CORPUS_DIR = Path(__file__).with_name("eval_corpus")
# The English corpus is the folder's own files; every other language has a sub-folder named by its code.
CORPUS_LANGUAGES = ("en", "es")
SPLIT_SEED = 12
TEST_SHARE = 0.4
Part = Literal["dev", "test", "all"]
# Corpus shorthand -> the flag it states. These five are the flags the targets are set on.
EXPECT_KEYS = {
    "billing": "billing_detected",
    "resolved": "issue_resolved",
    "phi_early": "phi_before_verification",
    "no_disclosure": "missing_recording_disclosure",
    "escalation": "escalation_requested",
}
SCORED_FLAGS = tuple(EXPECT_KEYS.values())
ROLES = {"A": "agent", "C": "customer"}
_TOKEN = re.compile(r"\S+")
_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand first second third fourth fifth sixth seventh eighth ninth tenth".split())
# A transcribed word at least this similar to the script word it stands for still reveals it.
REVEALING_SIMILARITY = 0.6


# --- corpus and split -------------------------------------------------------------------------------

def corpus_dir(language: str = "en") -> Path:
    return CORPUS_DIR if language == "en" else CORPUS_DIR / language


def load_corpus(language: str = "en") -> list[DemoScript]:
    """Every corpus call of ``language`` as a demo script (the ``day`` is set when a part is synthesized)."""
    scripts = []
    for path in sorted(corpus_dir(language).glob("*.yaml")):
        scripts += [DemoScript(call["name"], _body(call)) for call in yaml.safe_load(path.read_text())]
    names = [script.name for script in scripts]
    if len(set(names)) != len(names):
        raise ValueError("corpus call names must be unique")
    return scripts


def _body(call: Mapping) -> dict:
    expect = call["expect"]
    expected = {flag: expect.get(key) for key, flag in EXPECT_KEYS.items()}
    expected |= {"phi_requested_unnecessarily": None, "angry_caller": None,
                 "overall_sentiment": expect.get("sentiment")}
    turns = [{ROLES[role]: text} for line in call["turns"] for role, text in line.items()]
    return {"scenario": f"Evaluation corpus call {call['name']}.", "agent_id": call["agent"], "day": 0,
            "channel": call["channel"], "customer": {"voice": call["voice"]}, "expected": expected,
            "phi": [{"kind": kind, "text": text} for kind, text in call.get("phi", [])], "turns": turns}


def split(names: Sequence[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """``name -> 'dev' | 'test'``: a seeded shuffle of the sorted names, the first
    :data:`TEST_SHARE` of them test. Adding calls re-draws the split; the seed makes it repeatable."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * TEST_SHARE)
    return {name: "test" if rank < n_test else "dev" for rank, name in enumerate(order)}


def corpus_part(part: Part, language: str = "en") -> list[DemoScript]:
    scripts = load_corpus(language)
    parts = split([script.name for script in scripts])
    return [script for script in scripts if part == "all" or parts[script.name] == part]


# --- scoring ----------------------------------------------------------------------------------------

def score(predicted: Mapping[str, Mapping], truth: Mapping[str, Mapping]) -> dict[str, Any]:
    """Per-flag P/R/F1 on the five target flags, their macro-F1, how often ``issue_resolved`` was
    left null, and sentiment accuracy. ``truth`` maps a call key to its ``expected`` flags."""
    scores = flag_scores(predicted, truth)
    per_flag = {flag: _rounded(scores[flag]) for flag in SCORED_FLAGS if flag in scores}
    f1s = [per_flag[flag]["f1"] or 0.0 for flag in SCORED_FLAGS if flag in per_flag]
    sentiments = [(predicted.get(key, {}).get("overall_sentiment"), expected["overall_sentiment"])
                  for key, expected in truth.items() if expected.get("overall_sentiment")]
    return {
        "calls": len(truth),
        "per_flag": per_flag,
        "macro_f1": round(sum(f1s) / len(f1s), 4) if f1s else None,
        "issue_resolved_null_rate": round(
            sum(predicted.get(key, {}).get("issue_resolved") is None for key in truth) / len(truth), 4)
        if truth else None,
        "sentiment_accuracy": round(sum(g == e for g, e in sentiments) / len(sentiments), 4)
        if sentiments else None,
    }


def _rounded(scores: Mapping) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in scores.items()}


def assessment_flags(assessment) -> dict:
    """The scored fields of a :class:`~callintel_dagster.engines.compliance.CallAssessment`."""
    return {flag: assessment.flag(flag) for flag in SCORED_FLAGS} | {
        "overall_sentiment": assessment.overall_sentiment}


def text_evaluation(part: Part = "dev", assess=None, language: str = "en") -> dict[str, Any]:
    """Scores of an assessor (default: the rules engine) on the script text of one part: perfect
    words and speakers, so this isolates the compliance logic from ASR and diarization."""
    if assess is None:
        from callintel_dagster.engines.rules import assess_call_with_rules as assess
    scripts = corpus_part(part, language)
    predicted = {s.name: assessment_flags(assess(script_turns(s, language))) for s in scripts}
    return score(predicted, {s.name: s.body["expected"] for s in scripts})


def script_turns(script: DemoScript, language: str = "en") -> list[dict]:
    """The script's turns as the transcripts table carries them, with the call's language."""
    return [{**turn, "language": language} for turn in script.transcript()]


def misses(part: Part = "dev", assess=None, language: str = "en") -> list[str]:
    """One line per wrong or undecided flag on the script text: the dev loop's to-do list."""
    if assess is None:
        from callintel_dagster.engines.rules import assess_call_with_rules as assess
    lines = []
    for script in corpus_part(part, language):
        got = assessment_flags(assess(script_turns(script, language)))
        for flag, expected in script.body["expected"].items():
            if flag in got and expected is not None and got[flag] != expected:
                lines.append(f"{script.name}: {flag} expected {expected}, got {got[flag]}")
    return lines


# --- redaction recall -------------------------------------------------------------------------------

def _phi_token_mask(text: str, phi: Sequence[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """``(token, PHI kind or None)`` for the whitespace tokens of one reference turn."""
    spans = []
    for kind, value in phi:
        spans += [(m.start(), m.end(), kind) for m in re.finditer(re.escape(value), text)]
    return [(m.group(), next((kind for s, e, kind in spans if m.start() < e and s < m.end()), None))
            for m in _TOKEN.finditer(text)]


def text_redaction_recall(scripts: Sequence[DemoScript]) -> dict[str, Any]:
    """Token-level recall of redaction (:func:`redact_call`) on the PHI spoken in the scripts."""
    found, total = {}, {}
    for script in scripts:
        phi = [(p["kind"], p["text"]) for p in script.body["phi"]]
        turns = script.transcript()
        redacted = redact_call([t["text"] for t in turns], [t["role"] for t in turns])
        for turn, (_, spans) in zip(turns, redacted, strict=True):
            for match, (_, kind) in zip(_TOKEN.finditer(turn["text"]), _phi_token_mask(turn["text"], phi),
                                        strict=True):
                if kind is None:
                    continue
                total[kind] = total.get(kind, 0) + 1
                covered = any(s.start < match.end() and match.start() < s.end for s in spans)
                found[kind] = found.get(kind, 0) + covered
    return _recall(found, total)


def transcribed_redaction_recall(truth: Mapping[str, Mapping],
                                 stored_turns: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Token-level recall of redaction on the PHI as the pipeline transcribed it.

    ``truth`` maps a call id to its sidecar; ``stored_turns`` to the turn texts the pipeline wrote
    (redacted at rest). The stored words are aligned to the script words (word-level Levenshtein).
    A stored word aligned to a PHI word of the script is a PHI token as transcribed when it still
    carries the identifier: a placeholder (redacted), or a word with a digit, a number word, or a word
    close to the script's (:func:`_reveals`; leaked). So "418 willow away" for "418 Willow Lane" is two
    leaked tokens: "away" reveals nothing, and words ASR garbled beyond recognition or dropped are
    not counted.
    """
    found, total = {}, {}
    for token in _transcribed_phi_tokens(truth, stored_turns):
        total[token.kind] = total.get(token.kind, 0) + 1
        found[token.kind] = found.get(token.kind, 0) + token.redacted
    return _recall(found, total)


@dataclasses.dataclass(frozen=True)
class TranscribedPhiToken:
    """A stored word that stands for a spoken PHI word and still carries it (or its placeholder)."""

    call_id: str
    kind: str
    spoken: str
    stored: str
    redacted: bool
    context: str  # the stored words around it


def _transcribed_phi_tokens(truth: Mapping[str, Mapping], stored_turns: Mapping[str, Sequence[str]]):
    for call_id, record in truth.items():
        phi = [(p["kind"], p["text"]) for p in record["phi"]]
        reference = [token for turn in record["turns"] for token in _phi_token_mask(turn["text"], phi)]
        hypothesis = [token for text in stored_turns.get(call_id, []) for token in _TOKEN.findall(text)]
        for ref_index, hyp_index in _align([_norm(t) for t, _ in reference], [_norm(t) for t in hypothesis]):
            word, kind = reference[ref_index]
            if kind is None or hyp_index is None:
                continue
            redacted = bool(PLACEHOLDER_RE.search(hypothesis[hyp_index]))
            if redacted or _reveals(hypothesis[hyp_index], word):
                context = " ".join(hypothesis[max(0, hyp_index - 6):hyp_index + 4])
                yield TranscribedPhiToken(call_id, kind, word, hypothesis[hyp_index], redacted, context)


def _reveals(transcribed: str, spoken: str) -> bool:
    heard, said = _norm(transcribed), _norm(spoken)
    return (any(c.isdigit() for c in heard) or heard in _NUMBER_WORDS
            or difflib.SequenceMatcher(None, heard, said).ratio() >= REVEALING_SIMILARITY)


def _norm(token: str) -> str:
    if PLACEHOLDER_RE.search(token):
        return "\0placeholder"  # never equal to a script word: aligned only as a substitution
    return re.sub(r"[^\w]", "", token.lower())


def _align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int | None]]:
    """``(ref index, hyp index or None)`` pairs of a minimum-edit word alignment (deletions: None).
    A hypothesis word is paired with at most one reference word."""
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
                             cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs, i, j = [], n, m
    while i > 0:
        if j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _recall(found: Mapping[str, int], total: Mapping[str, int]) -> dict[str, Any]:
    tokens = sum(total.values())
    return {"recall": round(sum(found.values()) / tokens, 4) if tokens else None, "tokens": tokens,
            "per_kind": {kind: {"recall": round(found.get(kind, 0) / n, 4), "tokens": n}
                         for kind, n in sorted(total.items())}}


# --- through the audio pipeline ---------------------------------------------------------------------

def audio_evaluation(work: Path, resources: Mapping[str, Any], call_date: str,
                     part: Part = "test", language: str = "en") -> dict[str, Any]:
    """Synthesize one part of the corpus into ``work/blobs/<call_date>/``, run ``call_pipeline_job``
    on that partition with ``resources`` (whose blob store and lakehouse must live under ``work``),
    and score what the pipeline wrote: the flags, the redaction of the stored transcripts, the
    detected languages and the WER of the stored text (see :func:`redacted_wer`)."""
    import dagster as dg
    import pandas as pd

    from callintel_dagster.definitions import build_definitions

    scripts = corpus_part(part, language)
    started = time.perf_counter()
    write_demo_calls(work / "blobs", [call_date], scripts=scripts)
    synthesized = time.perf_counter()
    # `defs` is lazy (@dg.definitions): the bench binds its temporary stores through build_definitions.
    job = build_definitions("local", resources=dict(resources)).resolve_job_def("call_pipeline_job")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=call_date, instance=instance, raise_on_error=False)
    if not result.success:
        raise RuntimeError(f"call_pipeline_job failed on the {part} corpus")
    lakehouse = resources["lakehouse"]
    flags = lakehouse.read("compliance_flags")
    predicted = {row["call_id"]: {name: None if pd.isna(row[name]) else row[name]
                                  for name in (*SCORED_FLAGS, "overall_sentiment")}
                 for row in flags.to_dict("records")}
    truth = {t["call_id"]: t for _, t in iter_truth(work / "blobs") if t["expected"] is not None}
    turns = lakehouse.read("transcripts").sort_values(["call_id", "turn_index"])
    stored = {call_id: list(group["text"]) for call_id, group in turns.groupby("call_id")}
    metrics = lakehouse.read("conversation_metrics")
    detected = {row["call_id"]: row.get("language") for row in metrics.to_dict("records") if row["call_id"] in truth}
    return {
        "language": language,
        "detected_languages": {call_id: detected.get(call_id) for call_id in truth},
        "language_accuracy": round(sum(detected.get(c) == language for c in truth) / len(truth), 4) if truth else None,
        "wer": redacted_wer(truth, stored),
        "part": part,
        "calls": len(truth),
        "audio_minutes": round(sum(t["duration_s"] for t in truth.values()) / 60, 2),
        "synthesis_seconds": round(synthesized - started, 1),
        "pipeline_seconds": round(time.perf_counter() - synthesized, 1),
        "flags": score(predicted, {call_id: t["expected"] for call_id, t in truth.items()}),
        "redaction_as_transcribed": transcribed_redaction_recall(truth, stored),
    }


def redacted_wer(truth: Mapping[str, Mapping], stored_turns: Mapping[str, Sequence[str]]) -> float | None:
    """Corpus WER of the stored transcripts against the scripts. Stored text is redacted at rest, so
    the script is redacted by the same redactor first: an identifier both sides redact is one
    matching placeholder, one the ASR mangled past redaction is an error, as it should be."""
    from callintel_dagster.engines.reference import normalize_text

    references, hypotheses = [], []
    for call_id, record in truth.items():
        turns = record["turns"]
        redacted = redact_call([t["text"] for t in turns], [t["role"] for t in turns])
        references.append(normalize_text(" ".join(_placeholder_words(text) for text, _ in redacted)))
        hypotheses.append(normalize_text(" ".join(_placeholder_words(t) for t in stored_turns.get(call_id, []))))
    if not any(references):
        return None
    import jiwer

    return round(float(jiwer.wer(references, hypotheses)), 4)


def _placeholder_words(text: str) -> str:
    """``[DOB]`` as the word ``phidob``: normalisation would otherwise strip the brackets into ``dob``."""
    return PLACEHOLDER_RE.sub(lambda m: f" phi{m.group()[1:-1].lower()} ", text)


# --- cached transcription: re-score rules, roles and redaction in seconds ---------------------------
# ASR and diarization take ~15 min per part on 2 cores; everything after them (roles, redaction, the
# rules) takes seconds. The cache holds each call's words and speaker turns, keyed by the audio
# bytes, the ASR/diarization settings and the source of the engines that produce them, so a change
# to any of those re-transcribes and a change to the rules does not.

DEFAULT_CACHE_DIR = Path("data/eval_cache")  # git-ignored (data/)
# The date the cached parts are synthesized under. It seeds each call's line noise, so it is the
# bench's date: the cache then holds the audio that `make bench` section 3b scores.
CACHE_CALL_DATE = DEMO_DATES[0]
# The engines whose code changes what a cached entry holds (decode, ASR, diarization).
_CACHED_ENGINES = ("audio", "asr", "diarize")


def transcription_key(audio_path: Path, asr, diarization) -> str:
    """Cache key of one call's words and speaker turns: audio bytes + settings + engine code."""
    import importlib

    import faster_whisper

    digest = hashlib.sha256(Path(audio_path).read_bytes())
    digest.update(json.dumps({"asr": _non_default(asr), "diarization": _non_default(diarization),
                              "faster_whisper": faster_whisper.__version__}, sort_keys=True).encode())
    for name in _CACHED_ENGINES:
        module = importlib.import_module(f"callintel_dagster.engines.{name}")
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _non_default(config) -> dict:
    """The settings that differ from their defaults: a new option left at its default keeps the
    cache valid."""
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)
            if getattr(config, field.name) != field.default}


def cached_transcriptions(part: Part, cache_dir: Path = DEFAULT_CACHE_DIR, asr=None, diarization=None,
                          log=print, language: str = "en") -> dict[str, dict]:
    """``call name -> {"truth", "duration_s", "language", "words", "speakers"}`` for one part of
    the ``language`` corpus: synthesized into ``cache_dir/blobs`` and, as the transcripts stage does,
    each call's language detected and the call transcribed in it, with the pipeline's defaults
    (``ModelSettings``) unless given, reusing every cached entry whose key still matches."""
    from callintel_dagster.engines.asr import config_for_language, detect_language, transcribe_with_fallback
    from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
    from callintel_dagster.engines.diarize import diarize
    from callintel_dagster.resources.models import ModelSettings

    settings = ModelSettings()
    asr, diarization = asr or settings.asr_config(), diarization or settings.diarization_config()
    paths = write_demo_calls(cache_dir / "blobs", [CACHE_CALL_DATE], scripts=corpus_part(part, language))
    entries = {}
    for index, path in enumerate(paths, 1):
        truth = load_truth(path)
        entry_path = cache_dir / "transcriptions" / f"{transcription_key(path, asr, diarization)}.json"
        if not entry_path.exists():
            started = time.perf_counter()
            audio = decode_audio(path)
            heard_language, _ = detect_language(audio, asr)
            words, fell_back = transcribe_with_fallback(audio, config_for_language(asr, heard_language))
            entry = {"duration_s": audio.size / SAMPLE_RATE, "asr_fell_back": fell_back, "language": heard_language,
                     "words": [dataclasses.asdict(w) for w in words],
                     "speakers": [dataclasses.asdict(t) for t in diarize(audio, diarization)]}
            entry_path.parent.mkdir(parents=True, exist_ok=True)
            partial = entry_path.with_suffix(".partial")
            partial.write_text(json.dumps(entry))
            partial.replace(entry_path)
            log(f"transcribed {index}/{len(paths)} in {time.perf_counter() - started:.1f} s")
        entries[truth["call_name"]] = {"truth": truth, **json.loads(entry_path.read_text())}
    return entries


def replay_turns(entry: Mapping) -> list[dict]:
    """The turns the transcripts stage would store for a cached call: words aligned to speakers,
    roles assigned, PHI redacted (``TranscriptTask``, at-rest redaction on)."""
    from callintel_dagster.engines.align import build_turns
    from callintel_dagster.engines.asr import Word
    from callintel_dagster.engines.diarize import SpeakerTurn

    turns = build_turns([Word(**w) for w in entry["words"]], [SpeakerTurn(**t) for t in entry["speakers"]])
    # Entries cached before languages were detected are English calls.
    return [{**turn, "language": entry.get("language", "en")} for turn in redact_turns(turns).to_dict("records")]


def cached_audio_evaluation(entries: Mapping[str, Mapping], assess=None) -> dict[str, Any]:
    """Scores through audio from cached transcriptions: what :func:`audio_evaluation` measures,
    with the same engines after ASR and diarization, in seconds."""
    if assess is None:
        from callintel_dagster.engines.rules import assess_call_with_rules as assess
    stored = {name: replay_turns(entry) for name, entry in entries.items()}
    predicted = {name: assessment_flags(assess(turns)) for name, turns in stored.items()}
    truth = {name: entry["truth"] for name, entry in entries.items()}
    return {
        "calls": len(entries),
        "audio_minutes": round(sum(e["duration_s"] for e in entries.values()) / 60, 2),
        "flags": score(predicted, {name: t["expected"] for name, t in truth.items()}),
        "redaction_as_transcribed": transcribed_redaction_recall(
            truth, {name: [t["text"] for t in turns] for name, turns in stored.items()}),
    }


def corpus_section(work: Path, resources: Mapping[str, Any] | None, call_date: str) -> dict[str, Any]:
    """The bench's corpus section: the split, the test part on its script text and, unless
    ``resources`` is None (``bench --quick``), through the audio pipeline."""
    scripts = load_corpus()
    parts = split([s.name for s in scripts])
    test = [s for s in scripts if parts[s.name] == "test"]
    return {
        "corpus_calls": len(scripts),
        "split_seed": SPLIT_SEED,
        "test_calls": sorted(s.name for s in test),
        "script_text": text_evaluation("test"),
        "script_text_redaction": text_redaction_recall(test),
        "audio_pipeline": None if resources is None else audio_evaluation(work, resources, call_date, "test"),
    }


def render_markdown(section: Mapping[str, Any]) -> list[str]:
    """Markdown lines for the bench report."""
    text, audio = section["script_text"], section["audio_pipeline"]
    pipe = audio["flags"] if audio else {"per_flag": {}}
    text_redaction = section["script_text_redaction"]
    audio_redaction = audio["redaction_as_transcribed"] if audio else {"recall": None, "tokens": "–"}
    lines = [
        f"## 3b. Compliance on the evaluation corpus (test part: {len(section['test_calls'])} of "
        f"{section['corpus_calls']} calls, split seed {section['split_seed']})",
        "",
        "| flag | support | script text P / R / F1 | audio pipeline P / R / F1 |",
        "|---|---|---|---|",
        *(f"| {flag} | {text['per_flag'][flag]['support']} | {prf(text['per_flag'][flag])} | "
          f"{prf(pipe['per_flag'].get(flag))} |" for flag in SCORED_FLAGS if flag in text["per_flag"]),
        f"| **macro-F1** | | {fmt(text['macro_f1'])} | {fmt(pipe.get('macro_f1'))} |",
        f"| issue_resolved null rate | | {fmt(text['issue_resolved_null_rate'])} | "
        f"{fmt(pipe.get('issue_resolved_null_rate'))} |",
        f"| sentiment accuracy | | {fmt(text['sentiment_accuracy'])} | {fmt(pipe.get('sentiment_accuracy'))} |",
        f"| PHI redaction recall (tokens) | | {fmt(text_redaction['recall'])} ({text_redaction['tokens']}) | "
        f"{fmt(audio_redaction['recall'])} ({audio_redaction['tokens']}) |",
        "",
    ]
    if audio:
        lines += [f"Audio: {audio['calls']} calls, {audio['audio_minutes']} min, synthesized in "
                  f"{audio['synthesis_seconds']} s, pipeline {audio['pipeline_seconds']} s.", ""]
    else:
        lines += ["Audio pipeline skipped (`--quick`).", ""]
    return lines






def languages_section(work: Path, resources: Mapping[str, Any] | None, call_date: str,
                      english_audio: Mapping[str, Any] | None) -> dict[str, Any]:
    """The bench's languages section: the Spanish corpus's test part on script text and, unless
    ``resources`` is None, through the audio pipeline (its own ``work`` folder and lakehouse), and
    language detection over every call that went through audio: the Spanish test part and the
    English one (``english_audio``, :func:`corpus_section`'s audio run)."""
    scripts = load_corpus("es")
    parts = split([s.name for s in scripts])
    test = [s for s in scripts if parts[s.name] == "test"]
    spanish_audio = None if resources is None else audio_evaluation(work, resources, call_date, "test", "es")
    detected = {}
    for run in (english_audio, spanish_audio):
        if run:
            detected |= {call_id: (run["language"], got) for call_id, got in run["detected_languages"].items()}
    by_language = {language: {"calls": sum(e == language for e, _ in detected.values()),
                              "correct": sum(e == language == g for e, g in detected.values())}
                   for language in CORPUS_LANGUAGES}
    return {
        "spanish_corpus_calls": len(scripts),
        "split_seed": SPLIT_SEED,
        "spanish_test_calls": sorted(s.name for s in test),
        "spanish_script_text": text_evaluation("test", language="es"),
        "spanish_script_text_redaction": text_redaction_recall(test),
        "spanish_audio_pipeline": spanish_audio,
        "detection": {
            "calls": len(detected),
            "accuracy": round(sum(e == g for e, g in detected.values()) / len(detected), 4) if detected else None,
            "by_language": by_language,
            "wrong": sorted(call_id for call_id, (e, g) in detected.items() if e != g),
        },
        "english_wer": english_audio.get("wer") if english_audio else None,
    }


def render_languages_markdown(section: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the languages section."""
    text, audio, detection = section["spanish_script_text"], section["spanish_audio_pipeline"], section["detection"]
    pipe = audio["flags"] if audio else {"per_flag": {}}
    counts = ", ".join(f"{language} {row['correct']}/{row['calls']}" for language, row in detection["by_language"].items())
    lines = [
        f"## 3c. Languages: detection and the Spanish corpus (test part: {len(section['spanish_test_calls'])} of "
        f"{section['spanish_corpus_calls']} calls, split seed {section['split_seed']})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| language detected right (calls through audio) | {fmt(detection['accuracy'])} ({counts}) |",
        f"| WER, Spanish test calls (Whisper base), redacted text vs script | {fmt(audio['wer'] if audio else None)} |",
        f"| WER, English test calls (tiny.en, and base where tiny.en was unsure), redacted text vs script | {fmt(section['english_wer'])} |",
        "",
        "| Spanish flag | support | script text P / R / F1 | audio pipeline P / R / F1 |",
        "|---|---|---|---|",
        *(f"| {flag} | {text['per_flag'][flag]['support']} | {prf(text['per_flag'][flag])} | "
          f"{prf(pipe['per_flag'].get(flag))} |" for flag in SCORED_FLAGS if flag in text["per_flag"]),
        f"| **macro-F1** | | {fmt(text['macro_f1'])} | {fmt(pipe.get('macro_f1'))} |",
        f"| sentiment accuracy | | {fmt(text['sentiment_accuracy'])} | {fmt(pipe.get('sentiment_accuracy'))} |",
        f"| PHI redaction recall (tokens) | | {fmt(section['spanish_script_text_redaction']['recall'])} | "
        f"{fmt(audio['redaction_as_transcribed']['recall'] if audio else None)} |",
        "",
    ]
    if detection["wrong"]:
        lines += [f"Wrong language: {', '.join(detection['wrong'])}.", ""]
    if not audio:
        lines += ["Audio pipeline skipped (`--quick`).", ""]
    return lines


def audio_misses(entries: Mapping[str, Mapping], assess=None) -> list[str]:
    """One line per wrong or undecided flag, and per spoken PHI word left in clear, through (cached)
    audio: the dev loop's to-do list."""
    if assess is None:
        from callintel_dagster.engines.rules import assess_call_with_rules as assess
    lines = []
    stored = {name: replay_turns(entry) for name, entry in entries.items()}
    for name, entry in entries.items():
        got = assessment_flags(assess(stored[name]))
        for flag, expected in entry["truth"]["expected"].items():
            if flag in got and expected is not None and got[flag] != expected:
                lines.append(f"{name}: {flag} expected {expected}, got {got[flag]}")
    truth = {name: entry["truth"] for name, entry in entries.items()}
    for token in _transcribed_phi_tokens(truth, {name: [t["text"] for t in turns] for name, turns in stored.items()}):
        if not token.redacted:
            lines.append(f"{token.call_id}: {token.kind} {token.spoken!r} stored as {token.stored!r} in clear: "
                         f"... {token.context} ...")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Scores (and misses) of the rules engine on one part of the corpus: on the script text, or
    with ``--through-audio`` on the cached transcriptions of its audio (transcribing what is missing)."""
    parser = argparse.ArgumentParser(prog="python -m callintel_dagster.tools.compliance_eval")
    parser.add_argument("--part", choices=("dev", "test", "all"), default="dev")
    parser.add_argument("--misses", action="store_true", help="list every wrong or undecided flag")
    parser.add_argument("--language", choices=CORPUS_LANGUAGES, default="en", help="which corpus (default en)")
    parser.add_argument("--through-audio", action="store_true",
                        help="score the cached ASR + diarization output of the part's audio (see --cache-dir)")
    parser.add_argument("--transcribe-only", action="store_true",
                        help="fill the transcription cache for the part and print no scores")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    if args.through_audio or args.transcribe_only:
        entries = cached_transcriptions(args.part, args.cache_dir, language=args.language)
        if args.transcribe_only:
            print(f"{len(entries)} calls of the {args.part} part cached under {args.cache_dir}")
            return 0
        print(json.dumps(cached_audio_evaluation(entries), indent=2))
        if args.misses:
            print("\n".join(audio_misses(entries)))
        return 0
    report = {"scores": text_evaluation(args.part, language=args.language),
              "redaction": text_redaction_recall(corpus_part(args.part, args.language))}
    print(json.dumps(report, indent=2))
    if args.misses:
        print("\n".join(misses(args.part, language=args.language)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
