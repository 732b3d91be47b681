"""Features of the embedded tone model (pure Python; no Dagster): the Resemblyzer speaker-encoder
utterance embedding (weights ship in the `Resemblyzer` wheel) plus prosody and spectral-shape
statistics (pitch, energy, spectral shape, speaking rate).

Its own module because it defines the trained model: `tone_training.training_versions` hashes this
file and `tone_training.py`, so editing scoring or aggregation code does not force a retrain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from callintel_dagster.engines.audio import SAMPLE_RATE


_PARTIALS_PER_PASS = 256


def _speaker_embeddings(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Resemblyzer utterance embeddings (n, 256) for all clips, their partials batched together.

    Same partials and averaging as `VoiceEncoder.embed_utterance`, but the partials of all clips go
    through the network together, `_PARTIALS_PER_PASS` at a time, instead of one pass per clip (5x
    faster on 2 cores).
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
        # In batches of partials: the LSTM's activations for all the windows of a 2-hour call at once
        # took gigabytes; a batch this size keeps the speed of one pass.
        partials = np.concatenate([
            encoder(torch.from_numpy(np.stack(mels[first:first + _PARTIALS_PER_PASS])).to(encoder.device)).cpu().numpy()
            for first in range(0, len(mels), _PARTIALS_PER_PASS)])
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
