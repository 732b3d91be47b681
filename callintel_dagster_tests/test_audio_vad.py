"""Decoding of many formats, and silero-vad on the real sample call against its RTTM reference."""

from __future__ import annotations

import subprocess
import tracemalloc
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import soundfile

from callintel_dagster.engines.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    decode_audio,
    decode_call_audio,
    gather_spans,
    probe_audio,
    sha256_of,
    stream_call_audio,
)
from callintel_dagster.engines.ingest import (
    agent_id_for,
    call_id_for,
    inventory_recording,
)
from callintel_dagster.engines.reference import sample_call_path
from callintel_dagster.engines.vad import (
    VadConfig,
    segment_table,
    speech_segments,
    speech_stats,
)


def _rttm_speech(path: Path) -> list[tuple[float, float]]:
    spans = []
    for line in path.read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        spans.append((start, start + duration))
    return spans


def _covered(reference: list[tuple[float, float]], hypothesis: list[tuple[float, float]], step: float = 0.01) -> float:
    grid = np.arange(0, max(e for _, e in reference), step)
    ref = np.zeros_like(grid, dtype=bool)
    hyp = np.zeros_like(grid, dtype=bool)
    for s, e in reference:
        ref |= (grid >= s) & (grid < e)
    for s, e in hypothesis:
        hyp |= (grid >= s) & (grid < e)
    return float((ref & hyp).sum() / ref.sum())


@pytest.fixture(scope="module")
def sample_audio() -> np.ndarray:
    return decode_audio(sample_call_path())


def test_sample_call_decodes_to_16k_mono(sample_audio):
    assert sample_audio.dtype == np.float32
    assert sample_audio.ndim == 1
    assert abs(sample_audio.size / SAMPLE_RATE - probe_audio(sample_call_path()).duration_s) < 0.05


def test_vad_covers_reference_speech_and_flags_leading_silence(sample_audio):
    segments = speech_segments(sample_audio)
    reference = _rttm_speech(sample_call_path().with_suffix(".rttm"))
    assert _covered(reference, segments) >= 0.90
    table = segment_table(segments, sample_audio.size / SAMPLE_RATE)
    silences = table[table["kind"] == "silence"]
    # The call opens with ~6.7 s of ringing/silence before "Hello?" (RTTM's first turn).
    assert silences.iloc[0]["start_s"] == 0.0 and silences.iloc[0]["end_s"] > 5.0
    assert bool(silences.iloc[0]["flagged"])
    stats = speech_stats(table, sample_audio.size / SAMPLE_RATE)
    assert 0.6 < stats["speech_ratio"] < 0.9
    assert stats["non_talk_s"] == pytest.approx(stats["duration_s"] - stats["speech_s"])


def test_segment_table_alternates_and_tiles_the_call():
    table = segment_table([(1.0, 2.0), (2.5, 4.0)], 5.0, VadConfig(min_flagged_silence_s=0.9))
    assert list(table["kind"]) == ["silence", "speech", "silence", "speech", "silence"]
    assert table["duration_s"].sum() == pytest.approx(5.0)
    assert list(table["flagged"]) == [True, False, False, False, True]


def test_silence_has_no_speech():
    assert speech_segments(np.zeros(SAMPLE_RATE * 3, dtype=np.float32)) == []


@pytest.mark.parametrize(
    "args",
    [
        ["-r", "44100", "-c", "2"],  # CD-quality stereo
        ["-r", "8000", "-c", "1", "-e", "u-law"],  # telephone µ-law
        ["-r", "48000", "-c", "2", "-b", "24"],
    ],
)
def test_common_formats_decode_to_the_same_speech(tmp_path, sample_audio, args):
    target = tmp_path / "converted.wav"
    subprocess.run(["sox", str(sample_call_path()), *args, str(target)], check=True)
    audio = decode_audio(target)
    assert abs(audio.size - sample_audio.size) < SAMPLE_RATE * 0.05
    assert len(speech_segments(audio)) >= 1


def test_flac_and_long_file_limit(tmp_path, sample_audio):
    target = tmp_path / "call.flac"
    soundfile.write(target, sample_audio, SAMPLE_RATE)
    assert decode_audio(target).size == sample_audio.size
    with pytest.raises(AudioDecodeError, match="longer than the configured maximum"):
        decode_audio(target, max_duration_s=5)


