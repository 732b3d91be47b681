"""`callintel bench` (`make bench`): how good and how fast CallIntel is on this machine, in one run.

Every figure comes from the same process and the same run, so the numbers can be compared with
each other (a WER from one machine next to a throughput from another would mean nothing):

1. **Quality on the one real call** (the pyannote.audio sample): Whisper WER against its STM, DER
   against its RTTM, and the real-time factor of each stage with the models already loaded. The
   first call of each stage is timed apart: its extra time is the model load (plus lazy imports),
   which a long-running worker pays once, not per call. A fresh worker process's first call is
   timed with an empty and with the published numba cache (`engines/jit_cache.py`).
2. **Tone model**: the held-out scores of its model card (the model is trained first if no card
   made by the current code is stored, exactly as the `tone_model` asset would).
3. **Compliance flags vs ground truth** on the scripted demo calls (a smoke test: the scripts use the
   rules' phrases), then on the held-out test part of the evaluation corpus
   (``tools/compliance_eval``): script text, and the whole audio pipeline with redaction recall.
   3c. **Languages**: language detection over the English and Spanish test calls that went through
   audio, Spanish WER, and the flags on the Spanish corpus's test part (script text and audio).
   3d. **Voices** (``tools/voice_eval``): speaker count on three-voice test calls, and role accuracy
   and the voice-mismatch list on enrolled agents' later calls (skipped with ``--quick``).
4. **Throughput end to end**: `call_pipeline_job` over the demo dates, with real Spark tasks and
   real Delta tables in a temporary data folder, against a plain per-file loop over the same calls
   with the same engine functions. The pipeline is not guaranteed to win on a small machine; the
   report says where its time goes instead of hiding it. 4b runs the same job the way the daemon
   does (a fresh process per run, the job's executor), per date and as one range run, under the
   project's executor and under Dagster's default multiprocess executor. 4c (`--long-call MINUTES`,
   not in the default run) joins the demo calls into one long recording and reports its wall, the
   chunks, the Spark slots' use and the run's peak memory; `--throughput` runs 4 and 4b alone at 30
   min of audio. `make bench-scale` runs both (`scale_results.json` / `scale_results.md`).
5. **Channels**: layout check, role accuracy and DER of the per-channel path on generated
   split-stereo and mono-in-stereo test calls (``tools/channel_eval``).
6. **GPU paths** (`tools/gpu_bench.py`; skipped without CUDA): tone and batched ASR throughput with
   random-weight models of the production shapes; `callintel bench --gpu` runs only this section.
7. **Machine**: cores, memory, thread settings and library versions, with timestamps.

Results go to `bench/results.json` and `bench/results.md`; the markdown is also printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from callintel_dagster.tools import channel_eval, compliance_eval, gpu_bench, voice_eval
from callintel_dagster.tools.demo_calls import DEMO_DATES, DemoScript
from callintel_dagster.tools.report_format import fmt, prf

# Stages whose work the sequential baseline repeats (decode + VAD, ASR + diarization, tone).
BASELINE_STAGES = ("valid_segments", "transcripts", "tone_scores")
SAMPLE_STAGES = ("decode", "vad", "asr", "diarization", "tone")
VERSIONED_PACKAGES = (
    "dagster", "pyspark", "deltalake", "torch", "faster-whisper", "ctranslate2", "onnxruntime",
    "silero-vad", "Resemblyzer", "scikit-learn", "pandas", "numpy",
)
QUICK_MINUTES = 1.0
# `--throughput`: the size for the speed-up target (>= 30 min of audio over >= 3 dates).
SCALE_MINUTES = 30.0
QUICK_REPEATS = 1
FULL_REPEATS = 3


def main(args: argparse.Namespace) -> int:
    """Run every section, write `results.json` + `results.md` into `args.output_dir`, print the md."""
    if args.gpu:
        return gpu_main(args)
    if args.throughput or args.long_call:
        return scale_main(args)
    started_at = _now()
    started = time.perf_counter()
    minutes = QUICK_MINUTES if args.quick and args.minutes is None else (args.minutes or 8.0)
    repeats = QUICK_REPEATS if args.quick else FULL_REPEATS
    output_dir = (args.output_dir or Path("bench")).resolve()
    models_root = args.data_dir.resolve() / "models"

    _progress(f"tone model card under {models_root}")
    tone = tone_model_section(models_root / "tone")
    _progress(f"sample call: cold run + {repeats} warm run(s) per stage")
    sample = sample_call_section(str(models_root / "tone"), repeats)
    _progress("fresh worker processes: first call with an empty and with the published numba cache")
    sample["worker_start"] = worker_start_section(str(models_root / "tone"), sample)
    with tempfile.TemporaryDirectory(prefix="callintel-bench-") as work:
        throughput, truth, predicted = throughput_section(Path(work), models_root, minutes)
        executors = executor_section(Path(work), models_root, throughput["dates"], throughput["audio_minutes"] * 60)
    _progress("scoring compliance flags against ground truth")
    flags = compliance_section(truth, predicted)
    _progress("evaluation corpus: test part on script text" + ("" if args.quick else " and through the pipeline"))
    with tempfile.TemporaryDirectory(prefix="callintel-corpus-") as work:
        resources = None if args.quick else _pipeline_resources(Path(work), models_root)
        corpus = compliance_eval.corpus_section(Path(work), resources, DEMO_DATES[0])
    _progress("languages: Spanish corpus test part" + ("" if args.quick else " through the pipeline, and detection"))
    with tempfile.TemporaryDirectory(prefix="callintel-languages-") as work:
        resources = None if args.quick else _pipeline_resources(Path(work), models_root)
        languages = compliance_eval.languages_section(Path(work), resources, DEMO_DATES[0], corpus["audio_pipeline"])
    _progress("channels: generated split-stereo and mono-in-stereo calls")
    with tempfile.TemporaryDirectory(prefix="callintel-channels-") as work:
        channels = channel_eval.channels_section(
            Path(work), channel_eval.QUICK_TEST_CALLS if args.quick else channel_eval.TEST_CALLS)
    _progress("voices: speaker count on three-voice test calls, agent voice enrollment" + (" (skipped)" if args.quick else ""))
    with tempfile.TemporaryDirectory(prefix="callintel-voices-") as work:
        voices = voice_eval.voices_section(Path(work), quick=args.quick)
    _progress("GPU paths (skipped without CUDA)")
    with tempfile.TemporaryDirectory(prefix="callintel-gpu-") as work:
        gpu = gpu_bench.gpu_section(Path(work))

    report = {
        "machine": machine_info(),
        "timestamps": {
            "started_at": started_at,
            "finished_at": _now(),
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "settings": {"minutes": minutes, "quick": bool(args.quick), "repeats": repeats},
        "sample_call": sample,
        "tone_model": tone,
        "compliance_flags": flags,
        "compliance_corpus": corpus,
        "languages": languages,
        "voices": voices,
        "throughput": throughput,
        "channels": channels,
        "executors": executors,
        "gpu": gpu,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    (output_dir / "results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (output_dir / "results.md").write_text(markdown)
    print(markdown, flush=True)
    _progress(f"wrote {output_dir / 'results.json'} and {output_dir / 'results.md'}")
    return 0


def gpu_main(args: argparse.Namespace) -> int:
    """`callintel bench --gpu`: only the GPU section, into `gpu_results.json` / `gpu_results.md`."""
    output_dir = (args.output_dir or Path("bench")).resolve()
    settings = gpu_bench.GpuBenchSettings(device=args.gpu_device)
    if args.gpu_device == "cpu":  # the same code on tiny shapes, to check the path without a GPU
        settings = dataclasses.replace(settings, calls=3, call_minutes=0.5, tone_shape="tiny", asr_shape="tiny",
                                       asr_minutes=1.0, asr_batch_sizes=(1, 4), max_new_tokens=8)
    report = {"machine": machine_info(), "started_at": _now()}
    with tempfile.TemporaryDirectory(prefix="callintel-gpu-") as work:
        report["gpu"] = gpu_bench.gpu_section(Path(work), settings)
    report["finished_at"] = _now()
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = "\n".join(gpu_bench.render_markdown(report["gpu"]))
    (output_dir / "gpu_results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (output_dir / "gpu_results.md").write_text(markdown)
    print(markdown, flush=True)
    return 0


def scale_main(args: argparse.Namespace) -> int:
    """`callintel bench --throughput` / `--long-call MINUTES`: sections 4 and 4b at a size the full
    bench does not run (default 30 min of audio over the 3 demo dates, project executor only), and/or
    4c, one long recording; into `scale_results.json` / `scale_results.md`."""
    from callintel_dagster.engines.reference import sample_call_path

    started = time.perf_counter()
    output_dir = (args.output_dir or Path("bench")).resolve()
    models_root = args.data_dir.resolve() / "models"
    report: dict[str, Any] = {"machine": machine_info(), "started_at": _now()}
    tone_model_section(models_root / "tone")
    lines = []
    with tempfile.TemporaryDirectory(prefix="callintel-scale-") as work:
        if args.throughput:
            minutes = args.minutes or SCALE_MINUTES
            _progress("loading the models in this process for the plain loop (the sample call once)")
            _sample_pass(sample_call_path(), str(models_root / "tone"))
            throughput, _, _ = throughput_section(Path(work), models_root, minutes)
            executors = executor_section(Path(work), models_root, throughput["dates"], throughput["audio_minutes"] * 60,
                                         {name: factory for name, factory in EXECUTORS.items() if factory == "project_pipeline_job"})
            report |= {"throughput": throughput, "executors": executors}
            lines += [*_throughput_markdown(throughput), *_executor_markdown(executors, throughput["baseline"]["wall_seconds"])]
        if args.long_call:
            report["long_call"] = long_call_section(Path(work) / "long-call", models_root, args.long_call)
            lines += _long_call_markdown(report["long_call"])
    report |= {"finished_at": _now(), "total_seconds": round(time.perf_counter() - started, 1)}
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = "\n".join([f"# CallIntel benchmark at scale ({report['started_at']}, {report['total_seconds']} s)", "", *lines])
    (output_dir / "scale_results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (output_dir / "scale_results.md").write_text(markdown)
    print(markdown, flush=True)
    _progress(f"wrote {output_dir / 'scale_results.json'} and {output_dir / 'scale_results.md'}")
    return 0


# --- 1. quality and real-time factor on the real sample call ----------------------------------------


def sample_call_section(tone_dir: str, repeats: int) -> dict[str, Any]:
    """WER, DER and per-stage real-time factors on the pyannote sample call.

    The configs are the pipeline's own defaults (`ModelSettings`, `AudioSettings`), so these are the
    figures of what `make demo` runs. Whisper decodes the whole call, as `TranscriptTask` does.
    """
    from callintel_dagster.engines.reference import (
        diarization_error_rate,
        load_rttm,
        reference_transcript,
        sample_call_path,
        word_error_rate,
    )

    path = sample_call_path()
    passes = [_sample_pass(path, tone_dir) for _ in range(1 + repeats)]
    cold, warm = passes[0][0], [times for times, _ in passes[1:]]
    outputs = passes[-1][1]
    audio_s = outputs["audio_s"]
    stages = {}
    for stage in SAMPLE_STAGES:
        warm_s = statistics.median(times[stage] for times in warm)
        stages[stage] = {
            "seconds": round(warm_s, 4),
            "real_time_factor": round(warm_s / audio_s, 4),
            "first_call_seconds": round(cold[stage], 3),
            # The first call's extra time: building the model (and importing its libraries).
            "load_seconds": round(max(0.0, cold[stage] - warm_s), 3),
        }
    total = sum(stage["seconds"] for stage in stages.values())
    reference = load_rttm()
    return {
        "audio": str(path.name),
        "audio_seconds": round(audio_s, 2),
        "wer": round(word_error_rate(reference_transcript(), outputs["hypothesis"]), 4),
        "der_collar_0": round(diarization_error_rate(outputs["turns"], reference, 0.0, audio_s), 4),
        "der_collar_0_25": round(diarization_error_rate(outputs["turns"], reference, 0.25, audio_s), 4),
        "stages": stages,
        "total_seconds": round(total, 3),
        "total_real_time_factor": round(total / audio_s, 4),
        "warm_runs": repeats,
    }


def _sample_pass(path: Path, tone_dir: str) -> tuple[dict[str, float], dict[str, Any]]:
    """One decode → VAD → ASR → diarization → tone pass, timing each stage (section 1 and the
    sequential baseline of section 4 both run exactly this)."""
    from callintel_dagster.engines.asr import transcribe_with_fallback
    from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
    from callintel_dagster.engines.diarize import diarize
    from callintel_dagster.engines.tone import score_segments, tone_windows
    from callintel_dagster.engines.vad import speech_segments

    models, vad_config, tone_config = _pipeline_configs(tone_dir)
    times: dict[str, float] = {}
    with _clock(times, "decode"):
        audio = decode_audio(path)
    with _clock(times, "vad"):
        speech = speech_segments(audio, vad_config)
    with _clock(times, "asr"):
        words, _ = transcribe_with_fallback(audio, models.asr_config())
    with _clock(times, "diarization"):
        turns = diarize(audio, models.diarization_config())
    with _clock(times, "tone"):
        score_segments(audio, tone_windows(speech, models.tone_window_s), tone_config)
    outputs = {"audio_s": audio.size / SAMPLE_RATE, "hypothesis": " ".join(w.text for w in words), "turns": turns}
    return times, outputs


def worker_start_section(tone_dir: str, sample: dict[str, Any]) -> dict[str, Any]:
    """The first call of a fresh worker process (a new Spark Python worker), per stage, with an empty
    numba cache (what every process paid before `engines/jit_cache.py`) and with the published one.
    `model_load_seconds` is the first call minus section 1's warm median: model builds, lazy imports
    and JIT compilation."""
    from callintel_dagster.engines.jit_cache import ROOT_ENV, ensure_published_cache

    started = time.perf_counter()
    ensure_published_cache()
    build_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="callintel-cold-jit-") as empty:
        cold = _fresh_process_first_call(tone_dir, {ROOT_ENV: empty})
    warm = _fresh_process_first_call(tone_dir, {})
    stages = {}
    for stage in SAMPLE_STAGES:
        steady = sample["stages"][stage]["seconds"]
        stages[stage] = {
            "cold_cache_first_call_seconds": round(cold["stages"][stage], 3),
            "warm_cache_first_call_seconds": round(warm["stages"][stage], 3),
            "cold_cache_load_seconds": round(max(0.0, cold["stages"][stage] - steady), 3),
            "warm_cache_load_seconds": round(max(0.0, warm["stages"][stage] - steady), 3),
        }
    return {
        "stages": stages,
        "cold_cache_load_seconds": round(sum(row["cold_cache_load_seconds"] for row in stages.values()), 3),
        "warm_cache_load_seconds": round(sum(row["warm_cache_load_seconds"] for row in stages.values()), 3),
        "cold_cache_process_seconds": cold["process_seconds"],
        "warm_cache_process_seconds": warm["process_seconds"],
        "cache_check_or_build_seconds": round(build_s, 2),
    }


def _fresh_process_first_call(tone_dir: str, env: dict[str, str]) -> dict[str, Any]:
    """One `_sample_pass` in a new interpreter (its own imports, models and numba cache folder)."""
    import subprocess
    import sys

    code = (
        "import json, sys; from pathlib import Path; "
        "from callintel_dagster.engines.reference import sample_call_path; "
        "from callintel_dagster.tools.bench import _sample_pass; "
        "times, _ = _sample_pass(sample_call_path(), sys.argv[1]); print(json.dumps(times))"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, tone_dir], env={**os.environ, **env},
                          capture_output=True, text=True, check=True)
    return {"stages": json.loads(done.stdout.strip().splitlines()[-1]),
            "process_seconds": round(time.perf_counter() - started, 2)}


def _pipeline_configs(tone_dir: str):
    """The model, VAD and tone settings the pipeline runs with by default."""
    from callintel_dagster.engines.tone import ToneConfig
    from callintel_dagster.resources.models import ModelSettings
    from callintel_dagster.resources.settings import AudioSettings

    models = ModelSettings(tone_model_path=tone_dir)
    return models, AudioSettings().vad_config(), ToneConfig(backend="embedded", model_path=tone_dir)


# --- 2. tone model ------------------------------------------------------------------------------------


def tone_model_section(tone_dir: Path) -> dict[str, Any]:
    """Held-out scores from the stored model card; trains (and stores) the model when no card made
    by the current code and data is there, the same rule the `tone_model` asset applies, so the
    pipeline run later reuses it instead of training again."""
    from callintel_dagster.engines.tone_training import ensure_tone_model

    _progress("tone model: reusing the stored one if current, else training it (about a minute)")
    started = time.perf_counter()
    card, trained = ensure_tone_model(tone_dir)
    source = f"trained by this run in {time.perf_counter() - started:.0f} s" if trained else "stored card"
    evaluation = card["evaluation"]
    return {
        "source": source,
        "path": str(tone_dir),
        "trained_at": card["trained_at"],
        "classes": card["classes"],
        "n_clips": evaluation["n_clips"],
        "held_out_accuracy": round(float(evaluation["accuracy"]), 4),
        "held_out_macro_f1": round(float(evaluation["macro_f1"]), 4),
        "chance_majority": round(float(evaluation["chance_majority"]), 4),
        "chance_uniform": round(float(evaluation["chance_uniform"]), 4),
        "voice_cluster_accuracy": round(float(evaluation["voice_cluster_check"]["accuracy"]), 4),
        "voice_cluster_macro_f1": round(float(evaluation["voice_cluster_check"]["macro_f1"]), 4),
        "split": evaluation["split"],
    }


# --- 3. compliance flags vs ground truth --------------------------------------------------------------


def compliance_section(truth: dict[str, dict], pipeline_flags: dict[str, dict]) -> dict[str, Any]:
    """Per-flag precision/recall/F1 of the rules engine on the true turns and on the pipeline's output.

    Only the compliance flags are scored: `angry_caller` in the scripts is an acoustic judgement
    that no compliance engine makes (the tone section covers acoustics).
    """
    from callintel_dagster.engines.compliance import FLAG_FIELDS
    from callintel_dagster.engines.rules import assess_call_with_rules
    from callintel_dagster.tools.demo_calls import BOOL_FLAGS, flag_scores

    scored = [flag for flag in BOOL_FLAGS if flag in FLAG_FIELDS]
    on_truth = {}
    for call_id, record in truth.items():
        assessment = assess_call_with_rules(record["turns"])
        on_truth[call_id] = {flag: assessment.flag(flag) for flag in scored} | {
            "overall_sentiment": assessment.overall_sentiment}
    ways = {"ground_truth_text": on_truth, "pipeline": pipeline_flags}
    result: dict[str, Any] = {"calls": len(truth), "flags": scored}
    for way, predicted in ways.items():
        scores = flag_scores(predicted, truth)
        result[way] = {
            "per_flag": {flag: _rounded(scores[flag]) for flag in scored if flag in scores},
            "macro_f1": _mean_defined(scores[flag]["f1"] for flag in scored if flag in scores),
            "sentiment_accuracy": _sentiment_accuracy(predicted, truth),
            "calls_predicted": sum(1 for call_id in truth if call_id in predicted),
        }
    return result


def _sentiment_accuracy(predicted: dict[str, dict], truth: dict[str, dict]) -> float | None:
    pairs = [(predicted.get(call_id, {}).get("overall_sentiment"), record["expected"]["overall_sentiment"])
             for call_id, record in truth.items() if record["expected"]["overall_sentiment"] is not None]
    return round(sum(guess == expected for guess, expected in pairs) / len(pairs), 4) if pairs else None


# --- 4. throughput end to end -------------------------------------------------------------------------


def throughput_section(work: Path, models_root: Path, minutes: float) -> tuple[dict, dict, dict]:
    """Materialize `call_pipeline_job` per demo date, one date-range run of the dashboard, then the
    sequential baseline over the same calls. Returns the report section, the ground truth of the
    scored calls and the compliance flags the pipeline wrote (for section 3)."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from callintel_dagster.tools.demo_calls import iter_truth

    blob_root = work / "blobs"
    dates = prepare_bench_calls(blob_root, minutes)
    resources = _pipeline_resources(work, models_root)
    _progress(f"pipeline: {len(dates)} date(s) {dates[0]}..{dates[-1]} in {work}")

    from callintel_dagster.definitions import build_definitions

    # The project's assets and jobs, bound to the bench's resources (passing resources to
    # execute_in_process is refused once a run selects a subset of assets, as the range run does).
    bench_defs = build_definitions("local", resources)
    job = bench_defs.resolve_job_def("call_pipeline_job")
    runs, steps, stage_meta = [], {}, {}
    with dg.DagsterInstance.ephemeral() as instance, MemorySampler() as pipeline_memory:
        for call_date in dates:
            started = time.perf_counter()
            result = job.execute_in_process(partition_key=call_date, instance=instance, raise_on_error=False)
            wall = time.perf_counter() - started
            if not result.success:
                raise RuntimeError(f"call_pipeline_job failed for {call_date}: {_failure(instance, result.run_id)}")
            _progress(f"pipeline {call_date}: {wall:.1f} s")
            runs.append({"call_date": call_date, "wall_seconds": round(wall, 2)})
            for step, seconds in _step_seconds(instance, result.run_id).items():
                steps.setdefault(step, []).append(seconds)
            for asset, metadata in _materialization_metadata(result).items():
                stage_meta.setdefault(asset, []).append(metadata | {"call_date": call_date})
        started = time.perf_counter()
        backfill = job.execute_in_process(
            instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("insights_dashboard")],
            tags={ASSET_PARTITION_RANGE_START_TAG: dates[0], ASSET_PARTITION_RANGE_END_TAG: dates[-1]},
        )
        backfill_wall = time.perf_counter() - started
        if not backfill.success:
            raise RuntimeError(f"dashboard range run failed: {_failure(instance, backfill.run_id)}")
        dashboard = _materialization_metadata(backfill)["insights_dashboard"]

    lakehouse = resources["lakehouse"]
    activity = lakehouse.read("speech_activity")
    raw = lakehouse.read("raw_call_audio")[["call_id", "blob_key"]]
    usable = activity[["call_id", "call_date", "duration_s"]].merge(raw, on="call_id")
    audio_s = float(usable["duration_s"].sum())
    audio_by_date = {str(day): float(s) for day, s in usable.groupby("call_date")["duration_s"].sum().items()}
    stages = _stage_rows(steps, stage_meta, audio_by_date)
    run_wall = sum(run["wall_seconds"] for run in runs)
    model_s = sum(row["task_seconds"] or 0.0 for row in stages)

    _progress(f"sequential baseline over {len(usable)} calls")
    paths = [blob_root / key for key in usable.sort_values("blob_key")["blob_key"]]
    with MemorySampler() as baseline_memory:
        baseline = sequential_baseline(paths, str(models_root / "tone"))
    pipeline_same_work = sum(row["wall_seconds"] for row in stages if row["stage"] in BASELINE_STAGES)

    truth = {t["call_id"]: t for _, t in iter_truth(blob_root) if t["expected"] is not None}
    predicted = _pipeline_flags(lakehouse.read("compliance_flags"))
    quarantine = lakehouse.read("quarantined_calls")
    section = {
        "dates": dates,
        "calls": int(len(usable)),
        "calls_quarantined": int(quarantine["call_id"].nunique()) if len(quarantine) else 0,
        "audio_minutes": round(audio_s / 60, 2),
        "spark_slots": os.cpu_count(),
        "runs": runs,
        "pipeline_wall_seconds": round(run_wall, 2),
        "pipeline_audio_seconds_per_wall_second": round(audio_s / run_wall, 3),
        "model_seconds": round(model_s, 2),
        "model_share_of_run_wall": round(model_s / run_wall, 3),
        "pipeline_peak_rss_mb": pipeline_memory.peak_mb,
        "stages": stages,
        "baseline": {
            **baseline,
            "peak_rss_mb": baseline_memory.peak_mb,
            "pipeline_same_stages_wall_seconds": round(pipeline_same_work, 2),
            "speedup_vs_pipeline_model_stages": round(baseline["wall_seconds"] / pipeline_same_work, 3),
            "speedup_vs_pipeline_end_to_end": round(baseline["wall_seconds"] / run_wall, 3),
        },
        "backfill": {
            "dates": f"{dates[0]}..{dates[-1]}",
            "partitions": len(dates),
            "asset": "insights_dashboard",
            "wall_seconds": round(backfill_wall, 2),
            "calls": int(dashboard.get("calls", 0)),
            "days": int(dashboard.get("days", 0)),
        },
    }
    return section, truth, predicted


