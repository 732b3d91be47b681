"""Agent voice enrollment: a voiceprint per agent from that agent's earlier calls (pure Python).

Call centres know who took each call (`agent_id`, from the `agent-7__…` file-name prefix), and an
agent's voice is the same from call to call. So:

1. *Samples.* After roles are decided, the agent-role speaker's solo speech (their diarized turns
   minus every other speaker's) is embedded with Resemblyzer's speaker encoder, the model the
   diarizer already loads: one d-vector per call, with its seconds of speech
   (`agent_voice_samples` table).
2. *Voiceprint.* An agent's voiceprint for date D is the mean of the agent's samples from the
   `ENROLLMENT_LOOKBACK_DAYS` before D (never from D itself, so a day's roles never depend on that
   day's calls), built from samples of at least `min_sample_s` that were not voice mismatches and
   share the current encoder (`VOICEPRINT_MODEL`). A wrong early sample (the first-speaker rule
   took the caller for the agent) is dropped as an outlier: samples less similar than
   `outlier_similarity` to the medoid (the sample most similar to all others) do not count, and a
   voiceprint needs `min_calls` samples that agree. Provenance (calls, dates, seconds, encoder) is
   stored with it (`agent_voiceprints`).
3. *Matching.* On a later call each diarized speaker is embedded the same way and compared with the
   voiceprint (cosine). The most similar speaker is the agent when its similarity is at least
   `match_similarity` and beats the next speaker by `match_margin`; that replaces the first-speaker
   / agent-phrase rule of `engines/align.py`. The agent turns carry `voice_match` (the agent
   speaker's similarity), and a call where no speaker reaches `match_similarity` is a voice
   mismatch: someone other than the agent on file took the agent's side.
4. *Words by voice.* Diarization can hand a short agent reply ("Sure, go ahead") to the caller's
   cluster. Once the voiceprint picked the agent, each word is heard again (`relabel_words`): 1.6 s
   windows slide over the call, and a word moves to the voice its window sounds most like (the
   voiceprint for the agent, the other speakers' own embeddings) when that beats its diarized
   speaker by `relabel_margin`.

The thresholds were chosen on the dev calls of `tools/voice_eval.py` and the demo calls (never on
the enrolment calls the bench scores): through the telephone band, a two-call voiceprint scores
0.95-0.99 against the same voice in other calls and at most 0.89 against every other voice, and
two single-call samples of one voice agree at 0.94 and above.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from importlib import metadata

import numpy as np
import pandas as pd

from callintel_dagster.engines.audio import SAMPLE_RATE
from callintel_dagster.engines.diarize import SpeakerTurn, embed_utterances, sliding_embeddings, voice_encoder
from callintel_dagster.engines.spans import Span, total_length, union_spans

# Samples of other encoders never mix into a voiceprint: d-vectors of two models are not comparable.
VOICEPRINT_MODEL = f"resemblyzer-{metadata.version('resemblyzer')}:solo-speech-mean"
# How far back a voiceprint looks (days of samples before the run's date); a Lookback read.
ENROLLMENT_LOOKBACK_DAYS = 90
# Most solo speech one embedding listens to: more than any call of a normal length holds per speaker,
# and the encoder's memory grows with it (the whole of a 2-hour call took gigabytes).
EMBEDDING_MAX_SPEECH_S = 600.0


@dataclasses.dataclass(frozen=True)
class EnrollmentConfig:
    """Voice enrollment knobs (README "Agent voice enrollment"); see the module docstring."""

    enabled: bool = True
    min_speaker_s: float = 2.0
    min_sample_s: float = 4.0
    min_calls: int = 2
    outlier_similarity: float = 0.9
    match_similarity: float = 0.92
    match_margin: float = 0.03
    relabel_margin: float | None = 0.05
    relabel_max_call_s: float = 900.0
    device: str = "cpu"


def _subtract(spans: Sequence[Span], cuts: Sequence[Span]) -> list[Span]:
    """`spans` minus every stretch of `cuts` (both unions of sorted spans)."""
    out: list[Span] = []
    for start, end in spans:
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                out.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def solo_speech(speaker_turns: Sequence[SpeakerTurn]) -> dict[str, list[Span]]:
    """Per speaker, the time they talk while nobody else does (overlap blends two voices)."""
    by_speaker: dict[str, list[Span]] = {}
    for turn in speaker_turns:
        by_speaker.setdefault(turn.speaker, []).append((turn.start, turn.end))
    by_speaker = {speaker: union_spans(spans) for speaker, spans in by_speaker.items()}
    return {
        speaker: _subtract(spans, union_spans([s for other, o in by_speaker.items() if other != speaker for s in o]))
        for speaker, spans in by_speaker.items()
    }


def speaker_embeddings(
    audio: np.ndarray, speaker_turns: Sequence[SpeakerTurn], config: EnrollmentConfig
) -> dict[str, tuple[np.ndarray, float]]:
    """Unit d-vector and solo seconds of every speaker with at least `min_speaker_s` of solo speech."""
    sample = embedding_sample(speaker_turns, config)
    pieces = {speaker: [audio[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)] for s, e in spans]
              for speaker, (spans, _) in sample.items()}
    return embed_speakers(pieces, sample, config)


def embedding_sample(speaker_turns: Sequence[SpeakerTurn], config: EnrollmentConfig) -> dict[str, tuple[list[Span], float]]:
    """Per speaker with at least `min_speaker_s` of solo speech: the spans their embedding listens
    to (at most `EMBEDDING_MAX_SPEECH_S`, spread over the call) and their solo seconds."""
    sample = {}
    for speaker, spans in solo_speech(speaker_turns).items():
        seconds = total_length(spans)
        if seconds >= config.min_speaker_s:
            sample[speaker] = (spread_sample(spans, EMBEDDING_MAX_SPEECH_S), seconds)
    return sample


def embed_speakers(pieces: dict[str, list[np.ndarray]], sample: dict[str, tuple[list[Span], float]],
                   config: EnrollmentConfig) -> dict[str, tuple[np.ndarray, float]]:
    """`speaker_embeddings` from the audio under each speaker's `embedding_sample` spans (`pieces`)."""
    speakers = [speaker for speaker in sample if pieces.get(speaker)]
    if not speakers:
        return {}
    embeddings = embed_utterances(voice_encoder(config.device), [np.concatenate(pieces[s]) for s in speakers])
    return {speaker: (embedding, sample[speaker][1]) for speaker, embedding in zip(speakers, embeddings)}


