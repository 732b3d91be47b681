"""`callintel bench`: the report has every section with real numbers, and its markdown renders.

The end-to-end test runs the real thing on the `--quick` setting (one scripted call, one warm run per
stage). It trains the tone model into its temporary data folder and starts Spark, which takes a few
minutes on two cores, so it is marked slow.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

import pandas as pd
import pytest

from callintel_dagster.tools import bench, cli

SECTIONS = ("machine", "timestamps", "settings", "sample_call", "tone_model", "compliance_flags",
            "compliance_corpus", "languages", "voices", "throughput", "executors", "channels", "gpu")


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _tables(markdown: str) -> list[list[str]]:
    """Blocks of consecutive `|` lines."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _cells(line: str) -> int:
    return line.strip().strip("|").count("|") + 1


@pytest.mark.slow
def test_quick_bench_reports_every_section(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["--data-dir", str(tmp_path / "data"), "bench", "--quick", "--output-dir", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert set(SECTIONS) <= set(report)

    machine = report["machine"]
    assert machine["logical_cores"] >= 1 and machine["ram_gb"] > 0 and machine["torch_threads"] >= 1
    assert {"dagster", "pyspark", "torch", "python"} <= set(machine["versions"])
    assert report["timestamps"]["started_at"] < report["timestamps"]["finished_at"]
    assert report["timestamps"]["total_seconds"] > 0

    sample = report["sample_call"]
    assert 0 <= sample["wer"] < 0.5, "Whisper tiny.en scores about 0.16 on the sample call"
    assert 0 <= sample["der_collar_0_25"] <= sample["der_collar_0"] < 0.5
    for stage in bench.SAMPLE_STAGES:
        row = sample["stages"][stage]
        assert all(_number(row[key]) for key in ("seconds", "real_time_factor", "first_call_seconds", "load_seconds"))
        assert row["real_time_factor"] < 1, f"{stage} must run faster than real time on the sample call"

    start = sample["worker_start"]
    for stage in bench.SAMPLE_STAGES:
        assert all(_number(value) for value in start["stages"][stage].values())
    # The published numba cache spares a fresh worker librosa's compilation (tone and diarization).
    assert start["warm_cache_load_seconds"] < start["cold_cache_load_seconds"]

    tone = report["tone_model"]
    assert tone["held_out_accuracy"] > tone["chance_majority"]
    assert all(_number(tone[key]) for key in ("held_out_macro_f1", "chance_uniform", "voice_cluster_accuracy"))

    flags = report["compliance_flags"]
    assert flags["calls"] >= 1
    for way in ("ground_truth_text", "pipeline"):
        assert flags[way]["calls_predicted"] == flags["calls"]
        for scores in flags[way]["per_flag"].values():
            assert isinstance(scores["support"], int)
            assert scores["f1"] is None or 0 <= scores["f1"] <= 1

    tput = report["throughput"]
    assert tput["calls"] >= 1 and tput["audio_minutes"] > 0
    assert all(_number(tput[key]) and tput[key] > 0 for key in (
        "pipeline_wall_seconds", "pipeline_audio_seconds_per_wall_second", "model_seconds", "pipeline_peak_rss_mb"))
    stages = {row["stage"]: row for row in tput["stages"]}
    for stage in bench.BASELINE_STAGES:
        assert _number(stages[stage]["task_seconds"]) and _number(stages[stage]["audio_seconds_per_wall_second"])
    assert all(_number(tput["baseline"][key]) and tput["baseline"][key] > 0 for key in (
        "wall_seconds", "peak_rss_mb", "speedup_vs_pipeline_model_stages", "speedup_vs_pipeline_end_to_end"))
    assert _number(tput["backfill"]["wall_seconds"]) and tput["backfill"]["calls"] == tput["calls"]

    executors = report["executors"]
    assert set(executors["executors"]) == set(bench.EXECUTORS) and executors["dates"] == tput["dates"]
    for row in executors["executors"].values():
        assert len(row["per_date_wall_seconds"]) == len(tput["dates"])
        assert all(_number(row[key]) and row[key] > 0 for key in (
            "per_date_total_wall_seconds", "range_wall_seconds", "range_audio_seconds_per_wall_second", "range_model_seconds"))
        # One run over the range: each model stage ran once, not once per date.
        assert row["range_model_step_starts"] == dict.fromkeys(bench.MODEL_STEPS, 1)
        # The run's own process tree (a JVM and Python workers at least), not the bench process.
        assert 300 < row["range_peak_rss_mb"] and 300 < row["per_date_peak_rss_mb"]
        # Where the range run's wall went: start-up, every step, exit; together no more than the wall.
        split = row["range_time_split"]
        assert {"transcripts", "valid_segments"} <= set(split["steps_s"]) and split["before_first_step_s"] > 0
        assert split["before_first_step_s"] + split["after_last_step_s"] < row["range_wall_seconds"]

    corpus = report["compliance_corpus"]  # --quick: the test part on its script text only
    assert corpus["corpus_calls"] >= 60 and corpus["split_seed"] and corpus["audio_pipeline"] is None
    assert _number(corpus["script_text"]["macro_f1"]) and _number(corpus["script_text_redaction"]["recall"])

    languages = report["languages"]  # --quick: the Spanish test part on its script text only
    assert languages["spanish_corpus_calls"] >= 20 and languages["spanish_audio_pipeline"] is None
    assert _number(languages["spanish_script_text"]["macro_f1"]) and languages["detection"]["calls"] == 0

    channels = report["channels"]  # --quick: one split-stereo and one mono-in-stereo test call
    assert channels["layout_correct"] == len(channels["calls"]) == 2
    assert channels["mono_in_stereo_on_diarization"] == channels["mono_in_stereo_calls"] == 1
    assert channels["role_accuracy_by_time"] >= 0.9 and _number(channels["der_collar_0_25"])

    markdown = (out / "results.md").read_text()
    assert markdown in capsys.readouterr().out
    for heading in ("## 1.", "## 2.", "## 3.", "## 3b.", "## 3c.", "## 3d.", "## 4.", "## 4b.", "## 5.", "## 6."):
        assert heading in markdown
    tables = _tables(markdown)
    assert len(tables) == 13
    for table in tables:
        assert set(table[1].replace("|", "")) == {"-"}, "second row of a table is its separator"
        assert len({_cells(line) for line in table}) == 1, f"ragged table:\n{chr(10).join(table)}"


def test_stage_rows_and_pipeline_flags():
    """Spark stages report task seconds from their metadata, the in-process VAD step from its
    real-time factor; null flags from Delta become None rather than crashing `flag_scores`."""
    steps = {"valid_segments": [2.0, 3.0], "transcripts": [10.0, 10.0], "fused_insights": [0.5]}
    meta = {
        "valid_segments": [{"realtime_factor": 0.05, "call_date": "d1"}, {"realtime_factor": 0.1, "call_date": "d2"}],
        "transcripts": [{"audio_minutes": 1.0, "wall_seconds": 8.0, "model_seconds": 12.0, "call_date": "d1"},
                        {"audio_minutes": 2.0, "wall_seconds": 9.0, "model_seconds": 14.0, "call_date": "d2"}],
    }
    rows = {row["stage"]: row for row in bench._stage_rows(steps, meta, {"d1": 60.0, "d2": 120.0})}
    assert rows["valid_segments"]["task_seconds"] == pytest.approx(0.05 * 60 + 0.1 * 120)
    assert rows["valid_segments"]["audio_seconds_per_wall_second"] == pytest.approx(180 / 5)
    assert rows["transcripts"] == {
        "stage": "transcripts", "wall_seconds": 20.0, "audio_seconds_per_wall_second": 9.0,
        "spark_wall_seconds": 17.0, "task_seconds": 26.0, "inference_share": 1.3,
    }
    assert rows["fused_insights"]["task_seconds"] is None

    frame = pd.DataFrame({"call_id": ["a"], "overall_sentiment": [None]}).assign(
        **{flag: pd.array([pd.NA], dtype="boolean") for flag in ("issue_resolved", "billing_detected",
           "phi_before_verification", "phi_requested_unnecessarily", "missing_recording_disclosure",
           "escalation_requested")})
    frame.loc[0, "billing_detected"] = True
    flags = bench._pipeline_flags(frame)["a"]
    assert flags["billing_detected"] is True
    assert flags["escalation_requested"] is None and flags["overall_sentiment"] is None


def test_further_takes_of_a_script_are_new_calls_on_the_same_dates():
    """Past one round of the demo scripts, `--minutes` adds busier days, not more dates: each take is
    its own call (name, blob key) with audio of its own (the digest seeds the synthesis)."""
    from callintel_dagster.tools.demo_calls import DEMO_DATES, load_scripts

    script = load_scripts()[0]
    assert bench.script_take(script, 0) is script
    takes = [bench.script_take(script, n) for n in (1, 2)]
    assert [take.name for take in takes] == [f"{script.name}-take1", f"{script.name}-take2"]
    assert {take.call_date(DEMO_DATES) for take in takes} == {script.call_date(DEMO_DATES)}
    digests = {t.sha256(script.call_date(DEMO_DATES)) for t in (script, *takes)}
    assert len(digests) == 3
    assert len({t.audio_path(Path("blobs"), DEMO_DATES) for t in (script, *takes)}) == 3


@pytest.mark.slow
def test_long_call_bench_runs_one_joined_recording_through_the_pipeline(tmp_path):
    """`callintel bench --long-call`: one 8 kHz µ-law recording of the joined demo calls, run in a fresh
    process; it comes out whole (transcribed to its end, nothing quarantined) with its peak RSS."""
    import soundfile

    out = tmp_path / "bench"
    assert cli.main(["--data-dir", str(tmp_path / "data"), "bench", "--long-call", "0.5", "--output-dir", str(out)]) == 0
    section = json.loads((out / "scale_results.json").read_text())["long_call"]
    assert "throughput" not in json.loads((out / "scale_results.json").read_text())
    assert 0.5 <= section["audio_minutes"] < 3, "the demo calls are joined until the length is reached, then it stops"
    assert section["quarantined"] == [] and section["turns"] > 3 and section["chunks"] == 1
    assert section["transcribed_until_s"] > 0.8 * section["audio_minutes"] * 60
    assert section["peak_rss_mb"] > 300 and 0 < section["real_time_factor"] < 5
    by_step = section["peak_rss_by_step_mb"]
    assert {"valid_segments", "transcripts"} <= set(by_step) and max(by_step.values()) <= section["peak_rss_mb"] + 1
    assert 0 < section["transcripts_slot_use"] <= 1.05

    recording = bench.write_long_call(tmp_path / "joined.wav", tmp_path / "sources", 0.2)
    info = soundfile.info(tmp_path / "joined.wav")
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
    assert recording == pytest.approx(info.duration) and recording >= 12
    markdown = (out / "scale_results.md").read_text()
    assert "## 4c. One long recording" in markdown
    for table in _tables(markdown):
        assert len({_cells(line) for line in table}) == 1