def test_inventory_quarantines_bad_files_with_reasons(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    for path, reason in [(empty, "empty"), (junk, "not decodable")]:
        row = inventory_recording(path, f"2026-11-24/{path.name}", max_bytes=10**9, max_duration_s=3600)
        assert row["status"] == "quarantined" and reason in row["error"] and path.name in row["error"]
    ok = inventory_recording(sample_call_path(), "2026-11-24/x__s.wav", max_bytes=10**9, max_duration_s=3600)
    assert ok["status"] == "ok" and ok["sample_rate"] == 16000 and ok["channels"] == 1
    too_long = inventory_recording(sample_call_path(), "2026-11-24/x__s.wav", max_bytes=10**9, max_duration_s=10)
    assert too_long["status"] == "quarantined" and "exceeds" in too_long["error"]


def test_call_id_is_stable_and_agent_comes_from_the_name():
    assert call_id_for("2026-11-24/a__b.wav") == call_id_for("2026-11-24/a__b.wav")
    assert call_id_for("2026-11-24/a__b.wav") != call_id_for("2026-11-25/a__b.wav")
    assert agent_id_for("2026-11-24/agent-7__call.wav") == "agent-7"
    assert agent_id_for("2026-11-24/call.wav") is None


# --- decode memory, limits and sample hygiene (issue 17, item 8) ---------------------------------


def _write_tone(path: Path, seconds: float, rate: int = SAMPLE_RATE) -> Path:
    """A 16-bit PCM WAV of a quiet 440 Hz tone, written a minute at a time."""
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        minute = (0.1 * np.sin(2 * np.pi * 440 * np.arange(60 * rate) / rate)).astype(np.float32)
        for start in range(0, int(seconds * rate), 60 * rate):
            out.write(minute[: int(seconds * rate) - start])
    return path


def test_decode_peak_memory_is_about_the_decoded_size(tmp_path):
    """Ten minutes decode into one preallocated buffer: the traced peak stays near the result's own
    size (frames collected in a list and then concatenated peak at twice that)."""
    path = _write_tone(tmp_path / "long.wav", 600)
    tracemalloc.start()
    try:
        audio = decode_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert audio.dtype == np.float32 and audio.size == 600 * SAMPLE_RATE
    assert audio.nbytes <= peak < 1.15 * audio.nbytes, f"peak {peak / 1e6:.0f} MB for {audio.nbytes / 1e6:.0f} MB of audio"


@pytest.mark.parametrize("fmt", ["ulaw.wav", "pcm16.wav", "call.flac", "call.mp3"])
def test_a_window_decodes_to_the_same_samples_as_that_slice_of_the_whole(tmp_path, fmt):
    """A chunk of a long call decodes only its window: sample for sample the slice of the whole
    decode, for codecs that seek (PCM, FLAC) and for those that decode from the start (MP3)."""
    rate = 8000
    t = np.arange(40 * rate) / rate
    signal = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 80))
              + 0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    wav = tmp_path / "source.wav"
    soundfile.write(wav, signal, rate, subtype="PCM_16")
    path = tmp_path / fmt
    if fmt == "call.mp3":
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(path)], check=True)
    else:
        soundfile.write(path, signal, rate, subtype="ULAW" if fmt == "ulaw.wav" else None)
    whole = decode_audio(path)
    for start, end in [(0.0, 5.0), (7.3, 19.9), (30.0, 40.0), (12.0, None)]:
        window = decode_audio(path, start_s=start, end_s=end)
        expected = whole[round(start * SAMPLE_RATE): None if end is None else round(end * SAMPLE_RATE)]
        assert window.size == expected.size
        np.testing.assert_allclose(window, expected, atol=1e-6)