def spread_sample(spans: list[Span], most_s: float) -> list[Span]:
    """`spans` themselves when they last at most `most_s`; else spans picked evenly across the call
    (as many as make `most_s` on average), cut at `most_s`."""
    total = total_length(spans)
    if total <= most_s:
        return spans
    wanted = min(len(spans), int(np.ceil(len(spans) * most_s / total)))
    kept, length = [], 0.0
    for index in sorted(set(np.linspace(0, len(spans) - 1, num=wanted).round().astype(int))):
        start, end = spans[index]
        take = min(end - start, most_s - length)
        if take <= 0:
            break
        kept.append((start, start + take))
        length += take
    return kept


@dataclasses.dataclass(frozen=True)
class VoiceMatch:
    """What a voiceprint says about one call's speakers: the speaker it confidently picks as the
    agent (else None), each speaker's similarity to it, and whether nobody sounds like the agent."""

    agent_speaker: str | None
    similarities: dict[str, float]
    mismatch: bool


def match_agent(
    embeddings: dict[str, tuple[np.ndarray, float]], voiceprint: np.ndarray, config: EnrollmentConfig
) -> VoiceMatch:
    """The speaker the voiceprint identifies as the agent (module docstring, step 3)."""
    similarities = {speaker: float(np.dot(embedding, voiceprint)) for speaker, (embedding, _) in embeddings.items()}
    ranked = sorted(similarities.values(), reverse=True)
    best = ranked[0] if ranked else None
    runner_up = ranked[1] if len(ranked) > 1 else -1.0
    confident = best is not None and best >= config.match_similarity and best - runner_up >= config.match_margin
    agent = max(similarities, key=similarities.get) if confident else None
    return VoiceMatch(agent, similarities, best is not None and best < config.match_similarity)


