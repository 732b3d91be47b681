"""Fusion logic (mismatch labels, anger/billing alignment, QA priority, missing stages) and the dashboard,
rendered in a real headless Chromium so the charts are checked after plotly.js has run."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from callintel_dagster.engines.dashboard import (
    CHART_IDS,
    EVIDENCE_ID,
    REVIEW_TABLE_ID,
    dashboard_markdown,
    render_dashboard,
)
from callintel_dagster.engines.fusion import OUTPUT_DTYPES, fuse_calls
from callintel_dagster.schemas import (
    CallTone,
    ComplianceFlags,
    ConversationMetrics,
    RawCallAudio,
    SpeechActivity,
    ToneScores,
    Transcripts,
)

CHROMIUM = Path("/usr/bin/chromium")
DAY1, DAY2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)
NOW = pd.Timestamp("2026-11-25T08:00:00Z")

BILLING = "c0000000000000a1"   # angry at the billing turn, HIPAA + escalation + unresolved
CALM = "c0000000000000b2"      # complains in words, calm voice; long dead air
RESOLVED = "c0000000000000c3"  # "resolved", but angry about a referral delay and never calmed down
POSITIVE = "c0000000000000d4"  # positive words, angry voice; no transcript; compliance pending (rules only)
BARE = "c0000000000000e5"      # only VAD ran: every later stage missing
QUARANTINED = "c0000000000000f6"
NO_VAD = "c0000000000000a7"    # ok in the inventory, but VAD has not run yet

# call_id: (date, agent, duration_s)
CALLS = {BILLING: (DAY1, "agent_a"), CALM: (DAY1, "agent_b"), RESOLVED: (DAY2, "agent_a"),
         POSITIVE: (DAY2, "agent_b"), BARE: (DAY2, None), QUARANTINED: (DAY2, "agent_a"), NO_VAD: (DAY2, "agent_b")}

TURNS = {  # call_id: [(role, start_s, end_s, text)]
    BILLING: [("agent", 0, 4, "Thanks for calling, how can I help?"),
              ("customer", 4, 9, "My date of birth is [DOB]."),
              ("agent", 9, 13, "I see your balance."),
              ("customer", 13, 20, "I was charged twice on this bill!"),
              ("customer", 20, 26, "This is ridiculous, fix it now."),
              ("customer", 26, 32, "I want a supervisor.")],
    CALM: [("agent", 0, 5, "This call may be recorded. How can I help?"),
           ("customer", 5, 12, "I got a bill for a copay I already paid."),
           ("agent", 12, 20, "I am sorry, let me look."),
           ("customer", 20, 28, "That is really disappointing."),
           ("agent", 28, 40, "I have refunded it."),
           ("customer", 40, 50, "Okay, thank you.")],
    RESOLVED: [("agent", 0, 5, "This call may be recorded."),
               ("customer", 5, 15, "I have been waiting three weeks for a referral!"),
               ("agent", 15, 25, "I have sent the referral now."),
               ("customer", 25, 30, "Fine.")],
}  # POSITIVE has tone and flags but no transcript (ASR stage missing)

WINDOWS = {  # call_id: [(start_s, end_s, p_angry)]; the rest of the mass is split over the other labels
    BILLING: [(0, 4, 0.05), (13, 17, 0.55), (20, 24, 0.85), (26, 30, 0.6)],
    CALM: [(5, 10, 0.05), (20, 24, 0.10), (40, 44, 0.02)],
    RESOLVED: [(5, 10, 0.70), (15, 20, 0.1), (25, 30, 0.4)],
    POSITIVE: [(5, 10, 0.65), (15, 20, 0.05)],
}

TONE = {  # call_id: (max_anger, negative_share, tone_trend, dominant_label)
    BILLING: (0.85, 0.6, 0.30, "angry"),
    CALM: (0.10, 0.10, -0.05, "neutral_positive"),
    RESOLVED: (0.70, 0.50, 0.05, "angry"),
    POSITIVE: (0.65, 0.40, -0.30, "neutral_positive"),
}

FLAGS = {  # call_id: (sentiment, flags, evidence, status)
    BILLING: ("negative",
              {"issue_resolved": False, "billing_detected": True, "phi_before_verification": True,
               "escalation_requested": True},
              {"billing_detected": [(3, "charged twice on this bill")], "phi_before_verification": [(1, "[DOB]")],
               "escalation_requested": [(5, "I want a supervisor")]},
              "ok"),
    CALM: ("negative", {"issue_resolved": True, "billing_detected": True},
           {"billing_detected": [(1, "a bill for a copay")], "issue_resolved": [(4, "I have refunded it")]}, "ok"),
    RESOLVED: ("neutral", {"issue_resolved": True}, {"issue_resolved": [(2, "I have sent the referral now")]}, "ok"),
    POSITIVE: ("positive", {"issue_resolved": True}, {}, "pending"),
}
FLAG_NAMES = ("issue_resolved", "billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
              "missing_recording_disclosure", "escalation_requested")


def _audit(call_id: str) -> dict:
    return {"call_id": call_id, "call_date": CALLS[call_id][0], "run_id": "run-1"}


def stage_frames() -> dict[str, pd.DataFrame]:
    """Every input of `fuse_calls`, validated against its Pandera contract (so the fixture is realistic)."""
    raw = RawCallAudio.validate(pd.DataFrame([{
        **_audit(cid), "blob_key": f"{date}/{agent or 'x'}__{cid}.wav", "blob_version": "v1", "agent_id": agent,
        "size_bytes": 1000, "checksum_sha256": "0" * 64, "duration_s": None if cid == QUARANTINED else 60.0,
        "sample_rate": 16000, "channels": 1, "codec": "pcm_s16le",
        "channel_layout": None if cid == QUARANTINED else "mono", "channel_separation": None,
        "status": "quarantined" if cid == QUARANTINED else "ok",
        "error": "truncated" if cid == QUARANTINED else None, "ingested_at": NOW,
    } for cid, (date, agent) in CALLS.items()]))
    vad_calls = [BILLING, CALM, RESOLVED, POSITIVE, BARE]
    activity = SpeechActivity.validate(pd.DataFrame([{
        **_audit(cid), "duration_s": 60.0, "speech_s": 45.0, "speech_ratio": 0.75, "non_talk_s": 15.0,
        "longest_silence_s": 12.0 if cid == CALM else 3.0, "n_speech_segments": 6, "n_flagged_silences": 2,
    } for cid in vad_calls]))
    metrics = ConversationMetrics.validate(pd.DataFrame([{
        **_audit(cid), "duration_s": 60.0, "n_speakers": 2, "talk_time_agent_s": 20.0, "talk_time_customer_s": 25.0,
        "non_talk_time_s": 15.0, "overlap_s": 1.0, "interruptions": 3 if cid == BILLING else 0,
        "words_per_minute_agent": 150.0, "words_per_minute_customer": 140.0, "model_id": "whisper:tiny.en",
        "role_source": "diarization", "language": "en", "language_probability": None,
    } for cid in TURNS]))
    tone_scores = ToneScores.validate(pd.DataFrame([{
        **_audit(cid), "segment_index": i, "start_s": float(s), "end_s": float(e), "p_angry": p,
        "p_anxious": (1 - p) / 3, "p_sad": (1 - p) / 3, "p_neutral_positive": (1 - p) / 3,
        "top_label": "angry" if p > 0.5 else "neutral_positive",
    } for cid, windows in WINDOWS.items() for i, (s, e, p) in enumerate(windows)]))
    call_tone = CallTone.validate(pd.DataFrame([{
        **_audit(cid), "n_segments": len(WINDOWS[cid]), "scored_duration_s": 20.0, "max_anger": m,
        "negative_share": n, "tone_first_third": 0.3, "tone_last_third": 0.3 + t, "tone_trend": t,
        "dominant_label": label, "model_id": "tone-test",
    } for cid, (m, n, t, label) in TONE.items()]))
    transcripts = Transcripts.validate(pd.DataFrame([{
        **_audit(cid), "turn_index": i, "speaker": f"SPEAKER_0{role == 'customer'}", "role": role,
        "start_s": float(s), "end_s": float(e), "text": text, "confidence": 0.9, "n_words": len(text.split()),
        "phi_kinds": "[]", "language": "en",
    } for cid, turns in TURNS.items() for i, (role, s, e, text) in enumerate(turns)]))
    flags = ComplianceFlags.validate(pd.DataFrame([{
        **_audit(cid), "overall_sentiment": sentiment, **{f: values.get(f, False) for f in FLAG_NAMES},
        "billing_topics": json.dumps(["bill"] if values.get("billing_detected") else []),
        "summary": "Test call.",
        "evidence_json": json.dumps({f: [{"turn_index": t, "quote": q} for t, q in evidence.get(f, [])]
                                     for f in FLAG_NAMES}),
        "source": "rules" if status == "pending" else "llm+rules", "disagreements": "[]", "model_id": "m",
        "prompt_version": "p1", "attempts": 1, "status": status, "extracted_at": NOW,
    } for cid, (sentiment, values, evidence, status) in FLAGS.items()]))
    return {"raw": raw, "activity": activity, "metrics": metrics, "call_tone": call_tone,
            "tone_scores": tone_scores, "transcripts": transcripts, "flags": flags}


@pytest.fixture(scope="module")
def stages() -> dict[str, pd.DataFrame]:
    return stage_frames()


@pytest.fixture(scope="module")
def fused(stages: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return fuse_calls(**stages)


def _row(fused: pd.DataFrame, call_id: str) -> dict:
    """One call's values as Python scalars (``tolist``), so flags compare with ``is True`` / ``is pd.NA``."""
    position = fused["call_id"].tolist().index(call_id)
    return {column: fused[column].tolist()[position] for column in fused.columns}


