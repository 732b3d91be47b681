"""More than two speakers and agent voice enrollment.

Fast tests use hand-built embeddings, turns and table rows (no models). `slow` tests synthesize calls
with the demo generator (espeak-ng / flite voices, exact ground truth), run the real diarizer and
speaker encoder, and materialize the transcript stage over two dates.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from callintel_dagster.assets.maintenance import forget_agent, forget_call
from callintel_dagster.engines import align, diarize, voiceprints
from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.characteristics import call_characteristics
from callintel_dagster.engines.diarize import SpeakerTurn
from callintel_dagster.engines.fusion import fuse_calls
from callintel_dagster.engines.ingest import call_id_for
from callintel_dagster.engines.voiceprints import EnrollmentConfig
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.tables import AGENT_VOICE_SAMPLES, AGENT_VOICEPRINTS
from callintel_dagster.tools import voice_eval

DIM = 256


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def _voices(n: int, seed: int) -> np.ndarray:
    """`n` random voice directions (random unit vectors in 256-d are nearly orthogonal)."""
    return _unit(np.random.default_rng(seed).normal(size=(n, DIM)))


def _segments(voice: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    return _unit(voice + noise * rng.normal(size=(n, DIM)) / np.sqrt(DIM))


# --------------------------------------------------------------------------- speaker count


@pytest.mark.parametrize("n_voices", [2, 3, 4])
def test_speaker_count_is_the_number_of_separate_voices(n_voices):
    rng = np.random.default_rng(n_voices)
    seeds = np.concatenate([_segments(v, 6, 0.3, rng) for v in _voices(n_voices, seed=10 + n_voices)])
    durations = np.full(len(seeds), 4.0)
    config = diarize.DiarizationConfig(num_speakers=None, max_speakers=5)
    assert diarize.estimate_speaker_count(seeds, durations, config) == n_voices


def test_speaker_count_knobs_bound_the_estimate():
    rng = np.random.default_rng(1)
    seeds = np.concatenate([_segments(v, 6, 0.3, rng) for v in _voices(4, seed=2)])
    durations = np.full(len(seeds), 4.0)
    assert diarize.estimate_speaker_count(seeds, durations, diarize.DiarizationConfig(num_speakers=None, max_speakers=3)) == 3
    one_voice = _segments(_voices(1, seed=3)[0], 12, 0.3, rng)
    lone = diarize.DiarizationConfig(num_speakers=None, min_speakers=1)
    assert diarize.estimate_speaker_count(one_voice, np.full(12, 4.0), lone) == 1
    assert diarize.estimate_speaker_count(one_voice, np.full(12, 4.0), diarize.DiarizationConfig(num_speakers=None)) == 2


def test_a_voice_heard_too_briefly_is_not_a_speaker():
    rng = np.random.default_rng(4)
    agent, customer, blip = _voices(3, seed=5)
    seeds = np.concatenate([_segments(agent, 6, 0.3, rng), _segments(customer, 6, 0.3, rng), _segments(blip, 1, 0.3, rng)])
    durations = np.array([4.0] * 12 + [2.5])  # one window's worth of the third voice
    assert diarize.estimate_speaker_count(seeds, durations, diarize.DiarizationConfig(num_speakers=None)) == 2


# --------------------------------------------------------------------------- roles and metrics


def _words(spec: list[tuple[float, float, str]]) -> list[Word]:
    return [Word(start, end, text, 0.9) for start, end, text in spec]


TRANSFER_TURNS = [
    SpeakerTurn(0.0, 3.0, "SPEAKER_00"), SpeakerTurn(3.5, 6.0, "SPEAKER_01"), SpeakerTurn(6.5, 9.0, "SPEAKER_00"),
    SpeakerTurn(10.0, 14.0, "SPEAKER_02"), SpeakerTurn(13.5, 16.0, "SPEAKER_01"), SpeakerTurn(16.5, 19.0, "SPEAKER_02"),
]
TRANSFER_WORDS = _words([
    (0.2, 2.8, "hello"), (3.6, 5.9, "hi"), (6.6, 8.9, "transferring"), (10.2, 13.0, "supervisor"),
    (13.6, 15.8, "thanks"), (16.6, 18.9, "done"),
])


def test_a_speaker_who_joins_later_is_another_agent():
    turns = align.build_turns(TRANSFER_WORDS, TRANSFER_TURNS)
    assert dict(zip(turns["speaker"], turns["role"])) == {
        "SPEAKER_00": "agent", "SPEAKER_01": "customer", "SPEAKER_02": "other_agent",
    }


def test_a_voiceprint_match_overrides_the_first_speaker_rule():
    roles = align.assign_roles({"S0": ["hello?"], "S1": ["yes", "go", "ahead"]}, first_speaker="S0")
    assert roles == {"S0": "agent", "S1": "customer"}
    roles = align.assign_roles({"S0": ["hello?"], "S1": ["yes", "go", "ahead"]}, first_speaker="S0", agent_speaker="S1")
    assert roles == {"S0": "customer", "S1": "agent"}


def test_talk_time_per_role_adds_up_with_three_roles():
    turns = align.build_turns(TRANSFER_WORDS, TRANSFER_TURNS)
    metrics = align.conversation_metrics(turns, TRANSFER_TURNS, call_duration_s=20.0)
    assert metrics["talk_time_agent_s"] == pytest.approx(5.5)
    assert metrics["talk_time_customer_s"] == pytest.approx(5.0)
    assert metrics["talk_time_other_agent_s"] == pytest.approx(6.5)
    assert metrics["overlap_s"] == pytest.approx(0.5)
    total = (metrics["talk_time_agent_s"] + metrics["talk_time_customer_s"] + metrics["talk_time_other_agent_s"]
             - metrics["overlap_s"] + metrics["non_talk_time_s"])
    assert total == pytest.approx(20.0)


def test_characteristics_add_an_other_agent_row_only_when_the_call_has_one():
    turns = align.build_turns(TRANSFER_WORDS, TRANSFER_TURNS).assign(phi_kinds="[]")
    audio = np.zeros(20 * 16_000, dtype=np.float32)
    rows = call_characteristics(audio, turns, None, 20.0)
    assert [r["role"] for r in rows] == ["agent", "customer", "other_agent"]
    assert rows[2]["talk_time_s"] == pytest.approx(5.1)  # word spans of the supervisor's two turns: 2.8 + 2.3 s
    two_party = turns[turns["role"] != "other_agent"]
    assert [r["role"] for r in call_characteristics(audio, two_party, None, 20.0)] == ["agent", "customer"]


# --------------------------------------------------------------------------- enrollment (no models)


def _cid(agent: str, day: dt.date, index: int) -> str:
    return call_id_for(f"{day}/{agent}__call-{index}.wav")


def _sample_rows(vectors: dict[str, list[np.ndarray]], day: dt.date, **overrides) -> list[dict]:
    return [
        {"call_id": _cid(agent, day, i), "call_date": day, "agent_id": agent, "speaker": "SPEAKER_00",
         "speech_s": 10.0, "embedding_json": json.dumps(v.tolist()), "role_source": "heuristic",
         "voiceprint_calls": 0, "voice_match": None, "voice_mismatch": None,
         "model_id": voiceprints.VOICEPRINT_MODEL, **overrides}
        for agent, vs in vectors.items() for i, v in enumerate(vs)
    ]


def test_voiceprints_come_from_earlier_days_and_drop_an_outlier():
    rng = np.random.default_rng(7)
    ana, bo, caller = _voices(3, seed=8)
    day1, day2, day3 = dt.date(2026, 12, 1), dt.date(2026, 12, 2), dt.date(2026, 12, 3)
    samples = pd.DataFrame(
        _sample_rows({"agent-ana": list(_segments(ana, 2, 0.2, rng)) + [caller]}, day1)  # one caller taken for Ana
        + _sample_rows({"agent-bo": [_segments(bo, 1, 0.2, rng)[0]]}, day1)  # one call: not enough
        + _sample_rows({"agent-bo": [_segments(bo, 1, 0.2, rng)[0]]}, day3)  # the day itself never counts
    )
    config = EnrollmentConfig()
    assert voiceprints.build_voiceprints(samples, day1, config) == []
    (row,) = voiceprints.build_voiceprints(samples, day3, config)
    assert row["agent_id"] == "agent-ana" and row["n_calls"] == 2 and row["n_rejected"] == 1
    assert json.loads(row["call_ids_json"]) == sorted([_cid("agent-ana", day1, 0), _cid("agent-ana", day1, 1)])
    assert row["first_call_date"] == row["last_call_date"] == day1 and row["speech_s"] == 20.0
    assert float(voiceprints.voiceprint_from_json(row["embedding_json"]) @ ana) > 0.95
    assert voiceprints.build_voiceprints(samples, day2 + dt.timedelta(days=voiceprints.ENROLLMENT_LOOKBACK_DAYS + 1), config) == []


def test_mismatched_short_or_other_encoder_samples_never_enrol():
    rng = np.random.default_rng(9)
    day = dt.date(2026, 12, 1)
    vectors = {"agent-ana": list(_segments(_voices(1, seed=10)[0], 2, 0.2, rng))}
    config = EnrollmentConfig()
    for overrides in ({"voice_mismatch": True}, {"speech_s": 1.0}, {"model_id": "another-encoder"}):
        assert voiceprints.build_voiceprints(pd.DataFrame(_sample_rows(vectors, day, **overrides)), day + dt.timedelta(days=1), config) == []


def test_match_picks_the_agent_or_flags_a_stranger():
    rng = np.random.default_rng(11)
    ana, caller, stranger = _voices(3, seed=12)
    config = EnrollmentConfig()
    speakers = {"S0": (_segments(caller, 1, 0.2, rng)[0], 8.0), "S1": (_segments(ana, 1, 0.2, rng)[0], 9.0)}
    match = voiceprints.match_agent(speakers, ana, config)
    assert match.agent_speaker == "S1" and not match.mismatch and match.similarities["S1"] > 0.95
    impostor = {"S0": (_segments(stranger, 1, 0.2, rng)[0], 9.0), "S1": speakers["S0"]}
    match = voiceprints.match_agent(impostor, ana, config)
    assert match.agent_speaker is None and match.mismatch


def test_solo_speech_leaves_out_overlap():
    solo = voiceprints.solo_speech([SpeakerTurn(0.0, 4.0, "A"), SpeakerTurn(3.0, 6.0, "B"), SpeakerTurn(5.5, 8.0, "A")])
    assert solo == {"A": [(0.0, 3.0), (6.0, 8.0)], "B": [(4.0, 5.5)]}


def test_an_embedding_of_a_long_call_hears_a_bounded_sample_from_all_of_it():
    """A 2-hour call's speaker embeds at most EMBEDDING_MAX_SPEECH_S of speech, taken across the
    call (an agent handing over after an hour is still heard); a normal call's spans are all used."""
    short = [(0.0, 30.0), (40.0, 90.0)]
    assert voiceprints.spread_sample(short, 600.0) is short
    long = [(i * 10.0, i * 10.0 + 8.0) for i in range(720)]  # 8 s of every 10 s for two hours
    sample = voiceprints.spread_sample(long, 600.0)
    assert sum(end - start for start, end in sample) == pytest.approx(600.0)
    assert sample[0] == long[0] and sample[-1][0] > 5000.0, "reaches the second hour"
    assert all(any(s >= a and e <= b for a, b in long) for s, e in sample), "only speech the speaker spoke"


