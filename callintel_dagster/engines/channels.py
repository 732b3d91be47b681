"""Channel layout of a recording, and the per-channel path for calls recorded one party per channel
(pure Python; no Dagster).

Contact-centre recorders often write two channels, agent on one and caller on the other. Such a file
already holds a perfect speaker separation, so diarizing its mono mix would throw information away.
But many two-channel files are *mono in stereo*: the same mix copied to both channels (or one
channel silent), and splitting those would give two copies of everyone. `measure_layout` tells them
apart by the **energy-activity check**:

1. Each channel is cut into 50 ms frames and each frame's level taken in dB *relative to that
   channel's speech level* (its 95th-percentile frame), so a gain difference between the channels
   (a louder agent headset, a copy at -6 dB) does not count as a difference.
2. A frame is *active* when either channel is within `ACTIVE_DB` of its speech level. In an active
   frame a channel *dominates* when its relative level exceeds the other's by `DOMINANCE_DB`.
3. The **separation** is the smaller of the two channels' shares of active frames they dominate.
   Two parties taking turns give each channel its turns (separation near each one's share of the
   talk, e.g. 0.3-0.5); copies of one mix give neither channel a lead (separation ~0). A channel
   whose speech level is less than `SPEECH_RANGE_DB` above its quiet frames carries no speech, only
   steady hiss, and the separation is 0. Echo / bleed of the other party, 10-20 dB down, still
   leaves the speaking channel dominant.

A two-channel call is `split_stereo` when the separation reaches `SPLIT_MIN_SEPARATION`, chosen on
generated dev calls (the dev part of the evaluation corpus recorded in the layouts of
`tools/channel_eval.VARIANTS`; `make bench` section "Channels" recomputes them and scores the test
calls): the 24 dev split-stereo calls, with echo from none to -10 dB, scored 0.32-0.48; the 18
mono-in-stereo ones (equal-gain copies, -6 dB copies, one channel hiss only, each channel with its
own hiss) scored 0.000. The threshold sits at 0.05: far above the copies, and low enough for a
customer who talks for a twentieth of the call. Files of more than two channels are `multichannel` and, like
mono and mono-in-stereo files, go through diarization of the mix.

For a `split_stereo` call, `TranscriptTask` VADs and transcribes each channel on its own and takes
the roles from the channel map (`agent_channel`, default left): each channel's speech regions, less
the other party's echo (`own_speech`), become that channel's speaker turns, so talk time, overlap
and interruptions are measured from the two channels' activity exactly, with no clustering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.audio import AudioDecodeError
from callintel_dagster.engines.diarize import SpeakerTurn
from callintel_dagster.engines.spans import Span, union_spans
from callintel_dagster.engines.vocabulary import (
    AGENT,
    CUSTOMER,
    MONO,
    MONO_IN_STEREO,
    MULTICHANNEL,
    SPLIT_STEREO,
)

# Channels by index in the file, as the channel map names them.
CHANNEL_NAMES = ("left", "right")
FRAME_S = 0.05
# 8 kHz keeps the telephone band and halves the work of the check.
LEVEL_RATE = 8_000
REFERENCE_PERCENTILE = 95.0
# A channel that carries speech spans this much between its speech level and its pauses (the 5th
# percentile frame); steady hiss on an unused channel spans a few dB.
FLOOR_PERCENTILE = 5.0
SPEECH_RANGE_DB = 15.0
ACTIVE_DB = -30.0
DOMINANCE_DB = 6.0
SPLIT_MIN_SEPARATION = 0.05
_FLOOR_DB = -120.0
# A stretch of a channel's speech shorter than this, between frames of the other party's echo, is echo.
MIN_OWN_SPEECH_S = 0.25
MIN_SPEAKING_S = 0.1
# Frames this coherent between the channels hold the same signal twice.
ECHO_COHERENCE = 0.5
# A word Whisper puts where its channel's VAD heard nothing is noise it read as speech.
WORD_SPEECH_SLACK_S = 0.2
# The VAD padding of a channel's speech regions. They are that party's speaker turns, and the VAD
# stage's 60 ms (kept for the segments tone and non-talk time use) widens every turn past the
# voice. Chosen on the corpus's dev part (24 split-stereo dev calls, `tools/channel_eval.py`):
# DER at collar 0.25 s 0.013 with 60 ms, 0.0096 with 30 ms; a pause of 200 or 500 ms, or a VAD
# threshold of 0.4 or 0.6, did no better. Words are kept by `WORD_SPEECH_SLACK_S`, not by the pad.
CHANNEL_SPEECH_PAD_MS = 30


@dataclasses.dataclass(frozen=True)
class ChannelLayout:
    """What `raw_call_audio` records: the layout and, for two channels, the separation it came from."""

    layout: str
    separation: float | None = None


def channel_frame_levels(path: str | Path, sample_rate: int = LEVEL_RATE) -> np.ndarray:
    """Frame power in dBFS per channel of a two-channel file: shape (2, n_frames), 50 ms frames.

    Streams the decode (FFmpeg resamples each frame), so memory stays at the frame levels, not the
    samples: a 3-hour call is 216,000 frames per channel.
    """
    path = Path(path)
    size = int(round(FRAME_S * sample_rate))
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=sample_rate)
    powers: list[np.ndarray] = []
    carry = np.zeros((0, 2), dtype=np.float32)

    def consume(chunk: np.ndarray) -> np.ndarray:
        samples = np.concatenate([carry, chunk.reshape(-1, 2)])
        whole = samples.shape[0] // size * size
        if whole:
            frames = samples[:whole].astype(np.float64).reshape(-1, size, 2)
            powers.append(np.mean(frames ** 2, axis=1))
        return samples[whole:]

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path.name}: no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    carry = consume(out.to_ndarray())
            for out in resampler.resample(None):
                carry = consume(out.to_ndarray())
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"{path.name}: decoding failed ({getattr(exc, 'strerror', None) or exc})") from exc
    if not powers:
        raise AudioDecodeError(f"{path.name}: no audio samples decoded")
    return _db(np.concatenate(powers).T)


def frame_levels(channels: np.ndarray, sample_rate: int) -> np.ndarray:
    """`channel_frame_levels` of decoded audio already in memory, shape (2, n_samples)."""
    size = int(round(FRAME_S * sample_rate))
    whole = channels.shape[1] // size * size
    frames = channels[:, :whole].astype(np.float64).reshape(channels.shape[0], -1, size)
    return _db(np.mean(frames ** 2, axis=2))


def _db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))


def _relative(levels: np.ndarray) -> np.ndarray:
    """Frame levels relative to each channel's speech level (module docstring, step 1)."""
    return levels - np.percentile(levels, REFERENCE_PERCENTILE, axis=1, keepdims=True)


