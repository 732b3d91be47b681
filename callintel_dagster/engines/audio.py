"""Audio decoding and probing (pure Python; no Dagster).

PyAV (FFmpeg) decodes every common container/codec, so WAV, FLAC, MP3, µ-law, stereo and odd sample
rates all become 16 kHz mono float32 — the one representation every downstream model takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from callintel_dagster.engines.blob_files import BlobTooLargeError, local_file_of_url

SAMPLE_RATE = 16_000
_HEADER_TRUST_S = 3600.0


def warm_up_audio(seconds: float = 2.0) -> np.ndarray:
    """Quiet seeded noise at `SAMPLE_RATE`: what a model task's `warm_up()` runs its models on once,
    so that a worker's first real call pays no model load and no first-inference set-up."""
    return (np.random.default_rng(0).standard_normal(round(seconds * SAMPLE_RATE)) * 0.01).astype(np.float32)


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


def decode_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    channels: int = 1,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> np.ndarray:
    """Decode any audio file to mono float32 at `sample_rate`, streaming frame by frame; with
    `channels=2`, keep a stereo file's two channels: shape (2, n), left first (a mono file is copied
    to both). `start_s` / `end_s` decode only that window (a chunk of a long call).

    Memory: the samples go straight into one buffer sized from the container's declared duration
    (grown by half, in place where the allocator can, when a header under-declares it), so the peak
    is about the decoded size itself (3 h at 16 kHz: 0.69 GB), not a list of frames plus their
    concatenated copy (twice that). A window holds only its own samples: PCM WAV and FLAC seek to
    it (their timestamps are exact), other codecs decode from the start and drop what comes before.
    Raises `AudioDecodeError` naming the file when it exceeds `max_bytes` or `max_duration_s`
    (checked before the buffer grows past the limit, so a 4-hour file never sits in memory whole),
    or when a sample is NaN or infinite (a float WAV can carry them; every model would turn them
    into NaN scores).
    """
    path = _checked_size(path, max_bytes)
    resampler = av.AudioResampler(format="flt", layout="mono" if channels == 1 else "stereo", rate=sample_rate)
    limit = None if max_duration_s is None else int(max_duration_s * sample_rate) * channels
    window = None if end_s is None else round((end_s - start_s) * sample_rate) * channels
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: no audio stream")
            # Interleaved samples: the buffer counts `channels` values per sample instant.
            declared = _declared_samples(container, sample_rate) * channels
            buffer = _SampleBuffer(path.name, declared if window is None else window, limit, max_duration_s,
                                   sample_rate * channels)
            # From a little earlier, so the resampler's filter is settled when the window starts.
            seeked = start_s > 0 and _seek(container, max(0.0, start_s - _RESAMPLER_PREROLL_S))
            to_skip = None if seeked else round(start_s * sample_rate) * channels
            for frame in container.decode(audio=0):
                if to_skip is None:  # the first frame after a seek says where decoding resumed
                    landed = float(frame.pts * frame.time_base) if frame.pts is not None else start_s
                    to_skip = round(max(0.0, start_s - landed) * sample_rate) * channels
                for out in resampler.resample(frame):
                    to_skip = _append_window(buffer, out.to_ndarray().reshape(-1), to_skip, window)
                if window is not None and buffer.size >= window:
                    break
            else:
                for out in resampler.resample(None):
                    to_skip = _append_window(buffer, out.to_ndarray().reshape(-1), to_skip or 0, window)
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path.name}: decoding failed ({_reason(exc)})") from exc
    samples = buffer.samples()
    return samples if channels == 1 else np.ascontiguousarray(samples.reshape(-1, channels).T)


def _checked_size(path: str | Path, max_bytes: int | None) -> Path:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(f"{path.name}: file is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise AudioDecodeError(f"{path.name}: {size} bytes exceeds the {max_bytes}-byte limit")
    return path


def stream_audio(path: str | Path, block_s: float, sample_rate: int = SAMPLE_RATE, max_duration_s: float | None = None,
                 max_bytes: int | None = None) -> Iterator[np.ndarray]:
    """`decode_audio`'s mono samples as consecutive blocks of `block_s` (the last one shorter), so a
    pass over a long call holds one block rather than the call (2 h at 16 kHz: 0.46 GB). The same
    checks, raised when decoding reaches the sample that breaks them."""
    path = _checked_size(path, max_bytes)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    block = round(block_s * sample_rate)
    buffer = _SampleBuffer(path.name, block, None if max_duration_s is None else int(max_duration_s * sample_rate),
                           max_duration_s, sample_rate)
    decoded = 0  # samples of earlier blocks, for the duration limit and the position in errors
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: no audio stream")
            frames = (out for frame in itertools.chain(container.decode(audio=0), [None])
                      for out in resampler.resample(frame))
            for out in frames:
                samples = out.to_ndarray().reshape(-1)
                while samples.size:
                    room = block - buffer.size
                    buffer.append(samples[:room], offset=decoded)
                    samples = samples[room:]
                    if buffer.size == block:
                        yield buffer.data.copy()
                        decoded += block
                        buffer.size = 0
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path.name}: decoding failed ({_reason(exc)})") from exc
    if buffer.size:
        yield buffer.data[: buffer.size].copy()
    elif decoded == 0:
        raise AudioDecodeError(f"{path.name}: no audio samples decoded")


# Codecs whose decoded frames after a seek carry exact timestamps, so a window can start there.
_EXACT_SEEK_CODECS = ("pcm_", "flac")
_RESAMPLER_PREROLL_S = 0.1


def _seek(container, start_s: float) -> bool:
    """Seek to at most `start_s` where the codec's timestamps make that exact; whether it did."""
    stream = container.streams.audio[0]
    if not stream.codec_context.name.startswith(_EXACT_SEEK_CODECS) or stream.time_base is None:
        return False
    container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    return True


