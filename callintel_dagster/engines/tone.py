"""Acoustic tone of call segments: angry / anxious / sad / neutral_positive (pure Python; no Dagster).

Two interchangeable backends behind one API (`ToneConfig` + `score_segments`):

* ``embedded`` (laptop, CI): a small classifier trained here on real acted emotional speech
  (`tone_training.py`, features in `tone_features.py`). It is small, fast on CPU and honest about its
  accuracy: the evaluation is on held-out film scenes.
* ``wav2vec2`` (production): a fine-tuned `Wav2Vec2ForSequenceClassification` (e.g.
  ``superb/wav2vec2-base-superb-er``: neu/hap/ang/sad) loaded from a local directory or hub id; its
  source labels are folded into the call-center classes by summing softmax probabilities.

Segments shorter than `MIN_SEGMENT_S` are skipped (no row): below half a second neither backend sees
enough prosody to say anything, and noise rows would inflate the call aggregates. `segment_index`
keeps the caller's index so skipped segments show up as gaps, not shifted rows. Segments longer than
`ToneConfig.max_segment_s` are cut into equal windows whose probabilities are averaged by duration,
which bounds memory (wav2vec2 attention is quadratic in length) and keeps inputs close to the 0.5-5 s
clips the embedded model was trained on.

Models are loaded through `cached_model`, once per process, never at import. torch, transformers and
scikit-learn are imported inside the functions that need them so importing this module (e.g. when
Dagster loads the code location) stays cheap.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio, warm_up_audio
from callintel_dagster.engines.model_cache import cached_model
from callintel_dagster.engines.tone_features import tone_features
from callintel_dagster.engines.tone_training import load_tone_model
from callintel_dagster.engines.vocabulary import (
    NEGATIVE_TONES,
    PROB_COLUMNS,
    TONE_LABELS,
)

SEGMENT_COLUMNS: tuple[str, ...] = ("segment_index", "start_s", "end_s", *PROB_COLUMNS, "top_label")
MIN_SEGMENT_S = 0.5
CPU_BATCH = 16
# The H200 measurement peaked at 256 windows of wav2vec2-base in bf16; a window of at most
# 8 s costs well under this much activation memory at inference.
MAX_GPU_BATCH = 256
_GPU_BYTES_PER_WINDOW = 64 * 2**20

# Source labels of common speech-emotion checkpoints -> call-center tone. superb/wav2vec2-base-superb-er
# (IEMOCAP) uses neu/hap/ang/sad, so its p_anxious is always 0: IEMOCAP has no fear class.
WAV2VEC2_LABEL_MAP: dict[str, str] = {
    "ang": "angry", "angry": "angry", "anger": "angry", "dis": "angry", "disgust": "angry",
    "fea": "anxious", "fear": "anxious", "fearful": "anxious", "anxious": "anxious",
    "sad": "sad", "sadness": "sad",
    "neu": "neutral_positive", "neutral": "neutral_positive", "calm": "neutral_positive",
    "hap": "neutral_positive", "happy": "neutral_positive", "happiness": "neutral_positive",
    "joy": "neutral_positive", "sur": "neutral_positive", "surprise": "neutral_positive",
    "surprised": "neutral_positive", "neutral_positive": "neutral_positive",
}


@dataclasses.dataclass(frozen=True)
class ToneConfig:
    """Which tone backend to run and where its weights are.

    `model_path`: for ``embedded`` the directory written by `save_tone_model` (required); for
    ``wav2vec2`` a local checkpoint directory or a hub id. `batch_size` caps how many (padded) segment
    windows go through one wav2vec2 forward pass, so one long call cannot exhaust GPU/CPU memory;
    None picks it from the free GPU memory on CUDA (at most `MAX_GPU_BATCH`), else `CPU_BATCH`.
    `dtype` of the wav2vec2 weights and inputs: None is bfloat16 (float16 where bf16 is missing) on
    CUDA and float32 on CPU.
    """

    backend: Literal["embedded", "wav2vec2"] = "embedded"
    model_path: str | None = None
    device: str = "cpu"
    max_segment_s: float = 8.0
    batch_size: int | None = CPU_BATCH
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("embedded", "wav2vec2"):
            raise ValueError(f"unknown tone backend {self.backend!r}; expected 'embedded' or 'wav2vec2'")
        if self.max_segment_s < MIN_SEGMENT_S:
            raise ValueError(f"max_segment_s must be >= {MIN_SEGMENT_S}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.dtype not in (None, "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, not {self.dtype!r}")


def _plan_windows(
    n_samples: int, segments: Sequence[tuple[float, float]], max_segment_s: float
) -> list[tuple[int, float, float, int, int]]:
    """(segment_index, start_s, end_s, window_start_sample, window_end_sample) per scoring window."""
    audio_s = n_samples / SAMPLE_RATE
    windows = []
    for index, (start, end) in enumerate(segments):
        start, end = max(0.0, float(start)), min(audio_s, float(end))
        if end - start < MIN_SEGMENT_S:
            continue
        n_windows = math.ceil((end - start) / max_segment_s - 1e-9)
        edges = np.linspace(start, end, n_windows + 1)
        for w_start, w_end in zip(edges[:-1], edges[1:]):
            windows.append((index, start, end, round(w_start * SAMPLE_RATE), round(w_end * SAMPLE_RATE)))
    return windows


def _embedded_probs(clips: list[np.ndarray], config: ToneConfig) -> np.ndarray:
    """(n, 4) probabilities in TONE_LABELS order. Runs on CPU whatever `config.device` says: the
    3-layer LSTM and a logistic regression are not worth a device transfer."""
    if config.model_path is None:
        raise ValueError(
            "the embedded tone backend needs ToneConfig.model_path: a directory written by save_tone_model "
            "(materialize the `tone_model` asset, which trains and saves it)"
        )
    model_dir = str(Path(config.model_path).resolve())
    bundle = cached_model(("tone", "embedded", model_dir), lambda: load_tone_model(model_dir))
    raw = bundle.classifier.predict_proba(tone_features(clips))
    probs = np.zeros((len(clips), len(TONE_LABELS)))
    for column, label in enumerate(bundle.classifier.classes_):
        probs[:, TONE_LABELS.index(label)] = raw[:, column]
    return probs


def wav2vec2_dtype(config: ToneConfig) -> str:
    if config.dtype is not None:
        return config.dtype
    if config.device.startswith("cuda"):
        from callintel_dagster.engines.batching import cuda_half_dtype

        return cuda_half_dtype()
    return "float32"


def _load_wav2vec2(model_path: str, device: str, dtype: str = "float32") -> tuple[Any, Any, Any]:
    """Feature extractor, model (eval mode, on `device`, weights in `dtype`) and the (n_source, 4)
    label-folding matrix.

    Unknown source labels raise instead of being dropped: silently losing probability mass would make
    the call-center probabilities stop summing to one.
    """
    import torch
    from transformers import AutoFeatureExtractor, Wav2Vec2ForSequenceClassification

    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    if extractor.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{model_path}: feature extractor expects {extractor.sampling_rate} Hz, not {SAMPLE_RATE}")
    model = Wav2Vec2ForSequenceClassification.from_pretrained(model_path).to(device=device, dtype=getattr(torch, dtype)).eval()
    folding = torch.zeros(model.config.num_labels, len(TONE_LABELS))
    for source_id in range(model.config.num_labels):
        source = str(model.config.id2label[source_id]).strip().lower()
        if source not in WAV2VEC2_LABEL_MAP:
            raise ValueError(f"{model_path}: no call-center mapping for emotion label {source!r}")
        folding[source_id, TONE_LABELS.index(WAV2VEC2_LABEL_MAP[source])] = 1.0
    return extractor, model, folding.to(device)


def _wav2vec2_probs(clips: list[np.ndarray], config: ToneConfig) -> np.ndarray:
    """Softmax over the checkpoint's labels, folded to TONE_LABELS.

    Windows are sorted by length so each padded batch wastes little compute, and the attention mask is
    always passed so padding neither leaks into attention nor into the mean pooling of the classifier.
    """
    import torch

    from callintel_dagster.engines.batching import batch_size_for

    model_path = config.model_path or "superb/wav2vec2-base-superb-er"
    dtype = wav2vec2_dtype(config)
    extractor, model, folding = cached_model(
        ("tone", "wav2vec2", model_path, config.device, dtype), lambda: _load_wav2vec2(model_path, config.device, dtype)
    )
    batch_size = batch_size_for(config.device, config.batch_size, bytes_per_item=_GPU_BYTES_PER_WINDOW,
                                cpu_default=CPU_BATCH, most=MAX_GPU_BATCH)
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]), reverse=True)
    probs = np.zeros((len(clips), len(TONE_LABELS)))
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        inputs = extractor(
            [clips[i] for i in batch], sampling_rate=SAMPLE_RATE, padding=True,
            return_attention_mask=True, return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(
                input_values=inputs["input_values"].to(config.device, dtype=getattr(torch, dtype)),
                attention_mask=inputs["attention_mask"].to(config.device),
            ).logits
        probs[batch] = (torch.softmax(logits.float(), dim=-1) @ folding).cpu().numpy()
    return probs


def _empty_segment_frame() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in SEGMENT_COLUMNS})
    return frame.astype({"segment_index": "int64", "top_label": "object"})


def score_segments(audio: np.ndarray, segments: Sequence[tuple[float, float]], config: ToneConfig) -> pd.DataFrame:
    """Tone probabilities for each segment (start_s, end_s in seconds) of one call's 16 kHz mono audio.

    One row per scored segment: segment_index (position in `segments`), start_s, end_s (clipped to
    the audio), p_angry, p_anxious, p_sad, p_neutral_positive (sum to 1) and top_label. All windows of
    the call are scored together: one batched encoder pass (embedded) or length-sorted padded batches
    of `config.batch_size` (wav2vec2). Segments under MIN_SEGMENT_S are skipped (see module docstring).
    """
    return score_calls([(audio, segments)], config)[0]


def score_calls(
    calls: Sequence[tuple[np.ndarray, Sequence[tuple[float, float]]]], config: ToneConfig
) -> list[pd.DataFrame]:
    """`score_segments` for several calls at once: the windows of all of them go through the model
    together (length-sorted batches across calls, which is what keeps a GPU busy), and each call gets
    its own frame back, in order."""
    plans, clips = [], []
    for audio, segments in calls:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D, got shape {audio.shape}")
        windows = _plan_windows(len(audio), segments, config.max_segment_s)
        plans.append(windows)
        clips.extend(audio[lo:hi] for _, _, _, lo, hi in windows)
    if not clips:
        return [_empty_segment_frame() for _ in plans]
    scorer = _embedded_probs if config.backend == "embedded" else _wav2vec2_probs
    probs = scorer(clips, config)
    frames, first = [], 0
    for windows in plans:
        frames.append(_segment_frame(windows, probs[first : first + len(windows)]) if windows else _empty_segment_frame())
        first += len(windows)
    return frames


def _segment_frame(windows: list[tuple[int, float, float, int, int]], window_probs: np.ndarray) -> pd.DataFrame:
    """Window probabilities averaged per segment, weighted by window length."""
    window_frame = pd.DataFrame(window_probs, columns=list(PROB_COLUMNS))
    window_frame["segment_index"] = [w[0] for w in windows]
    window_frame["start_s"] = [w[1] for w in windows]
    window_frame["end_s"] = [w[2] for w in windows]
    weight = np.array([hi - lo for *_, lo, hi in windows], dtype=np.float64)
    window_frame[list(PROB_COLUMNS)] = window_frame[list(PROB_COLUMNS)].mul(weight, axis=0)
    window_frame["weight"] = weight
    frame = window_frame.groupby(["segment_index", "start_s", "end_s"], as_index=False, sort=True).sum()
    frame[list(PROB_COLUMNS)] = frame[list(PROB_COLUMNS)].div(frame.pop("weight"), axis=0)
    frame["top_label"] = [TONE_LABELS[i] for i in frame[list(PROB_COLUMNS)].to_numpy().argmax(axis=1)]
    return frame[list(SEGMENT_COLUMNS)].astype({"segment_index": "int64"})


def _third_mean(negative: np.ndarray, starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    """Mean negative probability over [lo, hi), each segment weighted by its overlap with it."""
    overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0.0, None)
    return float(np.dot(negative, overlap) / overlap.sum()) if overlap.sum() > 0 else float("nan")


def aggregate_call_tone(seg_df: pd.DataFrame) -> dict[str, Any]:
    """Call-level tone facts from `score_segments` output.

    max_anger: highest segment p_angry (one shouting burst matters even in a calm call).
    negative_share: duration-weighted share of segments whose top label is angry/anxious/sad.
    tone_first_third / tone_last_third: duration-weighted mean negative probability (p_angry + p_anxious
    + p_sad) over the first and last third of the scored call span; tone_trend = last - first, so a
    negative trend means the caller calmed down. dominant_label: label with the most speech time as top
    label (ties go to the earlier TONE_LABELS entry). An empty frame gives NaNs and dominant_label None.
    """
    if seg_df.empty:
        nan = float("nan")
        return {
            "n_segments": 0, "scored_duration_s": 0.0, "max_anger": nan, "negative_share": nan,
            "tone_first_third": nan, "tone_last_third": nan, "tone_trend": nan, "dominant_label": None,
        }
    starts = seg_df["start_s"].to_numpy(dtype=np.float64)
    ends = seg_df["end_s"].to_numpy(dtype=np.float64)
    duration = np.clip(ends - starts, 0.0, None)
    negative = seg_df[["p_angry", "p_anxious", "p_sad"]].to_numpy(dtype=np.float64).sum(axis=1)
    top = seg_df["top_label"].to_numpy(dtype=object)
    total = float(duration.sum())
    span_lo, span_hi = float(starts.min()), float(ends.max())
    third = (span_hi - span_lo) / 3.0
    first = _third_mean(negative, starts, ends, span_lo, span_lo + third)
    last = _third_mean(negative, starts, ends, span_hi - third, span_hi)
    time_by_label = [float(duration[top == label].sum()) for label in TONE_LABELS]
    negative_time = float(duration[np.isin(top, list(NEGATIVE_TONES))].sum())
    return {
        "n_segments": int(len(seg_df)),
        "scored_duration_s": total,
        "max_anger": float(seg_df["p_angry"].max()),
        "negative_share": negative_time / total if total > 0 else float("nan"),
        "tone_first_third": first,
        "tone_last_third": last,
        "tone_trend": last - first,
        "dominant_label": TONE_LABELS[int(np.argmax(time_by_label))],
    }


def tone_windows(speech: Sequence[tuple[float, float]], window_s: float) -> list[tuple[float, float]]:
    """Cut speech segments into windows of at most `window_s`, so tone has a time resolution fine
    enough to place an anger peak at a turn and to compare the first and last third of a call."""
    windows = []
    for start, end in speech:
        n = max(1, math.ceil((end - start) / window_s - 1e-9))
        step = (end - start) / n
        windows.extend((start + i * step, start + (i + 1) * step) for i in range(n))
    return windows


@dataclasses.dataclass(frozen=True)
class ToneTask:
    """Picklable per-call task for the Spark workers: tone per speech window, plus call aggregates."""

    config: ToneConfig
    window_s: float = 4.0
    # Cheap per call, and its windows batch across calls: few Spark tasks (spark_calls.PACKED_TASK_MAX_AUDIO_S).
    packs_calls: ClassVar[bool] = True

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        [outcome] = self.run_batch([call])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def warm_up(self) -> None:
        """Load the tone model in this process and score a few seconds of noise with it
        (`spark_calls.warm_up_workers`)."""
        audio = warm_up_audio()
        score_calls([(audio, [(0.0, audio.size / SAMPLE_RATE)])], self.config)

    def run_batch(self, calls: list[dict]) -> list[dict[str, list[dict]] | Exception]:
        """The calls of one Spark task scored together (`score_calls`); a call that cannot be decoded
        gets its exception, in its place, and does not stop the others."""
        inputs: list[tuple[np.ndarray, list[tuple[float, float]]] | Exception] = []
        for call in calls:
            try:
                speech = [tuple(span) for span in json.loads(call["speech_segments"])]
                inputs.append((decode_call_audio(call), tone_windows(speech, self.window_s)))
            except Exception as exc:  # noqa: BLE001 - quarantined by the caller, per call
                inputs.append(exc)
        decoded = [item for item in inputs if not isinstance(item, Exception)]
        frames = iter(score_calls(decoded, self.config))
        return [
            item if isinstance(item, Exception) else self._tables(next(frames))
            for item in inputs
        ]

    @staticmethod
    def _tables(scores: pd.DataFrame) -> dict[str, list[dict]]:
        return {"tone_scores": scores.to_dict("records"), "call_tone": [aggregate_call_tone(scores)]}
