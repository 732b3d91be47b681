"""The BI gold layer's rows (pure pandas; no Dagster): facts at the grain Power BI measures count.

`agent_id` is never null in a fact ("unknown"), so every row joins the agent dimension; evidence
quotes come from `compliance_flags`, which holds transcripts' quotes as redacted at rest.
"""

from __future__ import annotations

import json

import pandas as pd

from .fusion import is_true
from .vocabulary import BI_FLAGS

UNKNOWN_AGENT = "unknown"
SENTIMENT_SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def _agents(fused: pd.DataFrame) -> dict[str, str]:
    return {row.call_id: row.agent_id if isinstance(row.agent_id, str) else UNKNOWN_AGENT for row in fused.itertuples()}


def fact_call_rows(fused: pd.DataFrame) -> list[dict]:
    """One row per call of `fused_insights`."""
    agents = _agents(fused)
    return [
        {
            "call_id": row["call_id"], "agent_id": agents[row["call_id"]], "duration_s": row["duration_s"],
            "talk_time_agent_s": row["talk_time_agent_s"], "talk_time_customer_s": row["talk_time_customer_s"],
            "max_anger": row["max_anger"], "acoustic_stress": row["negative_share"],
            "overall_sentiment": row["overall_sentiment"], "sentiment_score": SENTIMENT_SCORE.get(row["overall_sentiment"]),
            "issue_resolved": row["issue_resolved"], "escalation_requested": row["escalation_requested"],
            "billing_detected": row["billing_detected"], "anger_at_billing": row["anger_at_billing"],
            "anger_peak_topic": row["anger_peak_topic"], "hipaa_flag_count": row["hipaa_flag_count"],
            "qa_priority": row["qa_priority"], "compliance_status": row["compliance_status"],
        }
        for row in fused.to_dict("records")
    ]


def fact_flag_rows(flags: pd.DataFrame, fused: pd.DataFrame) -> list[dict]:
    """One row per true flag of `compliance_flags` and piece of its evidence."""
    agents = _agents(fused)
    rows = []
    for record in flags.sort_values("call_id").to_dict("records"):
        evidence = json.loads(record["evidence_json"] or "{}")
        for flag in BI_FLAGS:
            if not is_true(record[flag]):
                continue
            quotes = sorted(evidence.get(flag, []), key=lambda q: q["turn_index"]) or [{"turn_index": None, "quote": None}]
            for index, quote in enumerate(quotes):
                rows.append({
                    "call_id": record["call_id"], "agent_id": agents.get(record["call_id"], UNKNOWN_AGENT), "flag": flag,
                    "evidence_index": index, "turn_index": quote["turn_index"], "quote": quote["quote"],
                })
    return rows


def fact_turn_tone_rows(turns: pd.DataFrame, fused: pd.DataFrame) -> list[dict]:
    """One row per turn of `turn_sentiment`, with its call's agent and anger topic."""
    agents = _agents(fused)
    topics = dict(zip(fused["call_id"], fused["anger_peak_topic"]))
    return [
        {
            "call_id": row["call_id"], "agent_id": agents.get(row["call_id"], UNKNOWN_AGENT), "turn_index": row["turn_index"],
            "role": row["role"], "start_s": row["start_s"], "sentiment": row["sentiment"],
            "sentiment_label": row["sentiment_label"], "tone_negative": row["tone_negative"],
            "anger_peak_topic": topics.get(row["call_id"]),
        }
        for row in turns.to_dict("records")
    ]
