"""Long calls: cut at silences, chunks run as separate tasks, stitched back with one set of speakers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from callintel_dagster.engines import chunking, reference
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio, sha256_of
from callintel_dagster.engines.diarize import SpeakerTurn
from callintel_dagster.resources.compute import RESULT_COLUMNS, run_call_task


def test_chunks_are_cut_in_pauses_within_the_limit_and_cover_the_call():
    speech = [(0.0, 5.0), (6.0, 20.0), (21.0, 50.0), (50.5, 70.0)]
    chunks = chunking.plan_chunks(speech, 70.0, 30.0)
    assert chunks == [(0.0, 20.5), (20.5, 50.25), (50.25, 70.0)]  # the middle of the latest pause each time
    assert chunking.plan_chunks(speech, 70.0, 100.0) == [(0.0, 70.0)]
    # A stretch with no pause is cut at the limit.
    assert chunking.plan_chunks([(0.0, 100.0)], 100.0, 30.0) == [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, 100.0)]


def _voice(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).standard_normal(16)
    return (vector / np.linalg.norm(vector)).tolist()


def test_stitching_maps_each_chunks_speakers_onto_the_call_speakers_by_voice():
    agent, caller = _voice(1), _voice(2)
    noisy = lambda v, s: (np.asarray(v) + 0.05 * np.random.default_rng(s).standard_normal(16)).tolist()  # noqa: E731
    chunks = [
        {"start_s": 30.0, "end_s": 60.0,  # diarized on its own: the caller spoke first, so is its SPEAKER_00
         "words": [{"start": 31.0, "end": 31.5, "text": "late", "probability": 0.9}],
         "speakers": [{"start": 30.5, "end": 40.0, "speaker": "SPEAKER_00"}, {"start": 41.0, "end": 59.0, "speaker": "SPEAKER_01"}],
         "voices": {"SPEAKER_00": {"embedding": noisy(caller, 3), "seconds": 9.5},
                    "SPEAKER_01": {"embedding": noisy(agent, 4), "seconds": 18.0}}},
        {"start_s": 0.0, "end_s": 30.0,
         "words": [{"start": 1.0, "end": 1.4, "text": "hello", "probability": 0.9}],
         "speakers": [{"start": 0.5, "end": 10.0, "speaker": "SPEAKER_00"}, {"start": 11.0, "end": 29.0, "speaker": "SPEAKER_01"},
                      {"start": 29.2, "end": 29.4, "speaker": "SPEAKER_02"}],  # too short to embed: its own voice
         "voices": {"SPEAKER_00": {"embedding": agent, "seconds": 9.5}, "SPEAKER_01": {"embedding": caller, "seconds": 18.0}}},
    ]
    words, turns, _ = chunking.stitch_chunks(chunks)
    assert [w.text for w in words] == ["hello", "late"]
    labels = [(t.start, t.speaker) for t in turns]
    assert labels == [(0.5, "SPEAKER_00"), (11.0, "SPEAKER_01"), (29.2, "SPEAKER_02"), (30.5, "SPEAKER_01"), (41.0, "SPEAKER_00")]


@pytest.fixture(scope="module")
def long_call(tmp_path_factory):
    """The real two-party sample call three times over, 1.5 s of silence between: a generated long
    call whose true speakers are known throughout (the sample's RTTM, repeated)."""
    import soundfile

    sample = decode_audio(reference.sample_call_path())
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([sample, gap, sample, gap, sample])
    path = tmp_path_factory.mktemp("long") / "agent-ana__long-call.wav"
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    period = (len(sample) + len(gap)) / SAMPLE_RATE
    truth = reference.load_rttm()
    repeated = [SpeakerTurn(seg.start + k * period, seg.end + k * period, label)
                for k in range(3) for seg, _, label in truth.itertracks(yield_label=True)]
    return path, len(audio) / SAMPLE_RATE, period, repeated


def _inline_map(calls: pd.DataFrame, task, description: str) -> pd.DataFrame:
    """What a Spark job does with each row (the calls travel as strings, as through Spark)."""
    return pd.DataFrame([run_call_task(task, call) for call in calls.astype(str).to_dict("records")], columns=RESULT_COLUMNS)


@pytest.mark.slow
def test_long_call_runs_as_chunks_and_stitches_into_one_consistent_transcript(long_call, tmp_path):
    from callintel_dagster.engines.vad import speech_segments
    from callintel_dagster.resources.models import ModelSettings

    path, duration, period, truth = long_call
    task = dataclasses.replace(ModelSettings().transcript_task(), audio_redaction=None)
    call = {"call_id": "long-call-000001", "audio_url": str(path), "size_bytes": path.stat().st_size,
            "checksum_sha256": sha256_of(path), "duration_s": duration, "blob_key": "2026-11-23/long-call.wav"}
    spans = {call["call_id"]: speech_segments(decode_audio(path))}
    handed: list[list[str]] = []
    returned: list[pd.DataFrame] = []

    def spying_map(calls, task, description):
        handed.append(list(calls["call_id"]))
        returned.append(_inline_map(calls, task, description))
        return returned[-1]

    results = chunking.map_calls_split(spying_map, pd.DataFrame([call]), task, "test", spans, max_chunk_s=40.0)
    chunks = chunking.plan_chunks(spans[call["call_id"]], duration, 40.0)
    assert len(chunks) >= 3 and all(end - start <= 40.0 for start, end in chunks)
    assert handed == [[chunking.chunk_id(call["call_id"], i) for i in range(len(chunks))], [call["call_id"]]]
    assert list(results["call_id"]) == [call["call_id"]] and list(results["status"]) == ["ok"]

    tables = json.loads(results.iloc[0]["payload"])
    turns = pd.DataFrame(tables["transcripts"])
    assert turns["turn_index"].tolist() == list(range(len(turns)))
    assert turns["start_s"].is_monotonic_increasing and turns["end_s"].max() <= duration + 0.5
    assert set(turns["speaker"]) == {"SPEAKER_00", "SPEAKER_01"}
    # Each repeat has words (nothing lost at a cut), and one speaker labelling across all chunks: a
    # chunk whose speakers were swapped would put a third of the call on the wrong voice.
    assert all(((turns["start_s"] >= k * period) & (turns["start_s"] < (k + 1) * period)).any() for k in range(3))
    grid = np.arange(0.0, period - 1.5, 0.25)

    def speaker_at(times):
        return [next((row.speaker for row in turns.itertuples() if row.start_s <= t < row.end_s), None) for t in times]

    first = speaker_at(grid)
    for k in (1, 2):
        pairs = [(a, b) for a, b in zip(first, speaker_at(grid + k * period)) if a and b]
        assert len(pairs) > 40 and np.mean([a == b for a, b in pairs]) >= 0.8
    # The stitched diarization against the repeated reference: the project's DER target holds over
    # the whole call, which it could not if any chunk's speakers were mapped onto the wrong voices.
    _, stitched, _ = chunking.stitch_chunks([json.loads(payload)["chunk"][0] for payload in returned[0]["payload"]])
    der = reference.diarization_error_rate(stitched, reference.turns_to_annotation(truth), 0.25, duration)
    assert der <= 0.20
    assert tables["conversation_metrics"][0]["n_speakers"] == 2


def test_a_long_call_with_a_failed_chunk_is_one_failed_call_and_short_calls_run_whole():
    calls = pd.DataFrame({"call_id": ["short-call", "long-call"], "duration_s": [50.0, 100.0], "blob_key": ["a", "b"]})
    spans = {"long-call": [(0.0, 45.0), (46.0, 100.0)]}
    handed: list[list[str]] = []

    def fake_map(frame, task, description):
        handed.append(list(frame["call_id"]))
        return pd.DataFrame([
            {"call_id": cid, "status": "error" if cid.endswith("#001") else "ok", "seconds": 1.0,
             "error": "worker killed (OOM)" if cid.endswith("#001") else None, "payload": "{}"}
            for cid in frame["call_id"]
        ], columns=RESULT_COLUMNS)

    results = chunking.map_calls_split(fake_map, calls, task=None, description="t", speech_by_call=spans, max_chunk_s=60.0)
    assert handed == [["short-call", "long-call#000", "long-call#001"]]  # no stitching pass for a failed call
    by_call = results.set_index("call_id")
    assert sorted(by_call.index) == ["long-call", "short-call"] and by_call.loc["short-call", "status"] == "ok"
    assert by_call.loc["long-call", "status"] == "error"
    assert by_call.loc["long-call", "error"] == "chunk long-call#001: worker killed (OOM)"
    assert by_call.loc["long-call", "seconds"] == 2.0


@pytest.mark.slow
def test_a_long_call_finished_block_by_block_stores_what_the_whole_decode_stores(long_call, tmp_path):
    """Past `relabel_max_call_s` the stitching task never holds the whole call: the agent's voice
    sample and the redacted copy come from two passes one block at a time. Everything it stores must
    be what the task stores when it decodes the call whole."""
    from callintel_dagster.engines.vad import speech_segments
    from callintel_dagster.resources.models import ModelSettings

    path, duration, _, _ = long_call
    whole = ModelSettings().transcript_task()
    call = {"call_id": "long-call-000002", "audio_url": str(path), "size_bytes": path.stat().st_size,
            "checksum_sha256": sha256_of(path), "duration_s": duration, "blob_key": "2026-11-23/agent-ana__long-call.wav",
            "agent_id": "agent-ana"}
    planned = chunking.plan_chunks(speech_segments(decode_audio(path)), duration, 40.0)
    chunk_rows = [{**call, "call_id": chunking.chunk_id(call["call_id"], i), "chunk_start_s": start, "chunk_end_s": end}
                  for i, (start, end) in enumerate(planned)]
    payloads = [run_call_task(whole, row)["payload"] for row in chunk_rows]
    stitch = {**call, "chunk_results": chunking.chunk_results_column(payloads)}
    streamed = dataclasses.replace(whole, enrollment=dataclasses.replace(whole.enrollment, relabel_max_call_s=duration / 2))

    stored = {}
    for name, task in (("whole", whole), ("streamed", streamed)):
        target = tmp_path / f"{name}.wav"
        stored[name] = task({**stitch, "redacted_audio_url": str(target)}) | {"copy": target.read_bytes()}
    whole_tables, streamed_tables = stored["whole"], stored["streamed"]
    assert streamed_tables["redacted_audio"][0]["n_spans"] > 0  # the sample call's names and numbers are masked
    assert streamed_tables["copy"] == whole_tables["copy"]
    assert [{**row, "path": None} for row in streamed_tables["redacted_audio"]] == [
        {**row, "path": None} for row in whole_tables["redacted_audio"]]
    assert streamed_tables["transcripts"] == whole_tables["transcripts"]
    metrics = [{k: v for k, v in tables["conversation_metrics"][0].items() if k != "language_probability"}
               for tables in (whole_tables, streamed_tables)]
    assert metrics[0] == metrics[1] and metrics[1]["duration_s"] == pytest.approx(duration)
    sample = [tables["agent_voice_samples"][0] for tables in (whole_tables, streamed_tables)]
    assert sample[1]["embedding_json"] is not None and sample[0]["speech_s"] == sample[1]["speech_s"]
    assert np.allclose(json.loads(sample[0]["embedding_json"]), json.loads(sample[1]["embedding_json"]), atol=1e-5)
