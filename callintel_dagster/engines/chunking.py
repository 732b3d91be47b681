"""Long calls cut at silences into chunks that run as separate tasks, then stitched back (pure
Python; no Dagster).

A 12.5-minute call was one Spark task that took minutes while the other slot sat idle. A call longer
than `max_chunk_s` is cut where the VAD found silence (the middle of the latest pause that keeps a
chunk within the limit; a hard cut only where a stretch of speech has no pause at all), and each
chunk runs ASR and diarization as its own task (`ChunkTask`), next to the short calls of the same
Spark job. Each chunk also returns one voice embedding per local speaker (Resemblyzer, the
diarizer's encoder), because a chunk's "SPEAKER_00" means nothing in the next chunk: `stitch_chunks`
matches every chunk's speakers to the call's speakers by cosine similarity of those voices
(Hungarian assignment, a speaker left unmatched becomes a new one), and returns words and speaker
turns in call time. The transcript task then builds turns, roles, indices, metrics and the redacted
copy from them exactly as for a short call, so turn indices, times and labels run across the call.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from callintel_dagster.engines.asr import AsrConfig, Word, config_for_language, detect_language, transcribe_with_fallback
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio
from callintel_dagster.engines.diarize import (
    DiarizationConfig,
    SpeakerTurn,
    diarize,
    embed_utterances,
    voice_encoder,
)
from callintel_dagster.engines.vocabulary import SPLIT_STEREO

CHUNK_SEPARATOR = "#"
# Voice embedding per chunk speaker from at most this much of their speech: plenty for a d-vector.
_VOICE_S = 30.0
_MIN_PAUSE_S = 0.2


def plan_chunks(speech: list[tuple[float, float]], duration_s: float, max_chunk_s: float) -> list[tuple[float, float]]:
    """(start_s, end_s) chunks covering [0, duration_s), each at most `max_chunk_s`, cut in the
    middle of the latest pause (of at least 0.2 s between speech spans) that keeps the chunk within
    the limit; a chunk with no such pause is cut at the limit."""
    if duration_s <= max_chunk_s:
        return [(0.0, duration_s)]
    spans = sorted(speech)
    pauses = [(end + start) / 2 for (_, end), (start, _) in zip(spans, spans[1:]) if start - end >= _MIN_PAUSE_S]
    chunks, start = [], 0.0
    while duration_s - start > max_chunk_s:
        limit = start + max_chunk_s
        inside = [cut for cut in pauses if start + max_chunk_s / 4 < cut <= limit]
        cut = inside[-1] if inside else limit
        chunks.append((start, cut))
        start = cut
    chunks.append((start, duration_s))
    return chunks


def chunk_id(call_id: str, index: int) -> str:
    return f"{call_id}{CHUNK_SEPARATOR}{index:03d}"


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """One chunk of a long call: words and speaker turns in call time, and a voice per speaker."""

    asr: AsrConfig
    diarization: DiarizationConfig

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        start, end = float(call["chunk_start_s"]), float(call["chunk_end_s"])
        # Only the chunk's samples: two slots on a 2-hour call would otherwise hold it twice.
        piece = decode_call_audio(call, start_s=start, end_s=end)
        # Each chunk hears its own language; the stitched call is labelled with its first chunk's
        # (what detection on the whole call hears: its opening speech).
        language, probability = detect_language(piece, self.asr)
        heard, fell_back = transcribe_with_fallback(piece, config_for_language(self.asr, language))
        words = [dataclasses.replace(w, start=w.start + start, end=w.end + start) for w in heard]
        local = diarize(piece, self.diarization)
        voices = _speaker_voices(piece, local, self.diarization.device)
        turns = [SpeakerTurn(t.start + start, t.end + start, t.speaker) for t in local]
        return {
            "chunk": [{
                "start_s": start, "end_s": end,
                "words": [dataclasses.asdict(w) for w in words],
                "speakers": [dataclasses.asdict(t) for t in turns],
                "voices": voices,
                "asr_fell_back": fell_back,
                "language": language, "language_probability": probability,
            }]
        }


def _speaker_voices(audio: np.ndarray, turns: list[SpeakerTurn], device: str) -> dict[str, dict[str, Any]]:
    """Per local speaker: a unit voice embedding from up to `_VOICE_S` of their turns, and their
    speech time (the weight of that voice when the call's speaker is averaged over chunks)."""
    by_speaker: dict[str, list[SpeakerTurn]] = {}
    for turn in turns:
        by_speaker.setdefault(turn.speaker, []).append(turn)
    names, wavs, seconds = [], [], []
    for speaker, own in by_speaker.items():
        pieces, total = [], 0.0
        for turn in sorted(own, key=lambda t: t.end - t.start, reverse=True):
            if total >= _VOICE_S:
                break
            pieces.append(audio[round(turn.start * SAMPLE_RATE) : round(turn.end * SAMPLE_RATE)])
            total += turn.end - turn.start
        wav = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        if wav.size >= SAMPLE_RATE // 2:
            names.append(speaker)
            wavs.append(wav)
            seconds.append(sum(t.end - t.start for t in own))
    if not wavs:
        return {}
    embeddings = embed_utterances(voice_encoder(device), wavs)
    return {name: {"embedding": emb.tolist(), "seconds": s} for name, emb, s in zip(names, embeddings, seconds)}


def stitch_chunks(chunks: list[dict]) -> tuple[list[Word], list[SpeakerTurn], bool]:
    """Words and speaker turns of the whole call from its chunks' results (any order), with each
    chunk's local speakers mapped onto the call's speakers by voice (see the module docstring), and
    whether any chunk's words came from the multilingual model's second opinion."""
    from scipy.optimize import linear_sum_assignment

    centroids: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    words: list[Word] = []
    turns: list[SpeakerTurn] = []
    for chunk in sorted(chunks, key=lambda c: c["start_s"]):
        voices = chunk["voices"]
        mapping: dict[str, str] = {}
        local = list(voices)
        if centroids and local:
            known = list(centroids)
            similarity = np.array([[float(np.dot(voices[name]["embedding"], centroids[g]) /
                                          np.linalg.norm(centroids[g])) for g in known] for name in local])
            rows, cols = linear_sum_assignment(-similarity)
            mapping = {local[r]: known[c] for r, c in zip(rows, cols)}
        for name in local:
            target = mapping.setdefault(name, f"call_{len(centroids)}")
            vector, seconds = np.asarray(voices[name]["embedding"]), float(voices[name]["seconds"])
            centroids[target] = centroids.get(target, 0.0) + vector * seconds
            weights[target] = weights.get(target, 0.0) + seconds
        for turn in chunk["speakers"]:
            # A speaker too short to embed keeps a label of its own chunk: it stays a separate voice.
            speaker = mapping.get(turn["speaker"], f"{chunk['start_s']:.3f}:{turn['speaker']}")
            turns.append(SpeakerTurn(turn["start"], turn["end"], speaker))
        words.extend(Word(**word) for word in chunk["words"])
    words.sort(key=lambda w: (w.start, w.end))
    turns.sort(key=lambda t: (t.start, t.end))
    names: dict[str, str] = {}
    for turn in turns:
        names.setdefault(turn.speaker, f"SPEAKER_{len(names):02d}")
    fell_back = any(chunk.get("asr_fell_back", False) for chunk in chunks)
    return words, [dataclasses.replace(turn, speaker=names[turn.speaker]) for turn in turns], fell_back


def opening_language(chunks: list[dict]) -> tuple[str, float | None]:
    """The language of a stitched call: its first chunk's (the call's opening speech)."""
    first = min(chunks, key=lambda c: c["start_s"])
    return first["language"], first["language_probability"]


def is_chunk_row(call: dict) -> bool:
    """A Spark row that is one chunk of a long call (`map_calls_split` adds the bounds)."""
    return str(call.get("chunk_start_s", "")) not in ("", "nan", "None")


def chunk_results_column(payloads: list[str]) -> str:
    """The JSON the finishing task reads (`TranscriptTask` with a `chunk_results` field)."""
    return json.dumps([chunk for payload in payloads for chunk in json.loads(payload)["chunk"]])


def map_calls_split(
    map_calls, calls, task, description: str, speech_by_call: dict[str, list[tuple[float, float]]], max_chunk_s: float
):
    """`map_calls(calls, task, description)` (a `CallCompute`'s) with every call longer than
    `max_chunk_s` cut into chunks: one Spark job runs the short calls whole and the long calls'
    chunks, a second (light: alignment, redaction, the masked copy) finishes each long call from its
    stitched chunks. One result row per input call; a long call fails if any of its chunks failed."""
    import pandas as pd

    long_rows, chunk_rows, parents = [], [], {}
    for row in calls.to_dict("records"):
        # A split-stereo call is not diarized, so it has no speakers to stitch: it runs whole.
        if row.get("channel_layout") == SPLIT_STEREO:
            continue
        chunks = plan_chunks(speech_by_call.get(row["call_id"], []), float(row["duration_s"]), max_chunk_s)
        if len(chunks) == 1:
            continue
        long_rows.append(row)
        for index, (start, end) in enumerate(chunks):
            cid = chunk_id(row["call_id"], index)
            parents[cid] = row["call_id"]
            chunk_rows.append({**row, "call_id": cid, "chunk_start_s": start, "chunk_end_s": end})
    if not long_rows:
        return map_calls(calls, task, description)
    short = calls[~calls["call_id"].isin([row["call_id"] for row in long_rows])]
    # `task` runs a chunk row as a `ChunkTask` (TranscriptTask checks `is_chunk_row`).
    first = map_calls(pd.concat([short, pd.DataFrame(chunk_rows)], ignore_index=True), task, description)
    is_chunk = first["call_id"].isin(list(parents))
    chunk_results = first[is_chunk].assign(parent=lambda f: f["call_id"].map(parents))
    finished, failed = [], []
    for row in long_rows:
        own = chunk_results[chunk_results["parent"] == row["call_id"]].sort_values("call_id")
        bad = own[own["status"] != "ok"]
        if len(bad):
            failed.append({"call_id": row["call_id"], "status": "error", "payload": "{}",
                           "error": f"chunk {bad.iloc[0]['call_id']}: {bad.iloc[0]['error']}", "seconds": float(own["seconds"].sum())})
        else:
            finished.append({**row, "chunk_results": chunk_results_column(list(own["payload"])),
                             "chunk_seconds": float(own["seconds"].sum())})
    results = [first[~is_chunk], pd.DataFrame(failed, columns=first.columns)]
    if finished:
        finish = pd.DataFrame(finished)
        done = map_calls(finish.drop(columns=["chunk_seconds"]), task, f"{description} (stitch long calls)")
        done["seconds"] = done["seconds"] + done["call_id"].map(finish.set_index("call_id")["chunk_seconds"])
        results.append(done)
    return pd.concat([frame for frame in results if len(frame)], ignore_index=True)[list(first.columns)]
