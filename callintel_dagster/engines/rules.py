"""Deterministic rules engine filling the same :class:`CallAssessment` as the LLM (no Dagster).

It is the embedded default (no model needed), the fallback when the LLM output is quarantined, and the
safety net under the LLM: rule-detected compliance flags are OR-ed into the model's answer. Every
true flag carries evidence quotes, taken from the *redacted* turn text so stored evidence never holds
PHI and validates against the same transcript the LLM saw.

Detection runs on raw text (it needs the digits to know a date of birth was spoken) and also
recognises redaction placeholders, so the engine gives the same answer on raw or redacted turns.
A flag is ``None`` only when the transcript cannot decide it (e.g. no agent turns at all).
"""

from __future__ import annotations

import re

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from .compliance import CallAssessment, Turn, TurnsLike, normalize_turns
from .redaction import PLACEHOLDER_RE, find_phi, redact_slice

MAX_QUOTES_PER_FLAG = 5
# An agent who has not said "this call may be recorded" within its first turns did not disclose it
# in the sense the disclosure is meant: before the caller says anything of substance.
DISCLOSURE_WITHIN_AGENT_TURNS = 3
SENTIMENT_THRESHOLD = 0.05  # VADER's own cut-off between neutral and positive/negative

_I = re.IGNORECASE


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", _I)


BILLING_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bill", _words(r"bill(?:s|ed|ing)?")),
    ("invoice", _words(r"invoices?")),
    ("charge", re.compile(r"(?<!in )(?<!of )\b(?:charge[sd]?|overcharged?)\b", _I)),
    ("copay", _words(r"co-?pays?", r"co-?payments?")),
    ("coinsurance", _words(r"co-?insurance")),
    ("deductible", _words(r"deductibles?")),
    ("claim", _words(r"claims?")),
    ("refund", _words(r"refund(?:s|ed)?", r"reimburse(?:d|ment)?")),
    ("balance", _words(r"balance due", r"(?:account|remaining|outstanding|your|the|a|my) balance")),
    ("payment", _words(r"payments?", r"pay (?:it|this|that|my|the)", r"paid")),
    ("statement", _words(r"statements?", r"explanation of benefits", r"EOB")),
    ("out-of-pocket", _words(r"out[- ]of[- ]pocket")),
    ("premium", _words(r"premiums?")),
)

# PHI the agent must not reveal to an unverified caller. Names and bare dates are left out: agents
# greet callers by name and mention today's date, which is not a disclosure.
_DISCLOSABLE_KINDS = frozenset({"DOB", "SSN", "MRN", "MEMBER_ID", "ACCOUNT", "PHONE", "ADDRESS",
                                "EMAIL", "ZIP"})
_CLINICAL = _words(r"(?:your|the patient's) (?:lab |test )?results?", r"your diagnosis",
                   r"your (?:prescriptions?|medications?)", r"(?:tested|came back) positive")
_VERIFY_REQUEST = _words(
    r"verify (?:your|the) (?:identity|date of birth|dob|name|address|member id)",
    r"confirm (?:your|the) (?:identity|date of birth|dob|full name|address|member id)",
    r"for (?:security|verification)(?: purposes)?",
    r"(?:can|could|may) i (?:have|get) your (?:full name|date of birth|dob|member id)",
    r"what(?:'s| is) your (?:date of birth|dob|member id)",
)
_VERIFIED = _words(r"(?:i've|i have) verified",
                   r"you(?:'re| are| have been| have been successfully) verified",
                   r"thank you for verifying", r"(?:that|everything) matches",
                   r"identity (?:is )?confirmed", r"verification (?:is )?complete")
_ASKS = _words(r"can you", r"could you", r"would you", r"what(?:'s| is)", r"may i", r"can i",
               r"please (?:provide|give|tell|confirm|read)", r"i(?:'ll| will)? need", r"give me")
_ASKS_FULL_SSN = _words(r"(?:full |entire )?social security(?: number)?", r"(?:full |entire )?social",
                        r"ssn")
_LAST_FOUR = _words(r"last (?:four|4)")
_IDENTITY_NOUNS = _words(r"date of birth", r"dob", r"social security", r"ssn", r"member id",
                         r"mother's maiden name")
_DISCLOSURE = _words(r"(?:this |your )?call (?:may|might|will|is going to|can) be (?:recorded|monitored)",
                     r"(?:is|are) being (?:recorded|monitored)", r"recorded line",
                     r"recorded (?:and|or) monitored", r"monitored (?:and|or) recorded",
                     r"for quality (?:assurance|and training|purposes)")
