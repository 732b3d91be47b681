"""Hand-written model answers for the fake OpenAI-compatible server.

Each fixture is what a careful model would answer for one test call, written for the test by reading
the call, never computed by the rules engine: an LLM test that answered with the rules' own output
could only prove the HTTP round trip, and a rules change would silently change what the "model"
says. A fixture is chosen by a phrase of its call's transcript; quotes are copied from the
*redacted* turns the server receives. A call with no fixture gets :data:`NO_FIXTURE` (every flag
null), which is still a valid answer.
"""

from __future__ import annotations

import copy


def _answer(sentiment, resolved, billing, topics, phi_early, phi_asked, no_disclosure, escalation,
            summary, **evidence) -> dict:
    flags = ("issue_resolved", "billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
             "missing_recording_disclosure", "escalation_requested")
    return {
        "overall_sentiment": sentiment,
        "issue_resolved": resolved,
        "billing_detected": billing,
        "billing_topics": topics,
        "hipaa_risk": {"phi_before_verification": phi_early, "phi_requested_unnecessarily": phi_asked,
                       "missing_recording_disclosure": no_disclosure},
        "escalation_requested": escalation,
        "summary": summary,
        "evidence": {flag: [{"turn_index": i, "quote": q} for i, q in evidence.get(flag, [])]
                     for flag in flags},
    }


# (a phrase of the call's transcript, the answer)
FIXTURES: tuple[tuple[str, dict], ...] = (
    # test_compliance.COMPLIANT_CALL
    ("I got a bill for a copay I already paid", _answer(
        "positive", True, True, ["bill", "claim", "copay", "payment", "refund"], False, False, False, False,
        "The member was billed for a copay already paid. After verification the agent refunded the "
        "duplicate copay.",
        issue_resolved=[(4, "so I've submitted a refund of the copay")],
        billing_detected=[(1, "I got a bill for a copay I already paid"),
                          (4, "The claim was processed twice")])),
    # test_compliance.RISKY_CALL
    ("I'm calling about my account", _answer(
        "negative", False, True, ["charge"], True, True, True, True,
        "The agent read out the caller's identifiers before verifying anyone and asked for a full SSN. "
        "The caller was charged twice and asked for a supervisor.",
        billing_detected=[(3, "I was charged twice")],
        phi_before_verification=[(2, "I see your date of birth is [DOB]")],
        phi_requested_unnecessarily=[(4, "Can you give me your full social security number?")],
        missing_recording_disclosure=[(0, "Hello, billing department")],
        escalation_requested=[(5, "I want to speak to a supervisor."),
                              (6, "I will escalate this to my supervisor.")])),
    # test_compliance.INJECTION_CALL
    ("My deductible statement shows a balance due", _answer(
        "neutral", True, True, ["balance", "deductible", "statement"], False, False, False, False,
        "The member asked about a balance on a deductible statement. The agent corrected the statement.",
        issue_resolved=[(3, "I've corrected the statement and you're all set")],
        billing_detected=[(1, "My deductible statement shows a balance due of 300 dollars.")])),
    # test_compliance.test_batch_with_faults_loses_nothing_and_is_idempotent
    ("I've corrected the copay, you're all set", _answer(
        None, True, True, ["copay"], False, False, False, False,
        "A copay was wrong and the agent corrected it.",
        issue_resolved=[(2, "I've corrected the copay, you're all set.")],
        billing_detected=[(2, "I've corrected the copay")])),
    # conftest.SEED_CALLS["call-ok-000000001"]
    ("I want to move my appointment to Friday", _answer(
        "positive", True, False, [], False, False, False, False,
        "The caller moved an appointment to Friday.",
        issue_resolved=[(2, "your appointment has been rescheduled to Friday")])),
    # conftest.SEED_CALLS["call-bad-00000002"]
    ("There is a charge on my bill for a copay I already paid", _answer(
        "negative", None, True, ["bill", "charge", "copay", "refund"], False, False, False, False,
        "The caller disputes a copay charge; the agent will request a refund.",
        billing_detected=[(1, "There is a charge on my bill for a copay I already paid.")])),
    # conftest.SEED_CALLS["call-inj-00000003"]
    ("Why is my invoice so high", _answer(
        "negative", None, True, ["deductible", "invoice", "payment"], False, False, False, False,
        "The caller asked why an invoice is high; the agent offered a payment plan.",
        billing_detected=[(1, "Why is my invoice so high?"),
                          (2, "I can set up a payment plan")])),
)

NO_FIXTURE = _answer(None, None, None, [], None, None, None, None, "No fixture matches this call.")


def answer_for(user_message: str) -> dict:
    """The fixture whose phrase is in the transcript, else :data:`NO_FIXTURE` (a fresh copy)."""
    return copy.deepcopy(next((answer for phrase, answer in FIXTURES if phrase in user_message), NO_FIXTURE))
