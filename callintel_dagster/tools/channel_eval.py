"""Channel-aware ingest on generated two-channel calls: the `make bench` section "Channels".

Calls are the evaluation corpus scripts (``tools/compliance_eval``) recorded as 8 kHz µ-law stereo by
``tools/demo_calls.with_layout``: each party on its own channel (``split_stereo``, some with the
agent on the right, some with the other party's echo at -20 or -10 dB) or one mix copied to both
channels (``mono_in_stereo``, equal gain, -6 dB, or one side hiss only).

- **Layout threshold** (`engines/channels.SPLIT_MIN_SEPARATION`): was chosen on the corpus's *dev*
  part; the separations of those dev calls are recomputed here, so the margin on each side is shown.
- **Test calls**: the first calls of the *test* part, never looked at while choosing anything. On
  split-stereo calls: role accuracy by time of the transcript turns (`reference.role_accuracy_by_time`)
  and DER of the per-channel speaker turns against the script timing (collar 0 and 0.25 s), and
  the overlap the metrics measured against the script's. On mono-in-stereo calls: whether the layout
  check sent them down the diarization path (`role_source`), as it must.
"""

from __future__ import annotations

import statistics
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callintel_dagster.tools import compliance_eval
from callintel_dagster.tools.demo_calls import DemoScript, load_truth, with_layout, write_demo_calls
from callintel_dagster.tools.report_format import fmt

# (layout, name tag, options) cycled over the scripts of a part.
VARIANTS = (
    ("split_stereo", None, {}),
    ("mono_in_stereo", None, {}),
    ("split_stereo", "agent-right", {"agent_channel": "right"}),
    ("split_stereo", "echo20", {"bleed_db": -20}),
    ("mono_in_stereo", "copy6", {"copy_gain_db": -6}),
    ("split_stereo", "echo10", {"bleed_db": -10, "agent_channel": "right"}),
    ("mono_in_stereo", "one-side", {"copy_gain_db": -80}),
)
TEST_CALLS = len(VARIANTS)
# `make bench --quick`: one split-stereo and one mono-in-stereo call.
QUICK_TEST_CALLS = 2
CALL_DATE = "2026-11-26"


def layout_calls(scripts: list[DemoScript]) -> list[DemoScript]:
    """Each script recorded in the next of the `VARIANTS`."""
    return [with_layout(script, *VARIANTS[i % len(VARIANTS)][:2], **VARIANTS[i % len(VARIANTS)][2])
            for i, script in enumerate(scripts)]


def separations(paths: list[Path]) -> dict[str, list[float]]:
    """The separation `raw_call_audio` would record, per true layout."""
    from callintel_dagster.engines.ingest import inventory_recording

    found: dict[str, list[float]] = {}
    for path in paths:
        truth = load_truth(path)
        row = inventory_recording(path, truth["blob_key"], 10**9, 3 * 3600)
        found.setdefault(truth["channel_layout"], []).append(float(row["channel_separation"]))
    return found


def channels_section(work: Path, test_calls: int = TEST_CALLS) -> dict[str, Any]:
    """Synthesize the dev calls and the first `test_calls` test calls under `work`, and score the
    test ones (module docstring)."""
    from callintel_dagster.engines.channels import SPLIT_MIN_SEPARATION

    dev_paths = write_demo_calls(work / "dev", dates=[CALL_DATE], scripts=layout_calls(compliance_eval.corpus_part("dev")))
    test_scripts = layout_calls(compliance_eval.corpus_part("test")[:test_calls])
    test_paths = write_demo_calls(work / "test", dates=[CALL_DATE], scripts=test_scripts)
    dev = separations(dev_paths)
    calls = [score_call(path) for path in test_paths]
    split = [c for c in calls if c["true_layout"] == "split_stereo"]
    copies = [c for c in calls if c["true_layout"] == "mono_in_stereo"]
    return {
        "threshold": SPLIT_MIN_SEPARATION,
        "dev": {layout: {"calls": len(v), "min": round(min(v), 4), "max": round(max(v), 4)} for layout, v in dev.items()},
        "calls": calls,
        "split_calls": len(split),
        "layout_correct": sum(c["layout"] == c["true_layout"] for c in calls),
        "role_accuracy_by_time": _mean(c["role_accuracy_by_time"] for c in split),
        "role_accuracy_min": round(min(c["role_accuracy_by_time"] for c in split), 4) if split else None,
        "der_collar_0": _mean(c["der_collar_0"] for c in split),
        "der_collar_0_25": _mean(c["der_collar_0_25"] for c in split),
        "overlap_error_s": _mean(c["overlap_error_s"] for c in split),
        "mono_in_stereo_calls": len(copies),
        "mono_in_stereo_on_diarization": sum(c["role_source"] == "diarization" for c in copies),
    }


