"""Audio decoding and probing (pure Python; no Dagster).

PyAV (FFmpeg) decodes every common container/codec, so WAV, FLAC, MP3, µ-law, stereo and odd sample
rates all become 16 kHz mono float32 — the one representation every downstream model takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioDecodeError(ValueError):
    """The file is not decodable audio (empty, truncated, not audio, no audio stream)."""


@dataclasses.dataclass(frozen=True)
class AudioProbe:
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str


def _reason(exc: Exception) -> str:
    """FFmpeg's own words ("Invalid data found when processing input"), without errno and path."""
    return getattr(exc, "strerror", None) or str(exc)


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def probe_audio(path: str | Path) -> AudioProbe:
    """Read container metadata without decoding the whole file."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path.name}: file is empty (0 bytes)")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: no audio stream in {container.format.name!r} container")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                # PyAV leaves the context unset when FFmpeg has no decoder for the declared codec
                # (e.g. a WAV header with format tag 0 or 0 bits per sample).
                raise AudioDecodeError(f"{path.name}: no decoder for the audio stream's codec")
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = float("nan")
            return AudioProbe(
                duration_s=duration,
                sample_rate=int(stream.codec_context.sample_rate or 0),
                channels=int(stream.codec_context.channels or 0),
                codec=stream.codec_context.name,
                container=container.format.name,
            )
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path.name}: not decodable audio ({_reason(exc)})") from exc


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_duration_s: float | None = None) -> np.ndarray:
    """Decode any audio file to mono float32 at `sample_rate`, streaming frame by frame.

    Stops (and raises) once `max_duration_s` is exceeded, so a 4-hour file never sits in memory whole.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path.name}: file is empty (0 bytes)")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    n_samples = 0
    limit = None if max_duration_s is None else int(max_duration_s * sample_rate)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    n_samples += chunk.size
                if limit is not None and n_samples > limit:
                    raise AudioDecodeError(
                        f"{path.name}: longer than the configured maximum of {max_duration_s:.0f} s"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path.name}: decoding failed ({_reason(exc)})") from exc
    if not chunks:
        raise AudioDecodeError(f"{path.name}: no audio samples decoded")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if audio.size == 0:
        raise AudioDecodeError(f"{path.name}: no audio samples decoded")
    return audio
