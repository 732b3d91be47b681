"""The QA/compliance dashboard: one self-contained HTML file built from the fused table (no Dagster).

The page must open from a blob store, an e-mail attachment or an air-gapped laptop, so plotly.js is
inlined once (no CDN, no server) and every chart is a static plotly figure. Reviewers follow links, not
queries: each compliance flag count links to the evidence rows (call, turn index, quote) listed on the
page, and each call in the review queue links to its evidence.

Stable DOM ids (the browser test and any bookmarks rely on them): ``CHART_IDS`` for the charts,
``REVIEW_TABLE_ID`` for the review queue, ``EVIDENCE_ID`` for the evidence list, ``flag-<flag>`` for
each flag's evidence section, ``call-<call_id>`` for each review row.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .compliance import HIPAA_FIELDS
from .fusion import ANGER_MIN, is_true

CHART_IDS = {
    "tone_trend": "chart-tone-trend",
    "anger_topics": "chart-anger-topics",
    "agent_heatmap": "chart-agent-heatmap",
    "compliance_flags": "chart-compliance-flags",
}
REVIEW_TABLE_ID = "review-table"
EVIDENCE_ID = "compliance-evidence"
# Flags a compliance reviewer acts on (issue_resolved is an outcome, shown in the review queue instead).
MONITORED_FLAGS = (*HIPAA_FIELDS, "escalation_requested", "billing_detected")
TOPIC_NAMES = {"billing": "billing", "care_delay": "care delay", "other": "other topic", None: "no transcript"}
SENTIMENT_SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
TOP_CALLS = 5
DASHBOARD_NAME = re.compile(r"callintel_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})\.html")
CHART_HEIGHT = 420

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1f2933}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:32px}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #d9dee3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f7}td ul{margin:0;padding-left:18px}
.muted{color:#69737d}.flag-links a{margin-right:16px}
"""


def _label(flag: str) -> str:
    return flag.replace("_", " ")


def _days(fused: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(fused["call_date"]).dt.strftime("%Y-%m-%d")


def _figure_html(fig: go.Figure, key: str) -> str:
    fig.update_layout(height=CHART_HEIGHT, margin={"t": 60, "l": 60, "r": 30, "b": 60}, template="plotly_white")
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=CHART_IDS[key],
                       config={"displaylogo": False, "responsive": True})


def _tone_trend(fused: pd.DataFrame) -> go.Figure:
    """Text sentiment and acoustic tone per day: the two disagree first when a problem is new."""
    by_day = fused.assign(day=_days(fused), sentiment=fused["overall_sentiment"].map(SENTIMENT_SCORE)) \
        .groupby("day", sort=True)[["sentiment", "negative_share", "max_anger"]].mean()
    fig = go.Figure()
    for column, name in (("sentiment", "text sentiment (-1..1)"), ("negative_share", "acoustic negative share"),
                         ("max_anger", "peak anger (mean)")):
        fig.add_trace(go.Scatter(x=list(by_day.index), y=by_day[column], name=name, mode="lines+markers"))
    fig.update_layout(title="Sentiment and tone trend by day", yaxis={"range": [-1.05, 1.05]},
                      xaxis={"type": "category", "title": "call date"}, showlegend=True)
    return fig


def _anger_topics(fused: pd.DataFrame, tone_scores: pd.DataFrame) -> go.Figure:
    """Peak anger per call grouped by what was being discussed at the peak (billing, care delay)."""
    spikes = tone_scores.loc[tone_scores["p_angry"] >= ANGER_MIN].groupby("call_id").size() \
        if not tone_scores.empty else pd.Series(dtype="int64")
    calls = fused.loc[fused["max_anger"].notna()]
    fig = go.Figure()
    for topic, name in TOPIC_NAMES.items():
        group = calls.loc[calls["anger_peak_topic"].isna() if topic is None else calls["anger_peak_topic"] == topic]
        if group.empty:
            continue
        n_spikes = group["call_id"].map(spikes).fillna(0).astype(int)
        fig.add_trace(go.Box(
            y=group["max_anger"], name=name, boxpoints="all", jitter=0.3, pointpos=0,
            customdata=list(zip(group["call_id"], n_spikes, group["anger_peak_s"].fillna(-1))),
            hovertemplate="call %{customdata[0]}<br>peak p_angry %{y:.2f} at %{customdata[2]:.0f} s"
                          "<br>%{customdata[1]} spike windows<extra></extra>",
        ))
    if not fig.data:
        fig.add_annotation(text="no call has tone scores", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    fig.add_hline(y=ANGER_MIN, line_dash="dot", annotation_text="spike threshold")
    fig.update_layout(title="Anger spikes vs topic at the peak (billing / care delay)",
                      yaxis={"range": [0, 1.05], "title": "max p_angry per call"}, showlegend=True)
    return fig


def _agent_heatmap(fused: pd.DataFrame) -> go.Figure:
    """Per agent: resolution rate next to acoustic stress. Colour is *concern* (1 - resolution rate,
    stress, anger, HIPAA rate) so red always means "look here"; the cell text is the real value."""
    agents = fused.assign(
        agent=fused["agent_id"].fillna("unknown"),
        resolved=fused["issue_resolved"].astype("Float64"),
        hipaa=(fused["hipaa_flag_count"] > 0).astype("Float64"),
    ).groupby("agent", sort=True).agg(
        calls=("call_id", "size"), resolution=("resolved", "mean"), stress=("negative_share", "mean"),
        anger=("max_anger", "mean"), hipaa=("hipaa", "mean"),
    )
    columns = ["resolution rate", "acoustic stress", "peak anger", "HIPAA flag rate"]
    values = agents[["resolution", "stress", "anger", "hipaa"]].astype("float64")
    concern = values.copy()
    concern["resolution"] = 1.0 - concern["resolution"]
    fig = go.Figure(go.Heatmap(
        z=concern.to_numpy(), x=columns, y=[f"{a} ({n} calls)" for a, n in agents["calls"].items()],
        text=values.map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}").to_numpy(), texttemplate="%{text}",
        zmin=0, zmax=1, colorscale="Reds", colorbar={"title": "concern"}, name="agent performance",
        hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>",
    ))
    fig.update_layout(title="Agent performance: resolution rate vs acoustic stress",
                      yaxis={"autorange": "reversed"})
    return fig