def test_calls_kept_and_dropped(fused: pd.DataFrame) -> None:
    # Quarantined and not-yet-VAD'd calls are out; a call with every later stage missing stays in.
    assert sorted(fused["call_id"]) == sorted([BILLING, CALM, RESOLVED, POSITIVE, BARE])
    assert list(fused.columns) == list(OUTPUT_DTYPES)
    assert {c: str(t) for c, t in fused.dtypes.items()} == OUTPUT_DTYPES


def test_missing_stages_are_null(fused: pd.DataFrame) -> None:
    bare = _row(fused, BARE)
    assert bare["agent_id"] is None and bare["speech_ratio"] == 0.75
    for column in ("max_anger", "negative_share", "tone_trend", "anger_peak_s", "talk_time_agent_s"):
        assert pd.isna(bare[column]), column
    for column in ("interruptions", "anger_peak_turn_index", "anger_at_billing", "hipaa_flag_count",
                   "issue_resolved", "billing_detected"):
        assert bare[column] is pd.NA, column
    for column in ("overall_sentiment", "text_voice_mismatch", "anger_peak_topic", "compliance_status"):
        assert bare[column] is None, column
    assert json.loads(bare["qa_reasons"]) == ["compliance not assessed by the LLM (rules only or missing): +5"]


def test_text_voice_mismatch_labels(fused: pd.DataFrame) -> None:
    labels = dict(zip(fused["call_id"], fused["text_voice_mismatch"]))
    assert labels == {BILLING: None, CALM: "negative_text_calm_voice", RESOLVED: "angry_voice_resolved",
                      POSITIVE: "positive_text_angry_voice", BARE: None}