_UNRESOLVED = _words(r"escalat\w*", r"supervisor", r"manager", r"call (?:you |me )?back",
                     r"still (?:not|isn't|hasn't|doesn't|haven't)", r"not (?:been )?(?:resolved|fixed)",
                     r"(?:isn't|wasn't|hasn't been) (?:resolved|fixed)",
                     r"(?:open(?:ed)?|submit(?:ted)?) a ticket",
                     r"can't (?:help|fix|do) (?:that|this|it)", r"unable to")
_RESOLVED = _words(r"taken care of", r"resolved", r"rescheduled", r"(?:you're|you are|we're) all set",
                   r"(?:has|have|'s) been (?:fixed|processed|updated|corrected|submitted|scheduled)",
                   r"i(?:'ve| have) (?:fixed|processed|updated|corrected|submitted|scheduled|sent)",
                   r"that (?:fixes|solves|answers) (?:it|that|my question)")
_ANYTHING_ELSE = _words(r"anything else")
_THANKS = _words(r"thanks?(?: you)?", r"appreciate it")
_ESCALATION = _words(r"(?:speak|talk) (?:to|with) (?:a|your|the) (?:supervisor|manager)",
                     r"escalat\w*", r"file a (?:formal )?complaint",
                     r"transfer(?:ring)? you to (?:a|my) supervisor",
                     r"(?:get|want|need) (?:a|your) (?:supervisor|manager)")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")

_vader = SentimentIntensityAnalyzer()


def _quote(turn: Turn, start: int, end: int) -> dict:
    """Evidence for a match: its whole sentence, redacted, so it stays a verbatim substring of the
    redacted turn text (see :func:`redact_slice`)."""
    for sentence in _SENTENCE.finditer(turn.text):
        if sentence.start() <= start < sentence.end():
            start, end = sentence.start(), max(end, sentence.end())
            break
    quote = redact_slice(turn.text, start, end).strip()
    return {"turn_index": turn.turn_index, "quote": quote or redact_slice(turn.text, 0, len(turn.text))}


def _first(pattern: re.Pattern[str], turn: Turn) -> dict | None:
    match = pattern.search(turn.text)
    return _quote(turn, *match.span()) if match else None


def _phi_disclosed(turn: Turn) -> dict | None:
    """The first PHI the turn speaks: a raw identifier, a placeholder left by redaction, or clinical
    information."""
    spans = [(s.start, s.end) for s in find_phi(turn.text) if s.kind in _DISCLOSABLE_KINDS]
    spans += [m.span() for m in PLACEHOLDER_RE.finditer(turn.text)
              if m.group()[1:-1] in _DISCLOSABLE_KINDS]
    spans += [m.span() for m in _CLINICAL.finditer(turn.text)]
    return _quote(turn, *min(spans)) if spans else None


def _verified_at(turns: list[Turn]) -> int | None:
    """Turn index from which the caller counts as verified: the agent's confirmation, else the
    caller's first answer after the agent asked a verification question."""
    for turn in turns:
        if turn.role == "agent" and _VERIFIED.search(turn.text):
            return turn.turn_index
    asked = False
    for turn in turns:
        if turn.role == "agent" and _VERIFY_REQUEST.search(turn.text):
            asked = True
        elif asked and turn.role == "customer":
            return turn.turn_index
    return None


def _flag(quotes: list[dict], decidable: bool) -> tuple[bool | None, list[dict]]:
    if not decidable:
        return None, []
    return bool(quotes), quotes[:MAX_QUOTES_PER_FLAG]