def score_call(path: Path) -> dict[str, Any]:
    """Ingest one generated call and run the transcript task on it, the channel map set as its
    recorder's. A split-stereo call runs the per-channel path once and is scored on its parts."""
    from callintel_dagster.engines.align import conversation_metrics
    from callintel_dagster.engines.audio import SAMPLE_RATE, decode_call_audio
    from callintel_dagster.engines.channels import channel_roles
    from callintel_dagster.engines.ingest import inventory_recording
    from callintel_dagster.engines.reference import diarization_error_rate, role_accuracy_by_time
    from callintel_dagster.engines.vocabulary import ROLE_FROM_CHANNEL_MAP, SPLIT_STEREO
    from callintel_dagster.resources.models import ModelSettings
    from callintel_dagster.resources.settings import AudioSettings

    truth = load_truth(path)
    row = inventory_recording(path, truth["blob_key"], 10**9, 3 * 3600)
    call = {**row, "audio_url": str(path), "duration_s": truth["duration_s"]}
    audio_settings = AudioSettings(agent_channel=truth["agent_channel"] or "left")
    task = ModelSettings(audio_redaction=None).transcript_task(audio_settings)
    result = {"call": truth["call_name"], "true_layout": truth["channel_layout"], "layout": row["channel_layout"],
              "separation": row["channel_separation"]}
    if row["channel_layout"] != SPLIT_STEREO:
        return result | {"role_source": task(call)["conversation_metrics"][0]["role_source"]}
    stereo = decode_call_audio(call, channels=2)
    _, speakers, turns, _ = task.per_channel(stereo, task.asr)
    metrics = conversation_metrics(turns, speakers, stereo.shape[1] / SAMPLE_RATE)
    roles = channel_roles(audio_settings.agent_channel)
    channel_turns = [types.SimpleNamespace(start=s.start, end=s.end, speaker=roles[s.speaker]) for s in speakers]
    reference, annotation = _as_turns(truth["turns"]), _annotation(truth["turns"])
    return result | {
        "role_source": ROLE_FROM_CHANNEL_MAP,
        "role_accuracy_by_time": round(role_accuracy_by_time(_as_turns(turns.to_dict("records")), reference), 4),
        "der_collar_0": round(diarization_error_rate(channel_turns, annotation, 0.0, truth["duration_s"]), 4),
        "der_collar_0_25": round(diarization_error_rate(channel_turns, annotation, 0.25, truth["duration_s"]), 4),
        "overlap_error_s": round(abs(metrics["overlap_s"] - _script_overlap(truth["turns"])), 3),
    }


def _script_overlap(turns: list[Mapping]) -> float:
    return sum(max(0.0, min(a["end_s"], b["end_s"]) - max(a["start_s"], b["start_s"]))
               for a in turns if a["role"] == "agent" for b in turns if b["role"] == "customer")


def _as_turns(rows: list[Mapping]) -> list:
    """Turn rows (`start_s`, `end_s`, `role`) as the objects the scoring functions take."""
    return [types.SimpleNamespace(start=r["start_s"], end=r["end_s"], speaker=r["role"]) for r in rows]


def _annotation(turns: list[Mapping]):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(turns):
        annotation[Segment(turn["start_s"], turn["end_s"]), index] = turn["role"]
    return annotation


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 4) if values else None


def render_markdown(section: Mapping[str, Any]) -> list[str]:
    dev = section["dev"]
    return [
        f"## 5. Channels: split-stereo and mono-in-stereo calls ({len(section['calls'])} test calls, 8 kHz µ-law)",
        "",
        f"Layout threshold {section['threshold']} on the energy-activity separation, chosen on the dev part "
        f"(split-stereo {fmt(dev.get('split_stereo', {}).get('min'))}–{fmt(dev.get('split_stereo', {}).get('max'))}, "
        f"mono-in-stereo {fmt(dev.get('mono_in_stereo', {}).get('min'))}–{fmt(dev.get('mono_in_stereo', {}).get('max'))}).",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| layout right | {section['layout_correct']} / {len(section['calls'])} | all |",
        f"| role accuracy by time, split-stereo (mean / worst call) | {fmt(section['role_accuracy_by_time'])} / "
        f"{fmt(section['role_accuracy_min'])} | ≥ 0.99 |",
        f"| DER of the per-channel turns, collar 0 | {fmt(section['der_collar_0'])} | |",
        f"| DER of the per-channel turns, collar 0.25 s | {fmt(section['der_collar_0_25'])} | ≤ 0.02 |",
        f"| overlap error vs script, s per call | {fmt(section['overlap_error_s'])} | |",
        f"| mono-in-stereo calls on the diarization path | {section['mono_in_stereo_on_diarization']} / "
        f"{section['mono_in_stereo_calls']} | all |",
        "",
        "| call | true layout | measured | separation | roles from | role acc. | DER c0 / c0.25 |",
        "|---|---|---|---|---|---|---|",
        *(f"| {c['call']} | {c['true_layout']} | {c['layout']} | {fmt(c['separation'])} | {c['role_source']} | "
          f"{fmt(c.get('role_accuracy_by_time'))} | {fmt(c.get('der_collar_0'))} / {fmt(c.get('der_collar_0_25'))} |"
          for c in section["calls"]),
        "",
    ]



def main() -> int:
    """This section alone (`python -m callintel_dagster.tools.channel_eval`): markdown + JSON on stdout."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="callintel-channels-") as work:
        section = channels_section(Path(work))
    print("\n".join(render_markdown(section)))
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
