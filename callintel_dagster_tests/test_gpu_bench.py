"""The GPU bench's code paths, run on CPU with tiny shapes: random-weight wav2vec2 and a Whisper
converted to CTranslate2 from a config, through the same engines a GPU runs."""

from __future__ import annotations

import dataclasses
import math

import pytest

from callintel_dagster.tools import gpu_bench

pytestmark = pytest.mark.slow


def test_gpu_section_runs_the_gpu_code_paths_on_cpu_with_tiny_models(tmp_path):
    settings = gpu_bench.GpuBenchSettings(device="cpu", calls=3, call_minutes=0.5, tone_shape="tiny", asr_shape="tiny",
                                          asr_minutes=1.0, asr_batch_sizes=(1, 3), max_new_tokens=4)
    section = gpu_bench.gpu_section(tmp_path, settings)
    tone = section["tone"]
    assert tone["calls"] == 3 and tone["speech_seconds"] > 60
    for name in ("per_call_fp32_batch16", "all_calls_batched_default"):
        assert math.isfinite(tone[name]["speech_seconds_per_second"]) and tone[name]["speech_seconds_per_second"] > 0
    assert tone["all_calls_batched_default"]["dtype"] == "float32" and tone["all_calls_batched_default"]["batch_size"] == 16
    asr = section["asr"]
    assert set(asr["by_batch_size"]) == {"1", "3"} and asr["chunks"] >= 2
    assert all(row["audio_seconds_per_second"] > 0 for row in asr["by_batch_size"].values())
    lines = gpu_bench.render_markdown(section)
    assert sum(line.startswith("| asr") for line in lines) == 2


def test_without_cuda_the_section_says_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    section = gpu_bench.gpu_section(tmp_path, dataclasses.replace(gpu_bench.GpuBenchSettings(), device="cuda"))
    assert section == {"skipped": "no CUDA device"}
    assert "Skipped" in "\n".join(gpu_bench.render_markdown(section))