def test_anger_peak_alignment(fused: pd.DataFrame) -> None:
    billing = _row(fused, BILLING)
    # Angriest window 20-24 s -> midpoint 22 s -> turn 4, next to turn 3 cited as billing evidence.
    assert billing["anger_peak_s"] == 22.0 and billing["anger_peak_turn_index"] == 4
    assert billing["anger_at_billing"] is True and billing["anger_peak_topic"] == "billing"
    # Billing evidence at turn 1, peak at turn 3 (20-24 s): two turns away is not "at billing".
    calm = _row(fused, CALM)
    assert calm["anger_peak_turn_index"] == 3 and calm["anger_at_billing"] is False
    resolved = _row(fused, RESOLVED)
    assert resolved["anger_peak_turn_index"] == 1 and resolved["anger_at_billing"] is False
    assert resolved["anger_peak_topic"] == "care_delay"
    # Without a transcript the peak has a time but no turn, so its topic and billing alignment are unknown.
    positive = _row(fused, POSITIVE)
    assert positive["anger_peak_s"] == 7.5 and positive["anger_peak_turn_index"] is pd.NA
    assert positive["anger_at_billing"] is pd.NA and positive["anger_peak_topic"] is None


def test_qa_priority_order_and_reasons(fused: pd.DataFrame) -> None:
    assert list(fused["call_id"]) == [BILLING, POSITIVE, RESOLVED, CALM, BARE]
    assert fused["qa_priority"].tolist() == [87, 28, 24, 20, 5]
    assert json.loads(_row(fused, BILLING)["qa_reasons"]) == [
        "HIPAA: phi before verification: +25", "issue not resolved: +20",
        "vocal anger p_angry=0.85 at 22 s: +17", "escalation requested: +15",
        "tone worsened over the call (trend +0.30): +10",
    ]
    # Explainable: reasons are listed by weight and every score is the sum of their points.
    for row in fused.itertuples():
        points = sum(int(re.search(r"\+(\d+)$", r).group(1)) for r in json.loads(row.qa_reasons))
        assert row.qa_priority == min(100, points)