def test_a_window_of_a_long_file_holds_only_its_own_samples(tmp_path):
    path = _write_tone(tmp_path / "long.wav", 600)
    tracemalloc.start()
    try:
        window = decode_audio(path, start_s=400.0, end_s=430.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.size == 30 * SAMPLE_RATE
    assert peak < 2 * window.nbytes, f"peak {peak / 1e6:.1f} MB for a {window.nbytes / 1e6:.1f} MB window"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_rejected_naming_the_file(tmp_path, bad):
    samples = np.full(SAMPLE_RATE, 0.1, dtype=np.float32)
    samples[SAMPLE_RATE // 2] = bad
    path = tmp_path / "float-with-nan.wav"
    soundfile.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"float-with-nan\.wav: non-finite samples \(NaN or Inf\) at 0\.\d+ s"):
        decode_audio(path)


def test_size_limit_is_checked_before_decoding(tmp_path):
    path = _write_tone(tmp_path / "big.wav", 2)
    with pytest.raises(AudioDecodeError, match=r"big\.wav: \d+ bytes exceeds the 1000-byte limit"):
        decode_audio(path, max_bytes=1000)


def _call_row(path: Path, duration_s: float) -> dict[str, str]:
    """A model-stage call row as Spark hands it to a task: every value a string."""
    return {
        "audio_url": f"file://{path}", "size_bytes": str(path.stat().st_size),
        "checksum_sha256": sha256_of(path), "duration_s": str(duration_s),
    }


def test_model_stage_decode_keeps_the_duration_limit_and_checks_the_file(tmp_path):
    path = _write_tone(tmp_path / "call.wav", 10)
    assert decode_call_audio(_call_row(path, 10.0)).size == 10 * SAMPLE_RATE

    # The VAD stage measured 4 s (under max_duration_s): a model stage never decodes more than that.
    with pytest.raises(AudioDecodeError, match=r"call\.wav: longer than the configured maximum of 5 s"):
        decode_call_audio(_call_row(path, 4.0))

    # Replaced after ingest (same key, other content): refused instead of scored as the old call.
    row = _call_row(path, 10.0)
    _write_tone(path, 12)
    with pytest.raises(AudioDecodeError, match=r"call\.wav: changed since ingest"):
        decode_call_audio(row)


@pytest.mark.parametrize("fmt", ["ulaw.wav", "call.mp3"])
def test_streamed_blocks_are_the_whole_decode_cut_up_and_hold_one_block(tmp_path, fmt):
    """A long call's pass one block at a time (the stitching task's): the blocks joined are the
    whole decode, sample for sample, and the traced peak stays near one block, not the call."""
    source = _write_tone(tmp_path / "source.wav", 130, rate=8000)
    path = tmp_path / fmt
    if fmt == "call.mp3":
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), str(path)], check=True)
    else:
        soundfile.write(path, soundfile.read(source, dtype="float32")[0], 8000, subtype="ULAW")
    whole = decode_audio(path)
    row = _call_row(path, whole.size / SAMPLE_RATE)
    tracemalloc.start()
    try:
        sizes, joined = [], []
        for block in stream_call_audio(row, block_s=20.0):
            sizes.append(block.size)
            joined.append(block[:: SAMPLE_RATE].copy())  # a sample per second: compared without holding the call
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes[:-1] == [20 * SAMPLE_RATE] * (len(sizes) - 1) and sum(sizes) == whole.size
    np.testing.assert_array_equal(np.concatenate(joined), np.concatenate(
        [whole[first:first + 20 * SAMPLE_RATE][:: SAMPLE_RATE] for first in range(0, whole.size, 20 * SAMPLE_RATE)]))
    assert peak < 0.5 * whole.nbytes, f"peak {peak / 1e6:.1f} MB for {whole.nbytes / 1e6:.1f} MB of audio"

    spans = {"agent": [(1.0, 2.5), (19.5, 21.0)], "caller": [(129.0, 131.0)]}
    gathered, total = gather_spans(stream_call_audio(row, block_s=20.0), spans)
    assert total == whole.size
    np.testing.assert_array_equal(gathered["agent"][1], whole[round(19.5 * SAMPLE_RATE):21 * SAMPLE_RATE])  # across a block edge
    np.testing.assert_array_equal(gathered["caller"][0], whole[129 * SAMPLE_RATE:])  # clipped to the call


def test_a_streamed_decode_keeps_the_model_stage_checks(tmp_path):
    path = _write_tone(tmp_path / "call.wav", 10)
    with pytest.raises(AudioDecodeError, match=r"call\.wav: longer than the configured maximum of 5 s"):
        list(stream_call_audio(_call_row(path, 4.0), block_s=1.0))
    samples = np.full(3 * SAMPLE_RATE, 0.1, dtype=np.float32)
    samples[int(2.5 * SAMPLE_RATE)] = np.nan
    bad = tmp_path / "nan-late.wav"
    soundfile.write(bad, samples, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"nan-late\.wav: non-finite samples \(NaN or Inf\) at 2\.5\d* s"):
        list(stream_call_audio(_call_row(bad, 3.0), block_s=1.0))


def test_model_stage_decode_opens_a_blob_url_through_a_bounded_temp_copy(tmp_path):
    """A non-local URL (fsspec's in-memory store here; Azurite in test_azurite.py) is copied to a temp
    file no larger than the inventoried size, then checked and decoded like a local file."""
    path = _write_tone(tmp_path / "call.wav", 3)
    url = f"memory://callintel-{uuid.uuid4().hex}/2026-11-24/call.wav"
    store = fsspec.filesystem("memory")
    store.pipe_file(url, path.read_bytes())
    row = {**_call_row(path, 3.0), "audio_url": url}
    np.testing.assert_array_equal(decode_call_audio(row), decode_audio(path))

    store.pipe_file(url, path.read_bytes() + bytes(4 << 20))  # replaced by a much larger blob
    with pytest.raises(AudioDecodeError, match=r"call\.wav: changed since ingest \(more than the \d+ bytes inventoried\)"):
        decode_call_audio(row)
    store.rm(url)
