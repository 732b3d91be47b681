"""`callintel bench --gpu` (and the GPU section of `make bench`): audio seconds per wall second of
the GPU code paths, with random-weight models built from a config (throughput does not depend on the
weights, and no checkpoint is fetched).

* **tone**: a wav2vec2-base-shaped `Wav2Vec2ForSequenceClassification` (superb-er's shape: 12 layers,
  768 wide, 4 labels) through `engines/tone.py`, call by call in float32 with batch 16 (what the
  stage did before), then with the windows of all calls batched together (`score_calls`) at the
  default precision and batch size of the device (bf16, batch from free memory on CUDA).
* **asr**: a Whisper-large-v3-shaped model (32 + 32 layers, 1280 wide, 128 mel bins; tiny.en's
  tokenizer, so 51,864 tokens) converted to CTranslate2 float16, through `engines/asr.py`'s batched
  path, at several batch sizes, with at most `max_new_tokens` per 30 s chunk (random weights never
  emit end-of-text, so this fixes the decoding work per chunk, as the issue's figure did).

`tools/gpu_bench.sh` runs it on a GPU machine in under 5 minutes. Without CUDA it reports
"skipped"; `--gpu-device cpu` with tiny shapes runs the same code on a CPU (the test does that).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from callintel_dagster.engines.audio import SAMPLE_RATE

TONE_SHAPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "conv_dim": (16, 16, 16), "conv_stride": (5, 4, 4), "conv_kernel": (10, 4, 4),
             "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "classifier_proj_size": 16},
}
ASR_SHAPES = {
    "large-v3": {"d_model": 1280, "encoder_layers": 32, "decoder_layers": 32, "encoder_attention_heads": 20,
                 "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120, "num_mel_bins": 128},
    "tiny": {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "num_mel_bins": 80},
}
SUPERB_ER_LABELS = {0: "neu", 1: "hap", 2: "ang", 3: "sad"}


@dataclasses.dataclass(frozen=True)
class GpuBenchSettings:
    device: str = "cuda"
    calls: int = 12
    call_minutes: float = 5.0
    tone_shape: str = "base"
    asr_shape: str = "large-v3"
    asr_minutes: float = 10.0
    asr_batch_sizes: tuple[int, ...] = (16, 64)
    max_new_tokens: int = 120


def gpu_section(work: Path, settings: GpuBenchSettings = GpuBenchSettings()) -> dict[str, Any]:
    import torch

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    started = time.perf_counter()
    section: dict[str, Any] = {"settings": dataclasses.asdict(settings)}
    if settings.device.startswith("cuda"):
        section["gpu"] = torch.cuda.get_device_name(0)
    section["tone"] = tone_throughput(build_wav2vec2(work / "wav2vec2", settings.tone_shape), settings)
    section["asr"] = asr_throughput(build_whisper_ct2(work / "whisper", settings.asr_shape), settings)
    section["total_seconds"] = round(time.perf_counter() - started, 1)
    return section


def synthetic_call(seconds: float, seed: int) -> np.ndarray:
    """A voiced, pitch-wandering signal with noise: real-valued audio the models accept."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 150 + 60 * np.sin(2 * np.pi * 0.3 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def speech_spans(seconds: float) -> list[tuple[float, float]]:
    """Turns of 6-12 s separated by 0.6 s pauses, like the VAD gives for a busy call."""
    rng = np.random.default_rng(int(seconds))
    spans, cursor = [], 0.0
    while cursor < seconds - 1.0:
        end = min(seconds, cursor + float(rng.uniform(6.0, 12.0)))
        spans.append((cursor, end))
        cursor = end + 0.6
    return spans


