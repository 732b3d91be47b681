"""Per-call summaries: extractive default, the LLM path against the loopback server, the asset."""

from __future__ import annotations

import json

import dagster as dg

from callintel_dagster.assets.summaries import call_summaries
from callintel_dagster.engines.llm_client import LLMClient
from callintel_dagster.engines.summary import extractive_summary, summarize_with_llm
from callintel_dagster.resources.llm import OpenAICompatibleAssessor, RulesAssessor
from callintel_dagster_tests.conftest import (
    DAY_TWO,
    SEED_CALLS,
    as_date,
    write_seed_transcripts,
)
from callintel_dagster_tests.fake_openai_server import Fault


def _turns(call_id: str) -> list[dict]:
    return [{"turn_index": i, "role": role, "text": text} for i, (role, text) in enumerate(SEED_CALLS[call_id])]


def test_extractive_summary_finds_issue_outcome_and_commitment():
    summary = extractive_summary(_turns("call-bad-00000002"))
    assert [i.text for i in summary.issues] == ["There is a charge on my bill for a copay I already paid."]
    assert summary.action_items[0].text == "I will submit a refund request for the copay."
    assert summary.action_items[0].owner == "agent"
    resolved = extractive_summary(_turns("call-ok-000000001"))
    assert resolved.outcomes[-1].text.startswith("Done, your appointment has been rescheduled")
    assert extractive_summary([]).issues == []


def _client(server) -> LLMClient:
    return LLMClient(server.base_url, "sk-test", "fake-llama", timeout_s=2, max_retries=1, backoff_s=0.01)


def test_llm_summary_is_validated_and_falls_back_when_it_invents_text(fake_openai_server):
    turns = _turns("call-bad-00000002")
    good = {"issues": [{"turn_index": 1, "text": "There is a charge on my bill for a copay I already paid."}],
            "outcomes": [], "action_items": [{"turn_index": 2, "text": "I will submit a refund request for the copay.", "owner": "agent"}]}
    fake_openai_server.enqueue(Fault("answer", good))
    summary, source, error = summarize_with_llm(turns, _client(fake_openai_server))
    assert source == "llm" and error is None and summary.issues[0].turn_index == 1

    invented = {**good, "issues": [{"turn_index": 1, "text": "The caller threatened to sue."}]}
    fake_openai_server.enqueue(Fault("answer", invented), Fault("answer", invented))
    summary, source, error = summarize_with_llm(turns, _client(fake_openai_server))
    assert source == "extractive" and "not a sentence of turn 1" in error
    assert summary == extractive_summary(turns)


def test_call_summaries_asset_with_rules_and_with_llm(resources, fake_openai_server):
    write_seed_transcripts(resources["lakehouse"], as_date(DAY_TWO))
    resources |= {"compliance_assessor": RulesAssessor()}
    assert dg.materialize([call_summaries], partition_key=DAY_TWO, resources=resources).success
    rows = resources["lakehouse"].read("call_summaries").set_index("call_id")
    assert set(rows.index) == set(SEED_CALLS) and set(rows["source"]) == {"extractive"}
    assert json.loads(rows.loc["call-bad-00000002", "action_items"])[0]["owner"] == "agent"

    resources |= {"compliance_assessor": OpenAICompatibleAssessor(
        base_url=fake_openai_server.base_url, api_key="sk-test", model="fake-llama", timeout_s=2.0,
        max_retries=1, backoff_s=0.01, max_attempts=1)}
    assert dg.materialize([call_summaries], partition_key=DAY_TWO, resources=resources).success
    rows = resources["lakehouse"].read("call_summaries").set_index("call_id")
    # The fake model answers with a compliance assessment, not a summary: every call falls back.
    assert set(rows["source"]) == {"extractive"} and rows["llm_error"].notna().all()