def _flag_counts(flags: pd.DataFrame) -> dict[str, int]:
    return {flag: int(flags[flag].map(is_true).sum()) for flag in MONITORED_FLAGS}


def _compliance_chart(counts: dict[str, int]) -> go.Figure:
    fig = go.Figure(go.Bar(x=[_label(f) for f in counts], y=list(counts.values()), name="calls flagged",
                           text=list(counts.values()), textposition="auto"))
    fig.update_layout(title="Compliance monitoring: calls per flag", yaxis={"title": "calls"}, showlegend=True)
    return fig


def _evidence_rows(flags: pd.DataFrame) -> list[dict]:
    """Evidence quotes of every *true* monitored flag, in call/flag/turn order."""
    rows = []
    for record in flags.sort_values("call_id").itertuples(index=False):
        evidence = json.loads(record.evidence_json or "{}")
        for flag in MONITORED_FLAGS:
            if not is_true(getattr(record, flag)):
                continue
            for quote in sorted(evidence.get(flag, []), key=lambda q: q["turn_index"]):
                rows.append({"call_id": record.call_id, "flag": flag,
                             "turn_index": int(quote["turn_index"]), "quote": quote["quote"]})
    return rows


def _evidence_html(rows: list[dict], counts: dict[str, int]) -> str:
    parts = [f'<section id="{EVIDENCE_ID}"><h2>Compliance evidence</h2>']
    for flag in MONITORED_FLAGS:
        flag_rows = [r for r in rows if r["flag"] == flag]
        parts.append(f'<section id="flag-{flag}"><h3>{html.escape(_label(flag))} ({counts[flag]} calls)</h3>')
        if not flag_rows:
            parts.append('<p class="muted">No evidence rows.</p></section>')
            continue
        parts.append("<table><tr><th>call</th><th>turn</th><th>quote</th></tr>")
        for i, r in enumerate(flag_rows):
            cid = html.escape(r["call_id"])
            parts.append(f'<tr id="ev-{cid}-{flag}-{i}" class="evidence-row"><td><a href="#call-{cid}">{cid}</a>'
                         f'</td><td>{r["turn_index"]}</td><td>{html.escape(r["quote"])}</td></tr>')
        parts.append("</table></section>")
    parts.append("</section>")
    return "".join(parts)


def _review_html(fused: pd.DataFrame, flags: pd.DataFrame) -> str:
    true_flags = {
        r.call_id: [f for f in MONITORED_FLAGS if is_true(getattr(r, f))]
        for r in flags.itertuples(index=False)
    }
    ordered = fused.sort_values(["qa_priority", "call_id"], ascending=[False, True])
    rows = []
    for rank, r in enumerate(ordered.itertuples(index=False), start=1):
        cid = html.escape(r.call_id)
        reasons = "".join(f"<li>{html.escape(x)}</li>" for x in json.loads(r.qa_reasons))
        links = " ".join(f'<a href="#flag-{f}">{html.escape(_label(f))}</a>' for f in true_flags.get(r.call_id, []))
        day = html.escape(str(pd.Timestamp(r.call_date).date()))
        rows.append(f'<tr id="call-{cid}" class="review-row"><td>{rank}</td><td>{cid}</td><td>{day}</td>'
                    f'<td>{html.escape(r.agent_id or "unknown")}</td><td>{r.qa_priority}</td>'
                    f'<td><ul>{reasons}</ul></td><td>{html.escape(r.text_voice_mismatch or "")}</td>'
                    f'<td>{links}</td></tr>')
    return (f'<section><h2>Calls to review first</h2><table id="{REVIEW_TABLE_ID}"><tr><th>#</th><th>call</th>'
            "<th>date</th><th>agent</th><th>QA priority</th><th>reasons (points)</th>"
            f"<th>text/voice mismatch</th><th>evidence</th></tr>{''.join(rows)}</table></section>")