def build_wav2vec2(directory: Path, shape: str) -> str:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(**TONE_SHAPES[shape], num_labels=4, id2label=SUPERB_ER_LABELS,
                            label2id={v: k for k, v in SUPERB_ER_LABELS.items()})
    Wav2Vec2ForSequenceClassification(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(directory)
    return str(directory)


def build_whisper_ct2(directory: Path, shape: str) -> str:
    """Random-weight Whisper of `shape`, saved by transformers and converted to CTranslate2 float16,
    with tiny.en's tokenizer and a feature extractor of the shape's mel bins."""
    import ctranslate2.converters
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from callintel_dagster.engines.asr import default_whisper_model_path

    tiny_en = default_whisper_model_path()
    vocabulary = json.loads((tiny_en / "tokenizer.json").read_text())["model"]["vocab"]
    added = json.loads((tiny_en / "tokenizer.json").read_text()).get("added_tokens", [])
    vocab_size = max([*vocabulary.values(), *(token["id"] for token in added)]) + 1
    source = directory.with_name(directory.name + "-hf")
    tiny_config = json.loads((tiny_en / "config.json").read_text())
    config = WhisperConfig(
        **ASR_SHAPES[shape], vocab_size=vocab_size, max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=tiny_config.get("decoder_start_id", 50257),
        eos_token_id=tiny_config.get("eos_token_id", 50256), pad_token_id=50256, bos_token_id=50256,
        suppress_tokens=tiny_config.get("suppress_ids", []), begin_suppress_tokens=tiny_config.get("suppress_ids_begin", []),
    )
    WhisperForConditionalGeneration(config).save_pretrained(source)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(source)
    shutil.copy(tiny_en / "tokenizer.json", source / "tokenizer.json")
    ctranslate2.converters.TransformersConverter(
        str(source), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(directory), quantization="float16", force=True)
    shutil.rmtree(source, ignore_errors=True)
    return str(directory)


def tone_throughput(model_dir: str, settings: GpuBenchSettings) -> dict[str, Any]:
    from callintel_dagster.engines import tone

    seconds = settings.call_minutes * 60
    calls = [(synthetic_call(seconds, seed), tone.tone_windows(speech_spans(seconds), 4.0)) for seed in range(settings.calls)]
    speech_s = sum(end - start for _, windows in calls for start, end in windows)
    per_call = tone.ToneConfig(backend="wav2vec2", model_path=model_dir, device=settings.device, batch_size=16, dtype="float32")
    together = tone.ToneConfig(backend="wav2vec2", model_path=model_dir, device=settings.device, batch_size=None, dtype=None)
    results = {"calls": settings.calls, "speech_seconds": round(speech_s, 1)}
    for name, run in (
        ("per_call_fp32_batch16", lambda: [tone.score_segments(audio, windows, per_call) for audio, windows in calls]),
        ("all_calls_batched_default", lambda: tone.score_calls(calls, together)),
    ):
        config = per_call if name.startswith("per_call") else together
        tone.score_calls(calls[:1], config)  # load the model and warm the kernels
        wall = _timed(run, settings.device)
        results[name] = {"wall_seconds": round(wall, 3), "speech_seconds_per_second": round(speech_s / wall, 1)}
    from callintel_dagster.engines.batching import batch_size_for

    results["all_calls_batched_default"] |= {
        "dtype": tone.wav2vec2_dtype(together),
        "batch_size": batch_size_for(settings.device, None, bytes_per_item=tone._GPU_BYTES_PER_WINDOW,
                                     cpu_default=tone.CPU_BATCH, most=tone.MAX_GPU_BATCH),
    }
    return results


def asr_throughput(model_dir: str, settings: GpuBenchSettings) -> dict[str, Any]:
    from callintel_dagster.engines import asr

    seconds = settings.asr_minutes * 60
    audio = synthetic_call(seconds, seed=99)
    spans = speech_spans(seconds)
    results: dict[str, Any] = {"audio_seconds": seconds, "chunks": len(asr.speech_chunks(spans)),
                               "max_new_tokens": settings.max_new_tokens, "by_batch_size": {}}
    for batch_size in settings.asr_batch_sizes:
        config = asr.AsrConfig(model=model_dir, device=settings.device, batch_size=batch_size,
                               max_new_tokens=settings.max_new_tokens, language="en")
        asr.transcribe(audio[: 60 * SAMPLE_RATE], config, [(s, e) for s, e in spans if e <= 60])  # load + warm
        wall = _timed(lambda config=config: asr.transcribe(audio, config, spans), settings.device)
        results["by_batch_size"][str(batch_size)] = {"wall_seconds": round(wall, 3),
                                                     "audio_seconds_per_second": round(seconds / wall, 1)}
    return results


def _timed(run, device: str) -> float:
    import torch

    started = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def render_markdown(section: dict[str, Any]) -> list[str]:
    if "skipped" in section:
        return ["## 6. GPU paths", "", f"Skipped: {section['skipped']} (`tools/gpu_bench.sh` runs it on a GPU machine).", ""]
    tone, asr = section["tone"], section["asr"]
    batched = tone["all_calls_batched_default"]
    return [
        f"## 6. GPU paths ({section.get('gpu', section['settings']['device'])}, random-weight models, {section['total_seconds']} s)",
        "",
        "| stage | setting | wall s | audio s / wall s |",
        "|---|---|---|---|",
        f"| tone ({tone['calls']} calls, {tone['speech_seconds']} speech s) | per call, fp32, batch 16 | "
        f"{tone['per_call_fp32_batch16']['wall_seconds']} | {tone['per_call_fp32_batch16']['speech_seconds_per_second']} |",
        f"| tone | all calls batched, {batched['dtype']}, batch {batched['batch_size']} | {batched['wall_seconds']} | "
        f"{batched['speech_seconds_per_second']} |",
        *(f"| asr ({asr['audio_seconds']:.0f} s, {asr['chunks']} chunks, ≤ {asr['max_new_tokens']} tokens each) | batch {size} | "
          f"{row['wall_seconds']} | {row['audio_seconds_per_second']} |" for size, row in asr["by_batch_size"].items()),
        "",
    ]