def channel_separation(levels: np.ndarray) -> float:
    """The energy-activity check of the module docstring: min over channels of the share of active
    frames that channel dominates (0 = one signal, up to 0.5 = two parties talking equally)."""
    spread = np.percentile(levels, REFERENCE_PERCENTILE, axis=1) - np.percentile(levels, FLOOR_PERCENTILE, axis=1)
    if spread.min() < SPEECH_RANGE_DB:
        return 0.0
    relative = _relative(levels)
    active = relative.max(axis=0) >= ACTIVE_DB
    if not active.any():
        return 0.0
    lead = relative[0, active] - relative[1, active]
    return float(min(np.mean(lead >= DOMINANCE_DB), np.mean(-lead >= DOMINANCE_DB)))


def measure_layout(path: str | Path, channels: int) -> ChannelLayout:
    """The layout of a recording whose container declares `channels` channels."""
    if channels <= 1:
        return ChannelLayout(MONO)
    if channels > 2:
        return ChannelLayout(MULTICHANNEL)
    separation = channel_separation(channel_frame_levels(path))
    return ChannelLayout(SPLIT_STEREO if separation >= SPLIT_MIN_SEPARATION else MONO_IN_STEREO, round(separation, 4))


def channel_roles(agent_channel: str) -> dict[str, str]:
    """The channel map: channel name -> role; the agent's channel is configured, the other is the customer's."""
    if agent_channel not in CHANNEL_NAMES:
        raise ValueError(f"agent_channel must be one of {CHANNEL_NAMES}, got {agent_channel!r}")
    return {name: AGENT if name == agent_channel else CUSTOMER for name in CHANNEL_NAMES}