def test_qa_priority_is_capped(stages: dict[str, pd.DataFrame]) -> None:
    flags = stages["flags"].copy()
    worst = flags["call_id"] == BILLING
    flags.loc[worst, ["phi_requested_unnecessarily", "missing_recording_disclosure"]] = True
    row = _row(fuse_calls(**{**stages, "flags": flags}), BILLING)
    assert row["qa_priority"] == 100 and row["hipaa_flag_count"] == 3
    assert len(json.loads(row["qa_reasons"])) == 7


def test_empty_inputs_give_empty_frame(stages: dict[str, pd.DataFrame]) -> None:
    empty = {name: frame.iloc[:0] for name, frame in stages.items()}
    fused = fuse_calls(**empty)
    assert fused.empty and list(fused.columns) == list(OUTPUT_DTYPES)


def test_dashboard_summary_and_markdown(tmp_path: Path, stages: dict[str, pd.DataFrame], fused: pd.DataFrame) -> None:
    summary = render_dashboard(fused, stages["tone_scores"], stages["flags"], tmp_path / "d.html", "Calls")
    assert summary["n_calls"] == 5 and summary["n_days"] == 2 and summary["n_agents"] == 3
    assert summary["flag_counts"] == {"phi_before_verification": 1, "phi_requested_unnecessarily": 0,
                                      "missing_recording_disclosure": 0, "escalation_requested": 1,
                                      "billing_detected": 2}
    assert summary["n_evidence_rows"] == 4 and summary["n_anger_at_billing"] == 1
    assert [c["call_id"] for c in summary["top_priority_calls"]] == [BILLING, POSITIVE, RESOLVED, CALM, BARE]
    json.dumps(summary)  # Dagster metadata must be JSON
    page = (tmp_path / "d.html").read_text()
    assert "cdn" not in page.lower().split("<body>")[1] and 'src="http' not in page
    assert f'id="ev-{BILLING}-billing_detected-0"' in page and "charged twice on this bill" in page
    markdown = dashboard_markdown(summary)
    assert f"`{BILLING}`" in markdown and "| billing detected | 2 |" in markdown