# --- 4b. the pipeline the way users run it ------------------------------------------------------------

# name in the report -> module-level factory of the job (reconstructable: step subprocesses load it).
EXECUTORS = {"project executor (in-process)": "project_pipeline_job", "multiprocess (Dagster default)": "multiprocess_pipeline_job"}
MODEL_STEPS = ("transcripts", "tone_scores", "call_characteristics")


def project_pipeline_job():
    """`call_pipeline_job` as the code location defines it (resources from the environment)."""
    from callintel_dagster.definitions import build_definitions

    return build_definitions().resolve_job_def("call_pipeline_job")


def multiprocess_pipeline_job():
    """The same job under Dagster's default multiprocess executor, as `make dev` ran it before
    `jobs.PIPELINE_EXECUTOR`: every step its own process, every model stage its own Spark JVM."""
    import dagster as dg

    from callintel_dagster.definitions import ASSETS, build_resources
    from callintel_dagster.partitions import call_date_partitions

    job = dg.define_asset_job("call_pipeline_job", selection=dg.AssetSelection.all(),
                              partitions_def=call_date_partitions, executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=ASSETS, jobs=[job], resources=build_resources("local")).resolve_job_def(job.name)


def executor_section(work: Path, models_root: Path, dates: list[str], audio_s: float,
                     executors: dict[str, str] = EXECUTORS) -> dict[str, Any]:
    """`call_pipeline_job` launched the way the daemon launches it: each run in a fresh process,
    through `execute_job` on a persistent DagsterInstance, under the job's own executor. Each date as
    its own run (sensor runs), then the whole range as one run (a UI backfill: single-run policy).
    Both under the project's executor and under Dagster's default multiprocess executor. Every
    measurement starts from an empty lakehouse, so no call is skipped as unchanged."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    section: dict[str, Any] = {"audio_minutes": round(audio_s / 60, 2), "dates": dates, "executors": {}}
    for name, factory in executors.items():
        _progress(f"as users run it, {name}: {len(dates)} per-date run(s), then one range run")
        per_date = [_fresh_process_run(work / f"{factory}-per-date", work / "blobs", models_root, factory,
                                       {"dagster/partition": day}) for day in dates]
        ranged = _fresh_process_run(work / f"{factory}-range", work / "blobs", models_root, factory,
                                    {ASSET_PARTITION_RANGE_START_TAG: dates[0], ASSET_PARTITION_RANGE_END_TAG: dates[-1]})
        per_date_wall = sum(run["process_seconds"] for run in per_date)
        section["executors"][name] = {
            "per_date_wall_seconds": [run["process_seconds"] for run in per_date],
            "per_date_total_wall_seconds": round(per_date_wall, 2),
            "per_date_audio_seconds_per_wall_second": round(audio_s / per_date_wall, 3),
            "range_wall_seconds": ranged["process_seconds"],
            "range_audio_seconds_per_wall_second": round(audio_s / ranged["process_seconds"], 3),
            "range_model_step_starts": ranged["model_step_starts"],
            "range_model_seconds": ranged["model_seconds"],
            "range_time_split": ranged["time_split"],
            "per_date_peak_rss_mb": max(run["peak_rss_mb"] for run in per_date),
            "per_date_peak_pss_mb": max((run["peak_pss_mb"] or 0.0) for run in per_date) or None,
            "range_peak_rss_mb": ranged["peak_rss_mb"],
            "range_peak_pss_mb": ranged["peak_pss_mb"],
        }
    return section


def _fresh_process_run(root: Path, blob_root: Path, models_root: Path, factory: str, tags: dict[str, str]) -> dict:
    """One run of the job from `factory` in a new interpreter, with a data folder of its own under
    `root` (the recordings and the stored tone model are shared); the wall includes its start-up."""
    import subprocess
    import sys

    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (root / "models").unlink(missing_ok=True)
    (root / "models").symlink_to(models_root, target_is_directory=True)
    # The local profile with the rules engine and no alert channel, whatever this shell has set.
    env = {name: value for name, value in os.environ.items() if not name.startswith((
        "CALLINTEL_LLM_", "CALLINTEL_ALERT_", "CALLINTEL_AZURE_", "CALLINTEL_DEPLOYMENT", "CALLINTEL_LAKEHOUSE_ROOT",
        "CALLINTEL_CATEGORIES_FILE", "CALLINTEL_DASHBOARD_URL"))}
    env |= {"CALLINTEL_DATA_ROOT": str(root), "CALLINTEL_BLOB_ROOT": str(blob_root), "DAGSTER_HOME": str(home)}
    code = ("import json, sys; from callintel_dagster.tools.bench import run_pipeline_once; "
            "print(json.dumps(run_pipeline_once(sys.argv[1], json.loads(sys.argv[2]))))")
    started, launched_at = time.perf_counter(), time.time()
    process = subprocess.Popen([sys.executable, "-c", code, factory, json.dumps(tags)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MemorySampler(pid=process.pid) as memory:
        stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{factory} {tags} failed: {stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    if not result["success"]:
        raise RuntimeError(f"{factory} {tags} failed: {result['failure']}")
    _progress(f"{factory} {tags}: {wall:.1f} s, peak RSS {memory.peak_mb:.0f} MB, PSS {memory.peak_pss_mb} MB")
    windows = result.pop("step_windows")
    steps_at_peak = sorted(step for step, (begun, ended) in windows.items() if begun <= memory.peak_at <= ended)
    return result | {"process_seconds": round(wall, 2), "peak_rss_mb": memory.peak_mb, "peak_pss_mb": memory.peak_pss_mb,
                     "peak_rss_by_process_mb": memory.peak_by_process, "steps_at_peak": steps_at_peak,
                     "peak_rss_by_step_mb": memory.peak_mb_by_step(windows),
                     "time_split": _time_split(windows, launched_at, wall)}


def _time_split(windows: dict[str, tuple[float, float]], launched_at: float, wall: float) -> dict[str, Any]:
    """Where a fresh-process run's wall went: before the first step (interpreter, imports, run
    launch), each step (slowest first), and after the last (run end, process exit)."""
    if not windows:
        return {}
    first = min(begun for begun, _ in windows.values())
    last = max(ended for _, ended in windows.values())
    steps = sorted(((step, round(ended - begun, 2)) for step, (begun, ended) in windows.items()), key=lambda kv: -kv[1])
    return {"before_first_step_s": round(first - launched_at, 2), "after_last_step_s": round(launched_at + wall - last, 2),
            "steps_s": dict(steps)}


def run_pipeline_once(factory: str, tags: dict[str, str]) -> dict[str, Any]:
    """Inside the fresh process: `execute_job` of the reconstructable job on `$DAGSTER_HOME`'s instance."""
    import dagster as dg
    from dagster import DagsterEventType

    from callintel_dagster.tools import bench

    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(getattr(bench, factory)), instance=instance, tags=tags)
        starts = [entry.dagster_event.step_key for entry in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START)]
        stages = {name: meta for name, meta in _materialization_metadata(result).items() if "model_seconds" in meta}
        return {
            "success": result.success,
            "failure": None if result.success else _failure(instance, result.run_id),
            "model_step_starts": {step: starts.count(step) for step in MODEL_STEPS},
            "model_seconds": round(sum(float(meta["model_seconds"]) for meta in stages.values()), 2),
            "model_stages": {name: {key: meta[key] for key in ("wall_seconds", "model_seconds")} for name, meta in stages.items()},
            "step_windows": _step_windows(instance, result.run_id),
        }


