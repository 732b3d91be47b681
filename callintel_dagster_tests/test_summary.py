"""Per-call summaries: extractive default, the LLM path against the loopback server, the asset."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pyarrow as pa

from callintel_dagster.assets.summaries import call_summaries
from callintel_dagster.engines.llm_client import LLMClient
from callintel_dagster.engines.summary import extractive_summary, summarize_with_llm
from callintel_dagster.resources.llm import OpenAICompatibleAssessor, RulesAssessor
from callintel_dagster.schemas import Transcripts, arrow_schema
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


# --- the summary prompt obeys redact_before_sending (issue 17, item 6) -----------------------------

PHI_CALL = [
    {"turn_index": 0, "role": "agent", "text": "Thanks for calling, this call may be recorded. How can I help?"},
    {"turn_index": 1, "role": "customer",
     "text": "My name is John Smith, my social security number is 123-45-6789. There is a charge on my bill."},
    {"turn_index": 2, "role": "agent", "text": "I will submit a refund request for the charge."},
]
PHI_VALUES = ("John Smith", "123-45-6789")


def _phi_transcripts(lakehouse) -> None:
    rows = [{"call_id": "call-phi-0000001", "call_date": as_date(DAY_TWO), "run_id": "seed", "speaker": "SPEAKER_00",
             "start_s": 5.0 * t["turn_index"], "end_s": 5.0 * t["turn_index"] + 4.0, "confidence": 0.9,
             "n_words": len(t["text"].split()), "phi_kinds": "[]", "language": "en", "voice_match": None, **t}
            for t in PHI_CALL]
    frame = pa.Table.from_pandas(pd.DataFrame(rows), schema=arrow_schema(Transcripts), preserve_index=False)
    lakehouse.merge_partition("transcripts", frame, ["call_id", "turn_index"], as_date(DAY_TWO))


def test_summary_prompt_is_redacted_when_the_switch_is_on(fake_openai_server):
    assessor = OpenAICompatibleAssessor(base_url=fake_openai_server.base_url, api_key="sk-test", model="fake-llama",
                                        timeout_s=2.0, max_retries=1, backoff_s=0.01, max_attempts=1)
    good = {"issues": [{"turn_index": 1, "text": "There is a charge on my bill."}], "outcomes": [],
            "action_items": [{"turn_index": 2, "text": "I will submit a refund request for the charge.", "owner": "agent"}]}
    fake_openai_server.enqueue(Fault("answer", good))
    outcome = assessor.summarize({"c1": PHI_CALL})["c1"]
    assert outcome.source == "llm", outcome.error
    sent = json.dumps(fake_openai_server.requests[0]["body"])
    assert not [value for value in PHI_VALUES if value in sent] and "[SSN]" in sent and "[NAME]" in sent

    raw = assessor.model_copy(update={"redact_before_sending": False})
    fake_openai_server.enqueue(Fault("answer", good))
    raw.summarize({"c1": PHI_CALL})
    assert all(value in json.dumps(fake_openai_server.requests[1]["body"]) for value in PHI_VALUES)


def test_summary_errors_never_log_the_transcript(resources, fake_openai_server, caplog):
    """The endpoint refuses the summary request and quotes the prompt back: the step still succeeds
    (extractive fallback) and neither the event log nor the table holds the raw transcript."""
    lakehouse = resources["lakehouse"]
    _phi_transcripts(lakehouse)
    fake_openai_server.enqueue("context_length")
    resources |= {"compliance_assessor": OpenAICompatibleAssessor(
        base_url=fake_openai_server.base_url, api_key="sk-test", model="fake-llama", timeout_s=2.0,
        max_retries=1, backoff_s=0.01, max_attempts=1, redact_before_sending=False)}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([call_summaries], partition_key=DAY_TWO, resources=resources, instance=instance)
        logged = "\n".join(str(entry) for entry in instance.all_logs(result.run_id)) + caplog.text
    assert result.success
    (row,) = lakehouse.read("call_summaries").to_dict("records")
    assert row["source"] == "extractive" and "context_length_exceeded" in row["llm_error"]
    assert "context_length_exceeded" in logged
    assert not [value for value in PHI_VALUES if value in logged + row["llm_error"]]
    assert PHI_CALL[1]["text"] not in logged