def test_dashboard_single_and_empty(tmp_path: Path, stages: dict[str, pd.DataFrame], fused: pd.DataFrame) -> None:
    single = render_dashboard(fused.loc[fused["call_id"] == BARE], stages["tone_scores"], stages["flags"],
                              tmp_path / "one.html", "One call")
    assert single["n_calls"] == 1 and single["flag_counts"]["billing_detected"] == 0
    assert all(f'id="{chart}"' in (tmp_path / "one.html").read_text() for chart in CHART_IDS.values())
    empty = render_dashboard(fused.iloc[:0], stages["tone_scores"], stages["flags"], tmp_path / "none.html", "None")
    assert empty["n_calls"] == 0 and empty["top_priority_calls"] == [] and empty["mean_qa_priority"] is None
    assert "No calls in this selection." in (tmp_path / "none.html").read_text()
    assert "No calls in this selection." in dashboard_markdown(empty)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="/usr/bin/chromium is not installed (apt-get install chromium)")
def test_dashboard_renders_in_headless_chromium(tmp_path: Path, stages: dict[str, pd.DataFrame],
                                                fused: pd.DataFrame) -> None:
    page = tmp_path / "dashboard.html"
    render_dashboard(fused, stages["tone_scores"], stages["flags"], page, "CallIntel test dashboard")
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    for chart in CHART_IDS.values():
        # After plotly.js ran, each chart div is a rendered plot with its SVG layers.
        div = re.search(rf'<div id="{chart}" class="([^"]*)"', dom)
        assert div and "js-plotly-plot" in div.group(1), chart
    assert dom.count('class="main-svg"') >= 2 * len(CHART_IDS)
    for series in ("text sentiment (-1..1)", "acoustic negative share", "peak anger (mean)",  # tone trend
                   "billing", "care delay", "other topic", "no transcript",  # anger vs topic
                   "calls flagged"):  # compliance
        assert f">{series}</text>" in dom, series
    for title in ("Sentiment and tone trend by day", "Anger spikes vs topic at the peak",
                  "Agent performance: resolution rate vs acoustic stress", "Compliance monitoring: calls per flag"):
        assert title in dom, title
    assert "agent_a (2 calls)" in dom  # heatmap axis label
    assert f'id="{REVIEW_TABLE_ID}"' in dom and f'id="{EVIDENCE_ID}"' in dom
    assert dom.count('class="review-row"') == 5 and dom.count('class="evidence-row"') == 4

    shot = tmp_path / "dashboard.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2400", "--hide-scrollbars", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_insights_assets_on_a_day_no_stage_has_reached(tmp_path, lakehouse):
    import dagster as dg

    from callintel_dagster.assets.insights import fused_insights, insights_dashboard
    from callintel_dagster.resources.reports import ReportSettings

    resources = {"lakehouse": lakehouse, "reports": ReportSettings(root=str(tmp_path / "dash"))}
    result = dg.materialize([fused_insights, insights_dashboard], partition_key="2026-11-24", resources=resources)
    assert result.success
    page = (tmp_path / "dash" / "latest.html").read_text()
    assert 'id="no-calls"' in page


def test_latest_dashboard_is_the_newest_range_not_the_last_written(tmp_path, lakehouse):
    import dagster as dg

    from callintel_dagster.assets.insights import fused_insights, insights_dashboard
    from callintel_dagster.engines.dashboard import newest_dashboard
    from callintel_dagster.resources.reports import ReportSettings

    assert newest_dashboard(["callintel_2026-11-14_2026-11-21.html", "callintel_2026-11-19_2026-11-25.html",
                             "callintel_2026-11-10_2026-11-25.html", "latest.html"]) == "callintel_2026-11-10_2026-11-25.html"
    assert newest_dashboard(["latest.html"]) is None
    resources = {"lakehouse": lakehouse, "reports": ReportSettings(root=str(tmp_path / "dash"))}
    for key in ("2026-11-25", "2026-11-21"):  # the newest day, then a backfill of an older one
        assert dg.materialize([fused_insights, insights_dashboard], partition_key=key, resources=resources).success
    page = (tmp_path / "dash" / "latest.html").read_text()
    assert "2026-11-19 to 2026-11-25" in page and "to 2026-11-21" not in page