# --- 4c. one long recording ---------------------------------------------------------------------------

LONG_CALL_KEY = "agent-ana__long-call.wav"
LONG_CALL_GAP_S = 1.5  # silence between the joined calls: the cut points the chunk planner looks for


def long_call_section(work: Path, models_root: Path, minutes: float) -> dict[str, Any]:
    """One recording of `minutes` (the demo calls joined, 8 kHz µ-law as phone recorders write
    them) through `call_pipeline_job` in a fresh process under the project's executor: wall, RTF,
    the peak memory of that process and its Spark JVM and workers (and which step and process held
    it), how the long call was cut into
    chunks and how busy the Spark slots were in `transcripts`, and that the call came out whole."""
    date = DEMO_DATES[0]
    recording = work / "blobs" / date / LONG_CALL_KEY
    audio_s = write_long_call(recording, work / "sources", minutes)
    _progress(f"long call: {audio_s / 60:.1f} min in {recording}")
    run = _fresh_process_run(work, work / "blobs", models_root, "project_pipeline_job", {"dagster/partition": date})
    tables = _read_tables(work / "lakehouse", ("transcripts", "quarantined_calls", "valid_segments"))
    turns, quarantine = tables["transcripts"], tables["quarantined_calls"]
    transcripts_stage = run["model_stages"].get("transcripts", {})
    slots = os.cpu_count() or 1
    busy = (float(transcripts_stage["model_seconds"]) / (float(transcripts_stage["wall_seconds"]) * slots)
            if transcripts_stage else None)
    return {
        "audio_minutes": round(audio_s / 60, 2),
        "recording": f"{date}/{LONG_CALL_KEY}",
        "chunk_s": _default_chunk_s(),
        "chunks": len(_planned_chunks(tables["valid_segments"], audio_s)),
        "wall_seconds": run["process_seconds"],
        "real_time_factor": round(run["process_seconds"] / audio_s, 4),
        "peak_rss_mb": run["peak_rss_mb"],
        "peak_pss_mb": run["peak_pss_mb"],
        "peak_rss_by_process_mb": run["peak_rss_by_process_mb"],
        "steps_at_peak": run["steps_at_peak"],
        "peak_rss_by_step_mb": run["peak_rss_by_step_mb"],
        "transcripts_wall_seconds": transcripts_stage.get("wall_seconds"),
        "transcripts_task_seconds": transcripts_stage.get("model_seconds"),
        "transcripts_slot_use": round(busy, 3) if busy is not None else None,
        "spark_slots": slots,
        "turns": int(len(turns)),
        "speakers": int(turns["speaker"].nunique()) if len(turns) else 0,
        "transcribed_until_s": round(float(turns["end_s"].max()), 1) if len(turns) else None,
        "quarantined": sorted(set(quarantine["reason"])) if len(quarantine) else [],
    }