# Sliding 1.6 s windows per second of call for the word relabelling (one every 0.25 s).
RELABEL_WINDOWS_PER_S = 4.0


def relabel_words(audio: np.ndarray, words: Sequence, labels: Sequence[str], references: dict[str, np.ndarray],
                  config: EnrollmentConfig) -> list[str]:
    """Word speakers corrected by voice (module docstring, step 4): each word goes to the reference
    voice (the agent's voiceprint, every other speaker's own embedding) that the 1.6 s window centred
    nearest the word sounds most like, when that beats the word's diarized speaker by
    `relabel_margin`; otherwise it keeps its label. Off (`relabel_margin` None), with fewer than two
    references, or on a call longer than `relabel_max_call_s` (the windows of a long call cost more
    than they fix), the labels stay as they are."""
    duration = audio.size / SAMPLE_RATE
    if config.relabel_margin is None or len(references) < 2 or duration > config.relabel_max_call_s or not words:
        return list(labels)
    centres, windows = sliding_embeddings(voice_encoder(config.device), audio, RELABEL_WINDOWS_PER_S)
    speakers = list(references)
    similarity = windows @ np.stack([references[s] for s in speakers]).T  # (windows, speakers)
    relabelled = []
    for word, label in zip(words, labels):
        if label not in references:  # a speaker too brief to embed: nothing to compare it with
            relabelled.append(label)
            continue
        row = similarity[int(np.abs(centres - (word.start + word.end) / 2).argmin())]
        best = int(row.argmax())
        relabelled.append(speakers[best] if row[best] - row[speakers.index(label)] >= config.relabel_margin else label)
    return relabelled


def voiceprint_from_json(text: object) -> np.ndarray | None:
    """A stored voiceprint (`embedding_json`) as a unit vector; None when there is none."""
    if not isinstance(text, str) or not text:
        return None
    vector = np.asarray(json.loads(text), dtype=np.float32)
    return vector / np.linalg.norm(vector)


def build_voiceprints(samples: pd.DataFrame, before: dt.date, config: EnrollmentConfig) -> list[dict]:
    """`agent_voiceprints` rows (without the audit columns) for `before`: one per agent whose samples
    from the lookback window before that date agree (module docstring, step 2)."""
    if samples.empty:
        return []
    dates = pd.to_datetime(samples["call_date"]).dt.date
    window = (dates < before) & (dates >= before - dt.timedelta(days=ENROLLMENT_LOOKBACK_DAYS))
    usable = samples[
        window & samples["agent_id"].notna() & samples["embedding_json"].notna()
        & (samples["speech_s"] >= config.min_sample_s) & (samples["voice_mismatch"] != True)  # noqa: E712 - nullable
        & (samples["model_id"] == VOICEPRINT_MODEL)
    ]
    rows = []
    for agent_id, group in usable.sort_values(["call_date", "call_id"]).groupby("agent_id", sort=True):
        vectors = np.stack([voiceprint_from_json(text) for text in group["embedding_json"]])
        similarity = vectors @ vectors.T
        medoid = int(similarity.sum(axis=1).argmax())
        agree = similarity[medoid] >= config.outlier_similarity
        if agree.sum() < config.min_calls:
            continue
        kept = group[agree]
        mean = vectors[agree].mean(axis=0)
        rows.append({
            "agent_id": agent_id,
            "embedding_json": embedding_json(mean / np.linalg.norm(mean)),
            "n_calls": int(agree.sum()),
            "n_rejected": int((~agree).sum()),
            "speech_s": float(kept["speech_s"].sum()),
            "call_ids_json": json.dumps(list(kept["call_id"])),
            "first_call_date": min(pd.to_datetime(kept["call_date"]).dt.date),
            "last_call_date": max(pd.to_datetime(kept["call_date"]).dt.date),
            "model_id": VOICEPRINT_MODEL,
        })
    return rows


def embedding_json(vector: np.ndarray) -> str:
    """A d-vector as stored text (6 decimals: far below the encoder's own noise)."""
    return json.dumps([round(float(x), 6) for x in vector])
