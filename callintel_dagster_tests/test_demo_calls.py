"""Scripted demo calls: the audio matches its ground truth, and the scripts say what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
from callintel_dagster.engines.ingest import inventory_recording
from callintel_dagster.engines.redaction import redact_text
from callintel_dagster.engines.rules import assess_call_with_rules
from callintel_dagster.resources.blob_store import LocalBlobStore
from callintel_dagster.tools.demo_calls import (
    DEMO_DATES,
    TRUTH_SUFFIX,
    CallTruth,
    flag_scores,
    iter_truth,
    load_scripts,
    load_truth,
    write_demo_calls,
)

SCRIPTS = {script.name: script for script in load_scripts()}
SPOKEN = [name for name, script in SCRIPTS.items() if not script.body.get("corrupt")]
# The fast subset: the shortest call, the angry one (overlap, loud, PCM) and the corrupt upload.
QUICK = ("dead-air", "angry-caller", "corrupt-upload")
RULE_FLAGS = ("billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
              "missing_recording_disclosure", "issue_resolved", "escalation_requested",
              "overall_sentiment")


@pytest.fixture(scope="module")
def quick_blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_blobs")
    write_demo_calls(root, names=QUICK)
    return root


def _rules_flags(turns: list[dict]) -> dict:
    assessment = assess_call_with_rules(turns)
    return {name: assessment.overall_sentiment if name == "overall_sentiment" else assessment.flag(name)
            for name in RULE_FLAGS}


def _check_call(audio_path: Path, truth: dict) -> None:
    CallTruth.model_validate(truth)
    assert load_truth(audio_path) == truth
    assert truth["agent_id"] == audio_path.name.split("__")[0]
    assert truth["call_date"] == audio_path.parent.name
    if not truth["decodable"]:
        assert inventory_recording(audio_path, truth["blob_key"], 10**9, 3600)["status"] == "quarantined"
        return
    audio = decode_audio(audio_path)
    assert audio.size / SAMPLE_RATE == pytest.approx(truth["duration_s"], abs=0.01)
    for turn in truth["turns"]:
        speech = audio[int(turn["start_s"] * SAMPLE_RATE):int(turn["end_s"] * SAMPLE_RATE)]
        assert np.sqrt(np.mean(speech**2)) > 0.005, f"turn {turn['turn_index']} is silent in the audio"


@pytest.mark.parametrize("name", SPOKEN)
def test_rules_engine_on_ground_truth_turns_reproduces_the_expected_flags(name: str) -> None:
    expected = SCRIPTS[name].body["expected"]
    got = _rules_flags(SCRIPTS[name].transcript())
    assert {k: got[k] for k in RULE_FLAGS if expected[k] is not None} == \
        {k: expected[k] for k in RULE_FLAGS if expected[k] is not None}


@pytest.mark.parametrize("name", SPOKEN)
def test_every_spoken_phi_string_is_redacted(name: str) -> None:
    redacted = " ".join(redact_text(turn["text"])[0] for turn in SCRIPTS[name].transcript())
    phi = SCRIPTS[name].body["phi"]
    assert [p["text"] for p in phi if p["text"] in redacted] == []
    assert all(f"[{p['kind']}]" in redacted for p in phi)


def test_quick_calls_decode_and_match_their_truth(quick_blobs: Path) -> None:
    calls = dict(iter_truth(quick_blobs))
    assert sorted(truth["call_name"] for truth in calls.values()) == sorted(QUICK)
    for audio_path, truth in calls.items():
        _check_call(audio_path, truth)
    listed = LocalBlobStore(root=str(quick_blobs)).list_recordings()
    assert sorted(blob.key for blob in listed) == sorted(truth["blob_key"] for truth in calls.values())


def test_rerun_is_idempotent_and_a_script_change_regenerates(quick_blobs: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in quick_blobs.rglob("*") if p.is_file()}
    write_demo_calls(quick_blobs, names=QUICK)
    assert {p: p.stat().st_mtime_ns for p in quick_blobs.rglob("*") if p.is_file()} == before

    audio_path = next(p for p, truth in iter_truth(quick_blobs) if truth["call_name"] == "dead-air")
    sidecar = audio_path.with_suffix(TRUTH_SUFFIX)
    sidecar.write_text(re.sub(r'"script_sha256": "\w+"', '"script_sha256": "stale"', sidecar.read_text()))
    write_demo_calls(quick_blobs, names=QUICK)
    assert load_truth(audio_path)["script_sha256"] != "stale"
    assert audio_path.stat().st_mtime_ns > before[audio_path]


def test_angry_caller_is_louder_faster_and_interrupts(quick_blobs: Path) -> None:
    audio_path, truth = next((p, t) for p, t in iter_truth(quick_blobs) if t["call_name"] == "angry-caller")
    audio = decode_audio(audio_path)

    def stats(role: str) -> tuple[float, float]:
        turns = [t for t in truth["turns"] if t["role"] == role]
        speech = np.concatenate([audio[int(t["start_s"] * SAMPLE_RATE):int(t["end_s"] * SAMPLE_RATE)]
                                 for t in turns])
        words_per_s = sum(len(t["text"].split()) for t in turns) / sum(t["end_s"] - t["start_s"] for t in turns)
        return float(np.sqrt(np.mean(speech**2))), words_per_s

    (agent_rms, agent_rate), (caller_rms, caller_rate) = stats("agent"), stats("customer")
    assert caller_rms > 3 * agent_rms
    assert caller_rate > 1.2 * agent_rate
    turns = truth["turns"]
    assert any(b["start_s"] < a["end_s"] for a, b in zip(turns, turns[1:]))


def test_flag_scores_counts_per_flag() -> None:
    truth = {"a": {"expected": {"billing_detected": True, "escalation_requested": None}},
             "b": {"billing_detected": False, "escalation_requested": True},
             "c": {"billing_detected": True, "escalation_requested": False}}
    predicted = {"a": {"billing_detected": True, "escalation_requested": True},
                 "b": {"billing_detected": True, "escalation_requested": None}}
    scores = flag_scores(predicted, truth)
    assert scores["billing_detected"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                          "tp": 1, "fp": 1, "fn": 1, "tn": 0}
    assert scores["escalation_requested"]["recall"] == 0.0  # a None prediction is "not flagged"
    assert scores["escalation_requested"]["precision"] is None
    assert set(scores) == {"billing_detected", "escalation_requested"}


def test_rules_on_ground_truth_score_perfectly() -> None:
    predicted = {name: _rules_flags(SCRIPTS[name].transcript()) for name in SPOKEN}
    truth = {name: SCRIPTS[name].body["expected"] for name in SPOKEN}
    scores = flag_scores(predicted, truth)
    assert {flag: s["f1"] for flag, s in scores.items() if flag != "angry_caller" and s["support"]} == \
        {flag: 1.0 for flag, s in scores.items() if flag != "angry_caller" and s["support"]}


@pytest.mark.slow
def test_all_demo_calls(tmp_path: Path) -> None:
    paths = write_demo_calls(tmp_path)
    calls = dict(iter_truth(tmp_path))
    assert sorted(paths) == sorted(calls)
    for audio_path, truth in calls.items():
        _check_call(audio_path, truth)
    spoken = [t for t in calls.values() if t["decodable"]]
    assert {t["call_date"] for t in spoken} == set(DEMO_DATES)
    assert len({t["agent_id"] for t in spoken}) >= 3
    assert {t["encoding"] for t in spoken} == {"pcm_s16le", "pcm_mulaw"}
    for truth in spoken:
        speech_s = sum(turn["end_s"] - turn["start_s"] for turn in truth["turns"])
        if truth["call_name"] == "dead-air":
            assert speech_s < 0.5 * truth["duration_s"]
        else:
            assert 30 <= speech_s <= 75, (truth["call_name"], speech_s)