def write_long_call(target: Path, sources_root: Path, minutes: float) -> float:
    """Join the demo calls (in script order, again and again, `LONG_CALL_GAP_S` of silence between
    them) into one 8 kHz µ-law WAV of at least `minutes`, written a call at a time; its seconds."""
    import numpy as np
    import soundfile as sf

    from callintel_dagster.engines.audio import decode_audio
    from callintel_dagster.tools.demo_calls import iter_truth, write_demo_calls

    rate = 8000
    write_demo_calls(sources_root)
    sources = [path for path, truth in iter_truth(sources_root) if truth["duration_s"]]
    gap = np.zeros(round(LONG_CALL_GAP_S * rate), dtype=np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    wanted = minutes * 60 * rate
    with sf.SoundFile(target, "w", samplerate=rate, channels=1, subtype="ULAW") as out:
        for path in itertools.cycle(sources):
            out.write(np.concatenate([decode_audio(path, rate), gap]))
            if out.frames >= wanted:
                return out.frames / rate


def _planned_chunks(segments, audio_s: float) -> list[tuple[float, float]]:
    """The chunks `transcripts` cut the long call into: the planner on the stored speech segments."""
    from callintel_dagster.engines.chunking import plan_chunks

    speech = segments[segments["kind"] == "speech"].sort_values("start_s")
    return plan_chunks(list(zip(speech["start_s"], speech["end_s"])), audio_s, _default_chunk_s())


def _default_chunk_s() -> float:
    from callintel_dagster.resources.models import ModelSettings

    return float(ModelSettings().long_call_chunk_s)


def _read_tables(lakehouse_root: Path, names: tuple[str, ...]) -> dict[str, Any]:
    from callintel_dagster.resources.lakehouse import DeltaLakehouse

    lakehouse = DeltaLakehouse(root=str(lakehouse_root))
    return {name: lakehouse.read(name) for name in names}


def _long_call_markdown(section: dict[str, Any]) -> list[str]:
    return [
        f"## 4c. One long recording ({section['audio_minutes']} min, {section['recording']})",
        "",
        "The demo calls joined into one 8 kHz µ-law file, through `call_pipeline_job` in a fresh process "
        "under the project's executor; memory = that process, its Spark JVM and Python workers.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| run wall s (with process start) / real-time factor | {fmt(section['wall_seconds'])} / {fmt(section['real_time_factor'])} |",
        f"| peak memory of the run's processes, MB: RSS summed / PSS summed (shared pages counted once) | "
        f"{fmt(section['peak_rss_mb'])} / {fmt(section['peak_pss_mb'])} |",
        f"| at the RSS peak: step(s) running; RSS by process, MB | {', '.join(section['steps_at_peak']) or '–'}; "
        + "; ".join(f"{kind} {' + '.join(str(mb) for mb in sizes)}" for kind, sizes in section["peak_rss_by_process_mb"].items())
        + " |",
        "| peak RSS summed while each step ran, MB | "
        + ", ".join(f"{step} {mb}" for step, mb in section["peak_rss_by_step_mb"].items()) + " |",
        f"| chunks of ≤ {fmt(section['chunk_s'])} s | {section['chunks']} |",
        f"| `transcripts`: wall s / task s / slot use ({section['spark_slots']} slots) | "
        f"{fmt(section['transcripts_wall_seconds'])} / {fmt(section['transcripts_task_seconds'])} / "
        f"{fmt(section['transcripts_slot_use'])} |",
        f"| turns / speakers / last turn ends at s | {section['turns']} / {section['speakers']} / "
        f"{fmt(section['transcribed_until_s'])} |",
        f"| quarantined | {'; '.join(section['quarantined']) or 'nothing'} |",
        "",
    ]


def prepare_bench_calls(blob_root: Path, minutes: float) -> list[str]:
    """Scripted demo calls, added in script order until their audio reaches `minutes`, on the demo dates.

    Past one round of the scripts, each further round adds another take of every script on the same
    dates (a busier day, as a larger `--minutes` means): its name gains ``-take<n>`` and its body the
    take, so its audio is synthesized anew (other seed) rather than copied.
    """
    from callintel_dagster.tools.demo_calls import load_scripts, load_truth, write_demo_calls

    total_s, dates, take = 0.0, set(), 0
    while True:
        scripts = [script_take(script, take) for script in load_scripts()]
        for script in scripts:
            [path] = write_demo_calls(blob_root, DEMO_DATES, names={script.name}, scripts=scripts)
            truth = load_truth(path)
            dates.add(truth["call_date"])
            total_s += truth["duration_s"] or 0.0
            if total_s >= minutes * 60:
                return sorted(dates)
        take += 1


def script_take(script: DemoScript, take: int) -> DemoScript:
    """Take `take` of a demo script: the script itself for 0, else a copy named ``-take<n>`` whose
    body (and so its audio's seed) differs by the take."""
    if take == 0:
        return script
    return DemoScript(f"{script.name}-take{take}", {**script.body, "take": take})


def _pipeline_resources(work: Path, models_root: Path) -> dict:
    """The project's local resources with every data path inside `work`, the rules engine as the
    compliance assessor (no endpoint), and the stored tone model, so no stage trains anything."""
    from callintel_dagster.definitions import build_resources
    from callintel_dagster.resources.blob_store import LocalBlobStore
    from callintel_dagster.resources.lakehouse import DeltaLakehouse
    from callintel_dagster.resources.llm import RulesAssessor
    from callintel_dagster.resources.models import ModelSettings
    from callintel_dagster.resources.reports import ReportSettings

    return build_resources("local") | {
        "blob_store": LocalBlobStore(root=str(work / "blobs")),
        "lakehouse": DeltaLakehouse(root=str(work / "lakehouse")),
        "models": ModelSettings(models_root=str(models_root)),
        "compliance_assessor": RulesAssessor(),
        "reports": ReportSettings(root=str(work / "dashboards")),
    }


def _stage_rows(steps: dict[str, list[float]], stage_meta: dict[str, list[dict]],
                audio_by_date: dict[str, float]) -> list[dict]:
    """One row per step, summed over the date runs.

    Spark stages (those whose metadata has `model_seconds`) report the per-call task seconds; the VAD
    step decodes and runs silero in the Dagster process and reports its loop's real-time factor,
    from which its model seconds follow. Task seconds include each worker's first model load.
    """
    rows = []
    for step, walls in steps.items():
        wall = sum(walls)
        metas = stage_meta.get(step, [])
        row = {"stage": step, "wall_seconds": round(wall, 2), "audio_seconds_per_wall_second": None,
               "spark_wall_seconds": None, "task_seconds": None, "inference_share": None}
        if metas and all("model_seconds" in meta for meta in metas):
            stage_audio = sum(float(meta["audio_minutes"]) for meta in metas) * 60
            task = sum(float(meta["model_seconds"]) for meta in metas)
            row |= {"spark_wall_seconds": round(sum(float(meta["wall_seconds"]) for meta in metas), 2),
                    "task_seconds": round(task, 2), "audio_seconds_per_wall_second": round(stage_audio / wall, 3)}
        elif metas and all("realtime_factor" in meta for meta in metas):
            loop = sum(float(meta["realtime_factor"]) * audio_by_date[meta["call_date"]] for meta in metas)
            row |= {"task_seconds": round(loop, 2),
                    "audio_seconds_per_wall_second": round(sum(audio_by_date.values()) / wall, 3)}
        if row["task_seconds"] is not None and wall:
            row["inference_share"] = round(row["task_seconds"] / wall, 3)
        rows.append(row)
    return rows


def _pipeline_flags(flags) -> dict[str, dict]:
    """`compliance_flags` rows as `{call_id: {flag: bool | None}}`; the table's nullable booleans
    (pd.NA) become None, which `flag_scores` reads as "not flagged"."""
    import pandas as pd

    from callintel_dagster.engines.compliance import FLAG_FIELDS

    return {
        row["call_id"]: {name: None if pd.isna(row[name]) else bool(row[name]) for name in FLAG_FIELDS}
        | {"overall_sentiment": None if pd.isna(row["overall_sentiment"]) else row["overall_sentiment"]}
        for row in flags.to_dict("records")
    }


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from its STEP_START / STEP_SUCCESS events, in start order."""
    return {step: ended - begun for step, (begun, ended) in _step_windows(instance, run_id).items()}


def _step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of each successful step of a run, in start order."""
    from dagster import DagsterEventType

    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            ends[event.step_key] = entry.timestamp
    return {step: (starts[step], ends[step]) for step in starts if step in ends}


def _materialization_metadata(result) -> dict[str, dict]:
    """Plain metadata values of each asset materialized by a run, by asset name."""
    return {
        event.asset_key.to_user_string(): {key: value.value for key, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def _failure(instance, run_id: str) -> str:
    from dagster import DagsterEventType

    errors = [str(entry.dagster_event.event_specific_data.error.message).strip()
              for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)]
    return "; ".join(errors) or "see the run's event log"


def sequential_baseline(paths: list[Path], tone_dir: str) -> dict[str, Any]:
    """The same engine functions in one plain loop, one file after another, models loaded once
    (section 1 already loaded them in this process): what a script without Dagster or Spark does."""
    times = dict.fromkeys(SAMPLE_STAGES, 0.0)
    audio_s = 0.0
    started = time.perf_counter()
    for path in paths:
        lap, outputs = _sample_pass(path, tone_dir)
        audio_s += outputs["audio_s"]
        for stage, seconds in lap.items():
            times[stage] += seconds
    wall = time.perf_counter() - started
    return {
        "calls": len(paths),
        "audio_minutes": round(audio_s / 60, 2),
        "wall_seconds": round(wall, 2),
        "audio_seconds_per_wall_second": round(audio_s / wall, 3),
        "stage_seconds": {stage: round(seconds, 2) for stage, seconds in times.items()},
    }


class MemorySampler:
    """Peak resident memory of a process plus all its descendants (Spark's JVM and its Python
    workers), sampled from a background thread; a child that lives between two samples is missed,
    so this is a lower bound on the true peak. The process is this one, or `pid` (a run in a fresh
    process, without this process's own models and Spark). RSS counts a shared page (a library's
    code, Spark's forked workers) once per process; PSS shares it out, so the PSS total is the
    physical memory the tree holds. Reading PSS walks every page of every process (~130 ms for a
    run's tree on 2 cores), so it is read every `PSS_EVERY`-th sample only, not to slow the run."""

    PSS_EVERY = 25

    def __init__(self, interval_s: float = 0.2, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.pid = pid
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        # At the RSS peak: when (epoch s) and how much each kind of process held (MB).
        self.peak_at = 0.0
        self.peak_by_process: dict[str, list[float]] = {}
        # (epoch s, summed RSS bytes) of every sample: the peak of each step of the run.
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    @property
    def peak_pss_mb(self) -> float | None:
        return round(self.peak_pss_bytes / 2**20, 1) if self.peak_pss_bytes else None

    def peak_mb_by_step(self, windows: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Peak summed RSS (MB) while each step ran (`windows`: step -> (began, ended), epoch s)."""
        peaks = {}
        for step, (begun, ended) in sorted(windows.items(), key=lambda item: item[1][0]):
            during = [total for at, total in self.samples if begun <= at <= ended]
            if during:
                peaks[step] = round(max(during) / 2**20)
        return peaks

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:  # it has ended already
            return
        for sample in itertools.count():
            total = pss = 0
            read_pss = sample % self.PSS_EVERY == 0
            by_process: dict[str, list[float]] = {}
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:  # it has ended
                tree = []
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    memory = process.memory_full_info() if read_pss else process.memory_info()
                    total += memory.rss
                    pss += getattr(memory, "pss", 0)  # Linux only
                    by_process.setdefault(_process_kind(process, root), []).append(round(memory.rss / 2**20))
            self.samples.append((time.time(), total))
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_at = total, time.time()
                self.peak_by_process = {kind: sorted(sizes, reverse=True) for kind, sizes in by_process.items()}
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            if self._stop.wait(self.interval_s):
                return


def _process_kind(process, root) -> str:
    if process.pid == root.pid:
        return "run process"
    command = " ".join(process.cmdline()[:3])
    if "java" in process.name():
        return "Spark JVM"
    return "Spark Python workers" if "pyspark" in command else "other"


# --- 5. machine ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import psutil
    import torch

    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["callintel_dagster"] = importlib.metadata.version("callintel_dagster")
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# --- report -------------------------------------------------------------------------------------------


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as markdown tables (the same numbers as the JSON)."""
    sample, tone, flags, tput = report["sample_call"], report["tone_model"], report["compliance_flags"], report["throughput"]
    machine, stamps = report["machine"], report["timestamps"]
    base = tput["baseline"]
    lines = [
        "# CallIntel benchmark",
        "",
        f"{stamps['started_at']} → {stamps['finished_at']} ({stamps['total_seconds']} s) on {machine['cpu']}, "
        f"{machine['usable_cores']} usable cores, {machine['ram_gb']} GB RAM, torch threads {machine['torch_threads']}.",
        "",
        f"## 1. Quality on the real sample call ({sample['audio']}, {sample['audio_seconds']} s)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| WER, Whisper tiny.en, whole call vs sample.stm | {fmt(sample['wer'])} |",
        f"| DER vs sample.rttm, collar 0 | {fmt(sample['der_collar_0'])} |",
        f"| DER vs sample.rttm, collar 0.25 s | {fmt(sample['der_collar_0_25'])} |",
        "",
        f"Models loaded (median of {sample['warm_runs']} warm run(s)); the first call's extra time is reported as load.",
        "",
        "| stage | seconds | real-time factor | first call s | load s |",
        "|---|---|---|---|---|",
        *(f"| {stage} | {fmt(row['seconds'])} | {fmt(row['real_time_factor'])} | "
          f"{fmt(row['first_call_seconds'])} | {fmt(row['load_seconds'])} |" for stage, row in sample["stages"].items()),
        f"| **all** | {fmt(sample['total_seconds'])} | {fmt(sample['total_real_time_factor'])} | | |",
        "",
        "First call in a fresh worker process (a new Spark Python worker), with an empty numba cache "
        "(every worker before the persistent cache) and with the published one; load = first call − warm median.",
        "",
        "| stage | first call s, empty cache | first call s, published cache | load s, empty | load s, published |",
        "|---|---|---|---|---|",
        *(f"| {stage} | {fmt(row['cold_cache_first_call_seconds'])} | {fmt(row['warm_cache_first_call_seconds'])} | "
          f"{fmt(row['cold_cache_load_seconds'])} | {fmt(row['warm_cache_load_seconds'])} |"
          for stage, row in sample["worker_start"]["stages"].items()),
        f"| **all** (process wall s: {fmt(sample['worker_start']['cold_cache_process_seconds'])} / "
        f"{fmt(sample['worker_start']['warm_cache_process_seconds'])}) | | | "
        f"{fmt(sample['worker_start']['cold_cache_load_seconds'])} | {fmt(sample['worker_start']['warm_cache_load_seconds'])} |",
        "",
        "## 2. Tone model (held-out EmoFilm scenes)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {fmt(tone['held_out_accuracy'])} |",
        f"| macro-F1 | {fmt(tone['held_out_macro_f1'])} |",
        f"| chance (majority / uniform) | {fmt(tone['chance_majority'])} / {fmt(tone['chance_uniform'])} |",
        f"| stricter voice-cluster split: accuracy / macro-F1 | {fmt(tone['voice_cluster_accuracy'])} / "
        f"{fmt(tone['voice_cluster_macro_f1'])} |",
        f"| clips, source | {tone['n_clips']}, {tone['source']} |",
        "",
        f"## 3. Smoke test: compliance flags on the demo scripts ({flags['calls']} calls)",
        "",
        "The demo scripts were written with the rules' own phrases: this checks the wiring, not how "
        "the rules generalize (section 3b does).",
        "",
        "| flag | support | truth text P / R / F1 | pipeline P / R / F1 |",
        "|---|---|---|---|",
        *(f"| {flag} | {flags['ground_truth_text']['per_flag'][flag]['support']} | "
          f"{prf(flags['ground_truth_text']['per_flag'][flag])} | {prf(flags['pipeline']['per_flag'].get(flag))} |"
          for flag in flags["flags"] if flag in flags["ground_truth_text"]["per_flag"]),
        f"| **macro-F1** | | {fmt(flags['ground_truth_text']['macro_f1'])} | {fmt(flags['pipeline']['macro_f1'])} |",
        f"| sentiment accuracy | | {fmt(flags['ground_truth_text']['sentiment_accuracy'])} | "
        f"{fmt(flags['pipeline']['sentiment_accuracy'])} |",
        "",
        *compliance_eval.render_markdown(report["compliance_corpus"]),
        *compliance_eval.render_languages_markdown(report["languages"]),
        *voice_eval.render_markdown(report["voices"]),
        *_throughput_markdown(tput),
        *_executor_markdown(report["executors"], base["wall_seconds"]),
        *channel_eval.render_markdown(report["channels"]),
        *gpu_bench.render_markdown(report["gpu"]),
    ]
    return "\n".join(lines)


def _throughput_markdown(tput: dict[str, Any]) -> list[str]:
    base = tput["baseline"]
    return [
        f"## 4. Throughput end to end ({tput['calls']} calls, {tput['audio_minutes']} min of audio, "
        f"{len(tput['dates'])} date(s), {tput['spark_slots']} Spark slots)",
        "",
        "| stage | wall s | audio s / wall s | Spark wall s | task s | task s / wall s |",
        "|---|---|---|---|---|---|",
        *(f"| {row['stage']} | {fmt(row['wall_seconds'])} | {fmt(row['audio_seconds_per_wall_second'])} | "
          f"{fmt(row['spark_wall_seconds'])} | {fmt(row['task_seconds'])} | {fmt(row['inference_share'])} |"
          for row in tput["stages"]),
        "",
        "| figure | value |",
        "|---|---|",
        f"| pipeline runs, wall s (per date) | {fmt(tput['pipeline_wall_seconds'])} "
        f"({', '.join(fmt(run['wall_seconds']) for run in tput['runs'])}) |",
        f"| pipeline audio s / wall s | {fmt(tput['pipeline_audio_seconds_per_wall_second'])} |",
        f"| model task s / run wall s | {fmt(tput['model_share_of_run_wall'])} |",
        f"| pipeline peak RSS (process + Spark), MB | {fmt(tput['pipeline_peak_rss_mb'])} |",
        f"| sequential loop wall s (decode → VAD → ASR → diarize → tone) | {fmt(base['wall_seconds'])} |",
        f"| sequential loop audio s / wall s | {fmt(base['audio_seconds_per_wall_second'])} |",
        f"| sequential loop peak RSS, MB | {fmt(base['peak_rss_mb'])} |",
        f"| speed-up, pipeline {' + '.join(BASELINE_STAGES)} ({fmt(base['pipeline_same_stages_wall_seconds'])} s) "
        f"vs loop | {fmt(base['speedup_vs_pipeline_model_stages'])}× |",
        f"| speed-up, whole pipeline vs loop | {fmt(base['speedup_vs_pipeline_end_to_end'])}× |",
        f"| dashboard backfill {tput['backfill']['dates']} as one run, wall s | {fmt(tput['backfill']['wall_seconds'])} |",
        "",
        "Task seconds are summed over Spark tasks that run side by side, so task s / wall s can reach the "
        "number of Spark slots; they include each worker's first model load. A speed-up below 1 means the "
        "plain loop was faster: see the per-date walls (the first date pays Spark start-up and the worker "
        "model loads) and the gap between a stage's wall and its Spark wall (Delta MERGE, schema checks).",
        "",
    ]


def _executor_markdown(section: dict[str, Any], loop_wall: float) -> list[str]:
    dates = section["dates"]
    return [
        f"## 4b. The way users run it ({section['audio_minutes']} min of audio, {len(dates)} date(s))",
        "",
        "Each run in a fresh process through `execute_job` on a persistent instance, as the daemon launches "
        "sensor runs and backfills; wall includes the process start. Range = the dates as one run (a UI "
        "backfill under the single-run policy). Every run starts from an empty lakehouse.",
        "",
        "| executor | per-date runs, wall s | audio s / wall s | vs loop | range run, wall s | audio s / wall s | vs loop "
        "| model step runs in the range run | peak MB, RSS / PSS: per date · range |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {name} | {fmt(row['per_date_total_wall_seconds'])} ({', '.join(fmt(w) for w in row['per_date_wall_seconds'])}) "
          f"| {fmt(row['per_date_audio_seconds_per_wall_second'])} | {fmt(round(loop_wall / row['per_date_total_wall_seconds'], 3))}× "
          f"| {fmt(row['range_wall_seconds'])} | {fmt(row['range_audio_seconds_per_wall_second'])} "
          f"| {fmt(round(loop_wall / row['range_wall_seconds'], 3))}× "
          f"| {', '.join(f'{step} {n}' for step, n in row['range_model_step_starts'].items())} "
          f"| {fmt(row['per_date_peak_rss_mb'])} / {fmt(row['per_date_peak_pss_mb'])} · "
          f"{fmt(row['range_peak_rss_mb'])} / {fmt(row['range_peak_pss_mb'])} |"
          for name, row in section["executors"].items()),
        "",
        *(f"Range run, {name}: {_time_split_line(row.get('range_time_split') or {})}."
          for name, row in section["executors"].items() if row.get("range_time_split")),
        "",
    ]


def _time_split_line(split: dict[str, Any], slowest: int = 5) -> str:
    steps = split["steps_s"]
    rest = sum(list(steps.values())[slowest:])
    shown = ", ".join(f"`{step}` {fmt(seconds)}" for step, seconds in list(steps.items())[:slowest])
    return (f"{fmt(split['before_first_step_s'])} s before the first step, {shown}, the other "
            f"{max(0, len(steps) - slowest)} steps {fmt(round(rest, 2))} s, {fmt(split['after_last_step_s'])} s after the last")






# --- helpers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _clock(times: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    times[name] = time.perf_counter() - started


def _rounded(scores: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in scores.items()}


def _mean_defined(values) -> float | None:
    defined = [value for value in values if value is not None]
    return round(statistics.mean(defined), 4) if defined else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _progress(message: str) -> None:
    print(f"[bench] {message}", flush=True)