def test_a_voice_mismatch_raises_the_qa_priority():
    raw = pd.DataFrame([{"call_id": c, "call_date": dt.date(2026, 12, 1), "agent_id": "agent-ana", "duration_s": 30.0,
                         "status": "ok"} for c in ("call-ok-0000001", "call-bad-000001")])
    activity = pd.DataFrame([{"call_id": c, "duration_s": 30.0, "speech_ratio": 0.8, "non_talk_s": 6.0,
                              "longest_silence_s": 1.0} for c in raw["call_id"]])
    samples = pd.DataFrame([{"call_id": "call-ok-0000001", "voice_match": 0.97, "voice_mismatch": False},
                            {"call_id": "call-bad-000001", "voice_match": 0.61, "voice_mismatch": True}])
    empty = pd.DataFrame()
    fused = fuse_calls(raw, activity, empty, empty, empty, empty, empty, samples).set_index("call_id")
    reasons = json.loads(fused.loc["call-bad-000001", "qa_reasons"])
    assert "agent voice does not match the voiceprint on file (match 0.61): +15" in reasons
    assert fused.loc["call-bad-000001", "qa_priority"] == fused.loc["call-ok-0000001", "qa_priority"] + 15
    assert bool(fused.loc["call-bad-000001", "agent_voice_mismatch"]) is True