def _page(title: str, head: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style>{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def render_dashboard(fused: pd.DataFrame, tone_scores: pd.DataFrame, flags: pd.DataFrame,
                     out_path: Path, title: str) -> dict:
    """Write the dashboard for the calls in `fused` (``fuse_calls`` output) to `out_path`.

    `tone_scores` adds the number of anger-spike windows per call; `flags` (``compliance_flags`` rows)
    supplies the evidence quotes. Both are restricted to the calls in `fused`, so the page never shows a
    call the fused table does not have. Returns a JSON-serialisable summary for ``dashboard_markdown``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    calls = set(fused["call_id"])
    flags = flags.loc[flags["call_id"].isin(calls)]
    tone_scores = tone_scores.loc[tone_scores["call_id"].isin(calls)]
    counts = _flag_counts(flags)
    evidence = _evidence_rows(flags)
    summary = {
        "path": str(out_path),
        "title": title,
        "n_calls": len(fused),
        "n_days": int(_days(fused).nunique()) if len(fused) else 0,
        "n_agents": int(fused["agent_id"].fillna("unknown").nunique()),
        "flag_counts": counts,
        "n_evidence_rows": len(evidence),
        "n_text_voice_mismatch": int(fused["text_voice_mismatch"].notna().sum()),
        "n_anger_at_billing": int(fused["anger_at_billing"].fillna(False).astype(bool).sum()),
        "mean_qa_priority": round(float(fused["qa_priority"].mean()), 1) if len(fused) else None,
        "top_priority_calls": [
            {"call_id": r.call_id, "agent_id": r.agent_id, "qa_priority": int(r.qa_priority),
             "qa_reasons": json.loads(r.qa_reasons)}
            for r in fused.sort_values(["qa_priority", "call_id"], ascending=[False, True])
            .head(TOP_CALLS).itertuples(index=False)
        ],
        "chart_ids": list(CHART_IDS.values()) if len(fused) else [],
    }
    if fused.empty:
        page = _page(title, "", '<p id="no-calls">No calls in this selection.</p>')
    else:
        charts = [
            ("tone_trend", _tone_trend(fused)),
            ("anger_topics", _anger_topics(fused, tone_scores)),
            ("agent_heatmap", _agent_heatmap(fused)),
            ("compliance_flags", _compliance_chart(counts)),
        ]
        links = " ".join(f'<a href="#flag-{f}">{html.escape(_label(f))}: {n}</a>' for f, n in counts.items())
        body = (f'<p class="muted">{summary["n_calls"]} calls, {summary["n_days"]} days, '
                f'{summary["n_agents"]} agents.</p>'
                + "".join(f'<section id="section-{CHART_IDS[key]}">{_figure_html(fig, key)}</section>'
                          for key, fig in charts)
                + f'<p class="flag-links">Evidence: {links}</p>'
                + _review_html(fused, flags) + _evidence_html(evidence, counts))
        page = _page(title, f'<script type="text/javascript">{get_plotlyjs()}</script>', body)
    out_path.write_text(page, encoding="utf-8")
    return summary


def dashboard_markdown(summary: dict) -> str:
    """Markdown for the Dagster UI (asset metadata): headline counts, flag counts, the top calls."""
    lines = [f"### {summary['title']}", ""]
    if not summary["n_calls"]:
        return "\n".join([*lines, "No calls in this selection.", "", f"Dashboard: `{summary['path']}`"])
    lines += [
        f"**{summary['n_calls']} calls** over {summary['n_days']} day(s), {summary['n_agents']} agent(s); "
        f"mean QA priority {summary['mean_qa_priority']}; {summary['n_text_voice_mismatch']} text/voice "
        f"mismatch(es); {summary['n_anger_at_billing']} anger peak(s) at billing.",
        "", "| flag | calls |", "|---|---|",
        *(f"| {_label(f)} | {n} |" for f, n in summary["flag_counts"].items()),
        "", "**Review first**", "", "| call | agent | priority | reasons |", "|---|---|---|---|",
        *(f"| `{c['call_id']}` | {c['agent_id'] or 'unknown'} | {c['qa_priority']} | "
          f"{'; '.join(c['qa_reasons']) or '-'} |" for c in summary["top_priority_calls"]),
        "", f"Dashboard ({summary['n_evidence_rows']} evidence rows): `{summary['path']}`",
    ]
    return "\n".join(lines)


def dashboard_name(start: dt.date, end: dt.date) -> str:
    return f"callintel_{start}_{end}.html"


def newest_dashboard(names: list[str]) -> str | None:
    """The dashboard that `latest.html` should be: the one reaching the latest date (the longest
    range on a tie), whatever order they were written in. A backfill of older dates renders after
    the newest range but must not replace it."""
    ranges = [(m.group(2), m.group(1), name) for name in names if (m := DASHBOARD_NAME.fullmatch(name))]
    if not ranges:
        return None
    end, start, name = max(ranges, key=lambda r: (r[0], -dt.date.fromisoformat(r[1]).toordinal()))
    return name