def _append_window(buffer: _SampleBuffer, chunk: np.ndarray, to_skip: int, window: int | None) -> int:
    """Append what of `chunk` lies in the window; the samples still to skip before it starts."""
    dropped = min(to_skip, chunk.size)
    chunk = chunk[dropped:]
    if window is not None:
        chunk = chunk[: max(0, window - buffer.size)]
    if chunk.size:
        buffer.append(chunk)
    return to_skip - dropped


def _declared_samples(container, sample_rate: int) -> int:
    """Samples the container header promises (+1 s of slack), or one minute when it says nothing.
    Capped at an hour: a header is untrusted input, and growing the buffer later costs little."""
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        seconds = 60.0
    return int((min(max(seconds, 0.0), _HEADER_TRUST_S) + 1.0) * sample_rate)


class _SampleBuffer:
    """A preallocated float32 buffer that decoded frames are copied into."""

    def __init__(self, name: str, declared: int, limit: int | None, max_duration_s: float | None, sample_rate: int):
        self.name, self.limit, self.max_duration_s, self.sample_rate = name, limit, max_duration_s, sample_rate
        self.data = np.empty(declared if limit is None else min(declared, limit), dtype=np.float32)
        self.size = 0

    def append(self, chunk: np.ndarray, offset: int = 0) -> None:
        """Copy `chunk` in; `offset`: samples decoded before this buffer began (a streamed block)."""
        end = self.size + chunk.size
        if self.limit is not None and offset + end > self.limit:
            raise AudioDecodeError(f"{self.name}: longer than the configured maximum of {self.max_duration_s:.0f} s")
        if not np.isfinite(chunk).all():
            raise AudioDecodeError(
                f"{self.name}: non-finite samples (NaN or Inf) at {(offset + self.size) / self.sample_rate:.2f} s; not usable audio"
            )
        if end > self.data.size:
            grown = max(end, self.data.size * 3 // 2)
            self.data.resize(grown if self.limit is None else min(grown, self.limit), refcheck=False)
        self.data[self.size:end] = chunk
        self.size = end

    def samples(self) -> np.ndarray:
        if self.size == 0:
            raise AudioDecodeError(f"{self.name}: no audio samples decoded")
        # In place (realloc): trimming the slack never copies the samples.
        self.data.resize(self.size, refcheck=False)
        return self.data


def decode_call_audio(call: Mapping[str, Any], sample_rate: int = SAMPLE_RATE, channels: int = 1,
                      start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """The one decode of a call in a model stage, checked against what the earlier stages recorded.

    `call` is a model-stage call row (values may arrive as strings from Spark): `audio_url` (an
    fsspec URL, opened with the worker's own credentials and copied to a temp file no larger than
    the inventoried size), the `size_bytes` and `checksum_sha256` ingest inventoried, and the
    `duration_s` the VAD stage decoded under the configured duration limit. A recording replaced
    since then (same key, new content) is refused, because its rows upstream describe other audio;
    the decode is capped at the measured duration (+1 s), so the model stages inherit the configured
    size and duration limits. `start_s` / `end_s`: only that window (one chunk of a long call).
    """
    with _inventoried_file(call) as (path, limits):
        return decode_audio(path, sample_rate, channels=channels, start_s=start_s, end_s=end_s, **limits)


def stream_call_audio(call: Mapping[str, Any], block_s: float = 60.0) -> Iterator[np.ndarray]:
    """`decode_call_audio`'s mono samples, checked the same way, as blocks (`stream_audio`)."""
    with _inventoried_file(call) as (path, limits):
        yield from stream_audio(path, block_s, **limits)


def gather_spans(blocks: Iterable[np.ndarray], spans: Mapping[str, Sequence[tuple[float, float]]],
                 sample_rate: int = SAMPLE_RATE) -> tuple[dict[str, list[np.ndarray]], int]:
    """The samples under each key's (start_s, end_s) spans, one array per span, from the consecutive
    `blocks` of a call (`stream_call_audio`); and how many samples the blocks held in all."""
    wanted = [(key, index, round(start * sample_rate), round(end * sample_rate))
              for key, own in spans.items() for index, (start, end) in enumerate(own)]
    parts: dict[tuple[str, int], list[np.ndarray]] = {(key, index): [] for key, index, _, _ in wanted}
    offset = 0
    for block in blocks:
        for key, index, first, last in wanted:
            if first < offset + block.size and last > offset:
                parts[key, index].append(block[max(first - offset, 0):last - offset].copy())
        offset += block.size
    gathered = {key: [np.concatenate(parts[key, index]) for index in range(len(own)) if parts[key, index]]
                for key, own in spans.items()}
    return gathered, offset


@contextlib.contextmanager
def _inventoried_file(call: Mapping[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The call's recording as a local file checked against its inventory (`decode_call_audio`),
    and the decode limits that follow from the earlier stages."""
    url = str(call["audio_url"])
    expected_size, expected_sha = int(float(call["size_bytes"])), str(call["checksum_sha256"])

    def changed(how: str) -> AudioDecodeError:
        return AudioDecodeError(
            f"{url.rsplit('/', 1)[-1]}: changed since ingest ({how}); re-run the call's date from raw_call_audio"
        )

    try:
        with local_file_of_url(url, max_bytes=expected_size) as path:
            size = path.stat().st_size
            if size != expected_size or sha256_of(path) != expected_sha:
                raise changed(f"{size} bytes now, {expected_size} inventoried, or a different checksum")
            yield path, {"max_duration_s": float(call["duration_s"]) + 1.0, "max_bytes": expected_size}
    except BlobTooLargeError as exc:
        raise changed(f"more than the {expected_size} bytes inventoried") from exc