def channel_turns(speech_by_channel: Sequence[Sequence[Span]]) -> list[SpeakerTurn]:
    """Each channel's speech regions as turns of the speaker named after the channel, by start."""
    turns = [
        SpeakerTurn(start, end, name)
        for name, spans in zip(CHANNEL_NAMES, speech_by_channel, strict=True)
        for start, end in union_spans(list(spans))
    ]
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))


def frame_coherence(channels: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per 50 ms frame, |normalized correlation| of the two channels at lag 0: near 1 where one
    channel holds a copy of the other (echo, bleed), near 0 for two independent voices."""
    size = int(round(FRAME_S * sample_rate))
    whole = channels.shape[1] // size * size
    left, right = (channels[i, :whole].astype(np.float64).reshape(-1, size) for i in range(2))
    energy = np.sqrt(np.sum(left ** 2, axis=1) * np.sum(right ** 2, axis=1))
    return np.abs(np.sum(left * right, axis=1)) / np.maximum(energy, 1e-12)


def own_speech(speech_by_channel: Sequence[Sequence[Span]], channels: np.ndarray, sample_rate: int,
               min_speech_s: float = MIN_OWN_SPEECH_S) -> list[list[Span]]:
    """Each channel's VAD speech (of `channels`, shape (2, n)) minus its echo: the frames where the
    other channel leads it by `DOMINANCE_DB` *and* the two are coherent (`ECHO_COHERENCE`), i.e. it
    carries a copy of the other party (bleed), which VAD hears as speech too. A quiet voice under
    a loud one is not a copy, so both parties talking at once keep both channels and overlap stays
    measured. Pieces shorter than `min_speech_s` left by the cut are dropped, and so are pieces
    with less than `MIN_SPEAKING_S` of the channel's own speech in them. Coherence is taken at lag 0:
    the echo a recorder mixes in at once; an acoustic echo delayed by milliseconds is not cut."""
    relative = _relative(frame_levels(channels, sample_rate))
    copies = frame_coherence(channels, sample_rate) >= ECHO_COHERENCE
    own = []
    for index, spans in enumerate(speech_by_channel):
        dominated = (relative[1 - index] - relative[index] >= DOMINANCE_DB) & copies
        # Frames where this channel itself speaks: near its speech level and not drowned by the other.
        speaking = (relative[index] >= ACTIVE_DB) & ~dominated
        kept = []
        for start, end in spans:
            first, last = int(start / FRAME_S), min(int(np.ceil(end / FRAME_S)), dominated.size)
            cursor = start
            for frame in range(first, last):
                if dominated[frame]:
                    if frame * FRAME_S - cursor >= min_speech_s:
                        kept.append((cursor, frame * FRAME_S))
                    cursor = (frame + 1) * FRAME_S
            if end - cursor >= min_speech_s:
                kept.append((cursor, end))
        # A piece in which the channel never speaks is the hiss of the other party's pauses
        # between words, which VAD bridged while it heard their echo.
        own.append([(s, e) for s, e in kept
                    if speaking[int(s / FRAME_S):int(np.ceil(e / FRAME_S))].sum() * FRAME_S >= MIN_SPEAKING_S])
    return own


def words_in_speech(words: Sequence[Word], speech: Sequence[Span], slack_s: float = WORD_SPEECH_SLACK_S) -> list[Word]:
    """The words that overlap the channel's speech regions (widened by `slack_s`): Whisper run on a
    channel that is silent while the other party talks can read line noise as a word."""
    spans = union_spans([(start - slack_s, end + slack_s) for start, end in speech])
    return [w for w in words if any(min(w.end, e) > max(w.start, s) for s, e in spans)]