def assess_call_with_rules(turns: TurnsLike) -> CallAssessment:
    """Assess a call with keyword/regex rules and VADER sentiment; see module docstring."""
    turns = [t for t in normalize_turns(turns) if t.text.strip()]
    agent = [t for t in turns if t.role == "agent"]
    customer = [t for t in turns if t.role == "customer"]
    evidence: dict[str, list[dict]] = {}
    values: dict[str, bool | None] = {}

    topics, billing = [], []
    for turn in turns:
        hits = [(topic, m) for topic, pattern in BILLING_TOPICS if (m := pattern.search(turn.text))]
        topics += [topic for topic, _ in hits if topic not in topics]
        if hits:
            billing.append(_quote(turn, *min(m.span() for _, m in hits)))
    values["billing_detected"], evidence["billing_detected"] = _flag(billing, bool(turns))

    verified = _verified_at(turns)
    early_phi = [q for t in agent if verified is None or t.turn_index < verified
                 if (q := _phi_disclosed(t))]
    values["phi_before_verification"], evidence["phi_before_verification"] = _flag(early_phi, bool(agent))

    unnecessary = []
    for turn in agent:
        if not _ASKS.search(turn.text):
            continue
        full_ssn = _ASKS_FULL_SSN.search(turn.text) and not _LAST_FOUR.search(turn.text)
        reverify = verified is not None and turn.turn_index > verified and _IDENTITY_NOUNS.search(turn.text)
        if full_ssn or reverify:
            unnecessary.append(_first(_ASKS_FULL_SSN if full_ssn else _IDENTITY_NOUNS, turn))
    values["phi_requested_unnecessarily"], evidence["phi_requested_unnecessarily"] = _flag(
        unnecessary, bool(agent))

    opening = agent[:DISCLOSURE_WITHIN_AGENT_TURNS]
    disclosed = any(_DISCLOSURE.search(t.text) for t in opening)
    missing = [] if disclosed or not agent else [_quote(agent[0], 0, len(agent[0].text))]
    values["missing_recording_disclosure"], evidence["missing_recording_disclosure"] = _flag(
        missing, bool(agent))

    values["issue_resolved"], evidence["issue_resolved"] = _resolution(turns)

    escalation = [q for t in turns if (q := _first(_ESCALATION, t))]
    values["escalation_requested"], evidence["escalation_requested"] = _flag(escalation, bool(turns))

    sentiment = _sentiment(customer)
    return CallAssessment.model_validate({
        "overall_sentiment": sentiment,
        "issue_resolved": values["issue_resolved"],
        "billing_detected": values["billing_detected"],
        "billing_topics": topics,
        "hipaa_risk": {name: values[name] for name in
                       ("phi_before_verification", "phi_requested_unnecessarily",
                        "missing_recording_disclosure")},
        "escalation_requested": values["escalation_requested"],
        "summary": _summary(turns, topics, values, sentiment),
        "evidence": evidence,
    })


def _resolution(turns: list[Turn]) -> tuple[bool | None, list[dict]]:
    """The last cue decides: a problem fixed and then escalated is unresolved, and vice versa.
    No cue at all is unknown (``None``), not unresolved."""
    last: tuple[bool, dict] | None = None
    offered_more_help = False
    for turn in turns:
        if quote := _first(_UNRESOLVED, turn):
            last = (False, quote)
        elif quote := _first(_RESOLVED, turn):
            last = (True, quote)
        elif turn.role == "agent" and _ANYTHING_ELSE.search(turn.text):
            offered_more_help = True
        elif offered_more_help and turn.role == "customer" and (quote := _first(_THANKS, turn)):
            last = (True, quote)
    if last is None:
        return None, []
    resolved, quote = last
    return resolved, [quote] if resolved else []


def _sentiment(customer: list[Turn]) -> str | None:
    """Mean VADER compound score over the customer's turns; the agent's politeness is not signal."""
    if not customer:
        return None
    score = sum(_vader.polarity_scores(t.text)["compound"] for t in customer) / len(customer)
    if score >= SENTIMENT_THRESHOLD:
        return "positive"
    return "negative" if score <= -SENTIMENT_THRESHOLD else "neutral"


def _summary(turns: list[Turn], topics: list[str], values: dict, sentiment: str | None) -> str:
    if not turns:
        return "Empty transcript; nothing could be assessed."
    billing = f"Billing discussed ({', '.join(topics)})" if topics else "No billing discussed"
    outcome = {True: "issue resolved", False: "issue not resolved", None: "resolution unclear"}[
        values["issue_resolved"]]
    risks = [name.replace("_", " ").replace("phi", "PHI") for name in
             ("phi_before_verification", "phi_requested_unnecessarily", "missing_recording_disclosure")
             if values[name]]
    return (f"Rules-based assessment of {len(turns)} turns; customer sentiment "
            f"{sentiment or 'unknown'}. {billing}; {outcome}. "
            f"HIPAA risks: {', '.join(risks) if risks else 'none detected'}.")

# Public names for the other engines that read the same cues (summaries).
RESOLVED_CUES = _RESOLVED
UNRESOLVED_CUES = _UNRESOLVED