# --------------------------------------------------------------------------- erasure


def _stored_voice_tables(lakehouse) -> None:
    """Two agents' samples (two calls each, 1 Dec) and the voiceprints built from them (2 Dec)."""
    day = dt.date(2026, 12, 2)
    rng = np.random.default_rng(13)
    ana, bo = _voices(2, seed=14)
    samples = pd.DataFrame(
        _sample_rows({"agent-ana": list(_segments(ana, 2, 0.2, rng)), "agent-bo": list(_segments(bo, 2, 0.2, rng))},
                     dt.date(2026, 12, 1))
    ).assign(run_id="r")
    assert lakehouse.write_validated(AGENT_VOICE_SAMPLES, samples, [dt.date(2026, 12, 1)]).written
    prints = pd.DataFrame(voiceprints.build_voiceprints(samples, day, EnrollmentConfig())).assign(call_date=day, run_id="r")
    assert lakehouse.write_validated(AGENT_VOICEPRINTS, prints, [day]).written


def _files_mentioning(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*.parquet") if needle in str(pq.read_table(p).to_pylist())]


def test_forget_call_removes_the_voiceprints_built_from_it(lakehouse, resources, tmp_path):
    _stored_voice_tables(lakehouse)
    erased = _cid("agent-ana", dt.date(2026, 12, 1), 0)
    resources = {**resources, "models": ModelSettings(), "reports": ReportSettings(root=str(tmp_path / "dashboards"))}
    config = {"ops": {"forget_call_data": {"config": {"call_id": erased}}}}
    result = forget_call.execute_in_process(run_config=config, resources=resources)
    assert result.output_for_node("forget_call_data")["rows_deleted"] == {"agent_voice_samples": 1, "agent_voiceprints": 1}
    assert list(lakehouse.read(AGENT_VOICEPRINTS)["agent_id"]) == ["agent-bo"]  # Bo's voiceprint never used it
    assert len(lakehouse.read(AGENT_VOICE_SAMPLES)) == 3
    assert _files_mentioning(Path(lakehouse.root), erased) == []


def test_forget_agent_erases_voiceprints_and_samples_with_their_history(lakehouse):
    _stored_voice_tables(lakehouse)
    config = {"ops": {"forget_agent_voice": {"config": {"agent_id": "agent-ana"}}}}
    result = forget_agent.execute_in_process(run_config=config, resources={"lakehouse": lakehouse})
    assert result.output_for_node("forget_agent_voice")["rows_deleted"] == {"agent_voice_samples": 2, "agent_voiceprints": 1}
    assert set(lakehouse.read(AGENT_VOICE_SAMPLES)["agent_id"]) == {"agent-bo"}
    assert list(lakehouse.read(AGENT_VOICEPRINTS)["agent_id"]) == ["agent-bo"]
    assert _files_mentioning(Path(lakehouse.root), "agent-ana") == []
    assert _files_mentioning(Path(lakehouse.root), "agent-bo") != []  # the scan sees what is still there
    again = forget_agent.execute_in_process(run_config=config, resources={"lakehouse": lakehouse}, raise_on_error=False)
    assert not again.success  # nothing left of the agent: an unknown id fails rather than reporting success


# --------------------------------------------------------------------------- real audio (slow)


def _diarized(path: Path) -> tuple[np.ndarray, list[SpeakerTurn]]:
    from callintel_dagster.engines.audio import decode_audio

    audio = decode_audio(path)
    return audio, diarize.diarize(audio, ModelSettings(num_speakers=None).diarization_config())


@pytest.mark.slow
def test_speaker_count_on_generated_three_voice_calls(tmp_path):
    scripts = [s for s in voice_eval.count_scripts("test") if s.name.endswith("3v")][:3]
    scripts += [s for s in voice_eval.count_scripts("test") if s.name.endswith("2v")][:1]
    voice_eval.write_demo_calls(tmp_path, [voice_eval.COUNT_DATE], scripts=scripts)
    for script in scripts:
        path = script.audio_path(tmp_path, [voice_eval.COUNT_DATE])
        voices = len({t["speaker"] for t in voice_eval.load_truth(path)["turns"]})
        _, turns = _diarized(path)
        assert len({t.speaker for t in turns}) == voices, script.name


def _agent_overlap(turns: list[SpeakerTurn], speaker: str, truth: dict) -> float:
    """Share of `speaker`'s diarized time that lies in the scripted agent turns."""
    mine = [(t.start, t.end) for t in turns if t.speaker == speaker]
    agent = [(t["start_s"], t["end_s"]) for t in truth["turns"] if t["role"] == "agent"]
    inside = sum(max(0.0, min(e, te) - max(s, ts)) for s, e in mine for ts, te in agent)
    return inside / sum(e - s for s, e in mine)


@pytest.mark.slow
def test_enrolled_voiceprints_find_the_agent_on_later_calls(tmp_path):
    """Three TTS voices as agents, two enrolment calls each on earlier dates, their later calls (the
    caller often speaks first) and a call where another voice takes Ana's side."""
    scripts = [s for s in voice_eval.enrolment_scripts() if s.body["day"] < 3]
    voice_eval.write_demo_calls(tmp_path, voice_eval.ENROLMENT_DATES, scripts=scripts + [
        s for s in voice_eval.enrolment_scripts() if s.name == voice_eval.IMPOSTOR_CALL])
    config = EnrollmentConfig()
    rows = []
    for script in (s for s in scripts if s.body["day"] < 2):
        path = script.audio_path(tmp_path, voice_eval.ENROLMENT_DATES)
        truth = voice_eval.load_truth(path)
        audio, turns = _diarized(path)
        embeddings = voiceprints.speaker_embeddings(audio, turns, config)
        agent = max(embeddings, key=lambda speaker: _agent_overlap(turns, speaker, truth))  # the truth's agent
        rows += _sample_rows({script.agent_id: [embeddings[agent][0]]}, dt.date.fromisoformat(truth["call_date"]))
    enrolled = {row["agent_id"]: row for row in voiceprints.build_voiceprints(
        pd.DataFrame(rows), dt.date.fromisoformat(voice_eval.ENROLMENT_DATES[2]), config)}
    assert set(enrolled) == set(voice_eval.ENROLLED_AGENTS) and all(r["n_calls"] == 2 for r in enrolled.values())

    later = [s for s in scripts if s.body["day"] == 2][::2] + [
        s for s in voice_eval.enrolment_scripts() if s.name == voice_eval.IMPOSTOR_CALL]
    for script in later:
        path = script.audio_path(tmp_path, voice_eval.ENROLMENT_DATES)
        truth = voice_eval.load_truth(path)
        audio, turns = _diarized(path)
        voiceprint = voiceprints.voiceprint_from_json(enrolled[script.agent_id]["embedding_json"])
        match = voiceprints.match_agent(voiceprints.speaker_embeddings(audio, turns, config), voiceprint, config)
        if script.name == voice_eval.IMPOSTOR_CALL:
            assert match.mismatch and match.agent_speaker is None
        else:
            assert not match.mismatch and _agent_overlap(turns, match.agent_speaker, truth) > 0.9, script.name


@pytest.mark.slow
def test_materialize_two_dates_enrols_on_the_first_and_lists_a_mismatch_on_the_second(resources, blob_root):
    from callintel_dagster.assets.ingest import raw_call_audio
    from callintel_dagster.assets.segments import valid_segments
    from callintel_dagster.assets.transcripts import transcripts
    from callintel_dagster_tests.conftest import InlineCompute

    agent = "agent-bo"
    chosen = [s for s in voice_eval.enrolment_scripts() if s.agent_id == agent and s.body["day"] < 2]
    later = next(s for s in voice_eval.enrolment_scripts() if s.agent_id == agent and s.body["day"] == 2
                 and "customer" in s.body["turns"][0])  # the caller speaks first: the first-speaker rule is wrong
    impostor = voice_eval.DemoScript(f"{agent}-impostor", {
        **next(s for s in voice_eval.enrolment_scripts() if s.name == voice_eval.IMPOSTOR_CALL).body, "agent_id": agent})
    days = ["2026-11-23", "2026-11-24"]
    later, impostor = (voice_eval.DemoScript(s.name, {**s.body, "day": 1}) for s in (later, impostor))
    voice_eval.write_demo_calls(blob_root, days, scripts=[
        voice_eval.DemoScript(s.name, {**s.body, "day": 0}) for s in chosen] + [later, impostor])
    resources = {**resources, "compute": InlineCompute(), "models": ModelSettings(num_speakers=None, audio_redaction=None)}
    for day in days:
        assert dg.materialize([raw_call_audio, valid_segments, transcripts], partition_key=day, resources=resources).success
    lakehouse = resources["lakehouse"]

    prints = lakehouse.read(AGENT_VOICEPRINTS)
    assert list(prints["call_date"]) == [dt.date(2026, 11, 24)] and list(prints["agent_id"]) == [agent]
    assert prints["n_calls"].iloc[0] == 2
    samples = lakehouse.read(AGENT_VOICE_SAMPLES).set_index("call_id")
    first_day = samples[samples["call_date"] == dt.date(2026, 11, 23)]
    assert set(json.loads(prints["call_ids_json"].iloc[0])) == set(first_day.index)
    assert (first_day["role_source"] == "heuristic").all() and first_day["voice_match"].isna().all()

    later_id = voice_eval.load_truth(later.audio_path(blob_root, days))["call_id"]
    impostor_id = voice_eval.load_truth(impostor.audio_path(blob_root, days))["call_id"]
    assert samples.loc[later_id, "role_source"] == "voiceprint" and samples.loc[later_id, "voice_mismatch"] == False  # noqa: E712
    assert samples.loc[impostor_id, "voice_mismatch"] == True  # noqa: E712
    transcript = lakehouse.read("transcripts")
    later_turns = transcript[transcript["call_id"] == later_id].sort_values("turn_index")
    assert later_turns["role"].iloc[0] == "customer"  # the caller's "hello?" is not the agent's
    assert later_turns.loc[later_turns["role"] == "agent", "voice_match"].gt(0.9).all()
    assert later_turns.loc[later_turns["role"] != "agent", "voice_match"].isna().all()


def test_voice_evaluation_calls_split_by_seed_and_cover_the_targets():
    dev, test = voice_eval.count_scripts("dev"), voice_eval.count_scripts("test")
    assert not {s.name for s in dev} & {s.name for s in test}
    three = [s for s in test if s.name.endswith("3v")]
    assert len(three) >= 10 and all("other_agent" in s.body for s in three)
    assert all(s.body["other_agent"]["voice"] != voice_eval.AGENT_VOICES[s.agent_id] for s in three)
    enrolment = voice_eval.enrolment_scripts()
    later = [s for s in enrolment if s.body["day"] >= 2 and s.name != voice_eval.IMPOSTOR_CALL]
    assert {s.agent_id for s in later} == set(voice_eval.ENROLLED_AGENTS)
    assert all(sum(s.agent_id == a for s in later) >= 3 for a in voice_eval.ENROLLED_AGENTS)
    assert any("customer" in s.body["turns"][0] for s in later)  # calls the first-speaker rule gets wrong
    impostor = next(s for s in enrolment if s.name == voice_eval.IMPOSTOR_CALL)
    assert impostor.body["agent_voice"] != voice_eval.AGENT_VOICES[impostor.agent_id]
    # The enrolment calls roles are tuned on: other calls (own seed, own names) of the same agents.
    dev_enrolment = voice_eval.enrolment_scripts("dev")
    assert not {s.name for s in dev_enrolment} & {s.name for s in enrolment}
    assert [s.body["turns"] for s in dev_enrolment[:len(enrolment)]] != [s.body["turns"] for s in enrolment]
    dev_later = [s for s in dev_enrolment if s.body["day"] >= 2 and not s.body.get("impostor")]
    assert len(dev_later) > len(later) and sum(bool(s.body.get("impostor")) for s in dev_enrolment) == 1


@pytest.mark.slow
def test_bench_enrolment_evaluation_runs_on_its_own_call_rows(tmp_path):
    # make bench section 3d: the transcript task on the rows the evaluation builds (no masked-copy
    # URL among them), enrolment on the first two dates, the voiceprint used on the third.
    from callintel_dagster.resources.models import ModelSettings

    mine = [s for s in voice_eval.enrolment_scripts() if s.agent_id == "agent-bo"]
    scripts = [next(s for s in mine if s.body["day"] == day) for day in (0, 1, 2)]
    result = voice_eval.enrolment_evaluation(tmp_path, ModelSettings(num_speakers=None).transcript_task(), scripts)
    assert result["scored_calls"] == 1 and result["roles_from_voiceprint"] == 1
    assert result["role_accuracy_voiceprint"] >= 0.9 and result["impostor_caught"] is None


def test_relabel_words_keeps_the_labels_when_it_cannot_judge():
    words = [Word(0.0, 0.4, "hello", 0.9), Word(0.5, 0.9, "there", 0.9)]
    labels = ["SPEAKER_00", "SPEAKER_01"]
    audio = np.zeros(16_000, dtype=np.float32)
    two = {"SPEAKER_00": _voices(1, 1)[0], "SPEAKER_01": _voices(1, 2)[0]}
    assert voiceprints.relabel_words(audio, words, labels, two, EnrollmentConfig(relabel_margin=None)) == labels
    assert voiceprints.relabel_words(audio, words, labels, {"SPEAKER_00": two["SPEAKER_00"]}, EnrollmentConfig()) == labels
    assert voiceprints.relabel_words(audio, words, labels, two, EnrollmentConfig(relabel_max_call_s=0.5)) == labels
    # A speaker too brief to have an embedding keeps its words, whatever they sound like.
    noise = np.random.default_rng(3).normal(scale=0.05, size=32_000).astype(np.float32)
    third = [Word(1.0, 1.4, "okay", 0.9)]
    assert voiceprints.relabel_words(noise, third, ["SPEAKER_02"], two, EnrollmentConfig(relabel_margin=-1.0)) == ["SPEAKER_02"]


@pytest.mark.slow
def test_relabel_words_gives_an_agent_reply_the_diarizer_lost_back_to_the_agent(tmp_path):
    """A later call of an enrolled agent whose words of one agent turn all carry the caller's label
    (what the diarizer does to a short reply): the words are heard again against the voiceprint."""
    bo = [s for s in voice_eval.enrolment_scripts("dev") if s.agent_id == "agent-bo"]
    mine = [next(s for s in bo if s.body["day"] == day) for day in (0, 2)]
    voice_eval.write_demo_calls(tmp_path, voice_eval.ENROLMENT_DATES, scripts=mine)
    config = EnrollmentConfig()
    calls = []
    for script in mine:
        path = script.audio_path(tmp_path, voice_eval.ENROLMENT_DATES)
        truth = voice_eval.load_truth(path)
        turns = [SpeakerTurn(t["start_s"], t["end_s"], t["role"]) for t in truth["turns"]]
        audio = voice_eval.decode_audio(path)
        calls.append((audio, turns, voiceprints.speaker_embeddings(audio, turns, config)))
    (_, _, enrolment), (audio, turns, later) = calls
    references = {"agent": enrolment["agent"][0], "customer": later["customer"][0]}
    words = [Word(start, min(start + 0.35, t.end), "w", 0.9)
             for t in turns for start in np.arange(t.start + 0.05, t.end - 0.1, 0.4)]
    truth = [next(t.speaker for t in turns if t.start <= w.start < t.end) for w in words]
    lost = next(t for t in turns if t.speaker == "agent" and t.start > 1.0)  # an agent turn after the opening
    labels = ["customer" if lost.start <= w.start < lost.end else label for w, label in zip(words, truth)]
    relabelled = voiceprints.relabel_words(audio, words, labels, references, config)
    inside = [i for i, w in enumerate(words) if lost.start <= w.start < lost.end]
    assert sum(relabelled[i] == "agent" for i in inside) >= 0.8 * len(inside)
    assert np.mean([r == t for r, t in zip(relabelled, truth)]) >= 0.95
    # Right labels stay right.
    assert np.mean([r == t for r, t in zip(voiceprints.relabel_words(audio, words, truth, references, config), truth)]) >= 0.95
