"""Deterministic rules engine filling the same :class:`CallAssessment` as the LLM (no Dagster).

It is the embedded default (no model needed), the fallback when the LLM output is quarantined, and the
safety net under the LLM: rule-detected compliance flags are OR-ed into the model's answer. Every
true flag carries evidence quotes, taken from the *redacted* turn text so stored evidence never holds
PHI and validates against the same transcript the LLM saw.

The rules answer the questions the prompt defines (:data:`~.compliance.FLAG_DEFINITIONS`) with broad
lexicons rather than exact phrases, because callers and agents say the same thing many ways and ASR
mangles some of it. They are role-aware (only the agent can disclose PHI or give the recording
notice), order-aware (PHI counts only before verification; the last outcome decides resolution) and
negation-aware ("this is not about a bill", "no need for a manager").

Detection runs on raw text (it needs the digits to know a date of birth was spoken) and also
recognises redaction placeholders, so the engine gives the same answer on raw or redacted turns.
A flag is ``None`` only when the transcript cannot decide it (e.g. no agent turns at all).

The lexicons were tuned on the ``dev`` part of the evaluation corpus only
(``callintel_dagster/tools/compliance_eval.py``); the ``test`` part scores them.

Every cue is read through a :class:`~.lexicon.Lexicon` chosen by the call's language (the
transcripts' ``language`` column): :data:`ENGLISH` below, ``lexicon_es.SPANISH`` for Spanish calls.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import pandas as pd

from . import lexicon_es
from .compliance import HIPAA_FIELDS, CallAssessment, Turn, TurnsLike, normalize_turns
from .lexicon import Lexicon
from .redaction import PLACEHOLDER_RE, find_phi, redact_slice
from .sentiment import compound

MAX_QUOTES_PER_FLAG = 5
# An agent who has not mentioned recording within its first turns did not disclose it in the sense
# the disclosure is meant: before the caller says anything of substance.
DISCLOSURE_WITHIN_AGENT_TURNS = 3
OPENING_TURNS = 2

_I = re.IGNORECASE
_NUMBER = (r"(?:\d[\d.,]*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty"
           r"|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred)")


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", _I)


BILLING_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bill", _words(r"bill(?:s|ed|ing)?")),
    ("invoice", _words(r"invoices?")),
    ("charge", re.compile(r"(?<!in )(?<!of )\b(?:charge[sd]?|overcharged?|surcharges?)\b", _I)),
    ("copay", _words(r"co-?pays?", r"co-?payments?")),
    ("coinsurance", _words(r"co-?insurance")),
    ("deductible", _words(r"deductibles?", r"yearly amount you pay")),
    ("claim", _words(r"claims?", r"appeal(?:ed|s)?")),
    ("refund", _words(r"refund(?:s|ed)?", r"reimburs\w*", r"pay (?:me|you|them) back", r"reversed?")),
    ("balance", _words(r"balance due", r"(?:account|remaining|outstanding|your|the|a|my) balance",
                       r"owe[ds]?", r"owing", r"collections?", r"late notices?")),
    ("payment", _words(r"payments?", r"pay(?:s|ing)?", r"paid", r"installments?", r"payment plan")),
    ("statement", _words(r"statements?", r"explanation of benefits", r"EOB")),
    ("out-of-pocket", _words(r"out[- ]of[- ](?:my |your |their )?(?:own )?pocket")),
    ("premium", _words(r"premiums?")),
    ("cost", re.compile(r"\b(?:costs?|price[ds]?|pricing|fees?|afford|discounts?|coupons?|allowance"
                        r"|\$\s?\d[\d,.]*|" + _NUMBER + r"(?:[ -]\w+)? (?:dollars?|bucks))\b", _I)),
)
# Topics named by one short, common word (see `_billing`).
_WEAK_BILLING_TOPICS = frozenset({"bill", "payment"})
# "this is not about a bill": a topic named only to rule it out is not billing.
_TOPIC_NEGATED = re.compile(r"(?:\b(?:not|isn't|nothing to do with|not calling)\s+(?:about|regarding|related to"
                            r"|for)?\s*(?:a|an|the|my|your|any)?|\bno(?:\s+[a-z]+){0,2})\s*$", _I)

# --- PHI and verification ---
# PHI the agent must not reveal to an unverified caller. Names and bare dates are left out: agents
# greet callers by name and mention today's date, which is not a disclosure.
_DISCLOSABLE_KINDS = frozenset({"DOB", "SSN", "MRN", "MEMBER_ID", "ACCOUNT", "PHONE", "ADDRESS",
                                "EMAIL", "ZIP", "ID"})
# Identifiers a caller should not have to volunteer before anyone asked who they are.
_VOLUNTEERED_KINDS = frozenset({"SSN", "MRN", "MEMBER_ID", "ACCOUNT", "ID"})
_ID_CUE = re.compile(r"\b(?:id|number|member|social|policy|account|ssn|mrn)\b[^.?!]{0,30}$", _I)
_RESULT_NOUN = (r"(?:results?|biopsy|pathology|x-?rays?|scans?|mri|echo\w*|ultrasound|mammogram|labs?"
                r"|blood ?work|blood tests?|glucose|cholesterol|a ?1 ?c|blood sugar|blood pressure"
                r"|potassium|hemoglobin|test|radiologist|wound)")
_RESULT_VALUE = (r"(?:benign|malignant|cancerous|positive|negative|normal|abnormal|high|low|elevated"
                 r"|good|fine|clear|healing|stable|" + _NUMBER + ")")
# Clinical PHI: results and values, diagnoses, medications and doses, another person's appointments.
_CLINICAL = (
    re.compile(r"\b" + _RESULT_NOUN + r"\b[^.?!]{0,40}?\b(?:came (?:back|down|up)|showed?|shows|confirmed"
               r"|looked|looks|was|were|is)\b[^.?!]{0,30}?\b" + _RESULT_VALUE + r"\b", _I),
    _words(r"diagnosed with", r"(?:his|her|their) diagnosis", r"(?:small |hairline )?fracture",
           r"pneumonia", r"cancer\w*", r"tumou?rs?", r"chemo(?:therapy)?", r"infusions?", r"dialysis",
           r"insulin", r"antibiotics?", r"inhalers?"),
    re.compile(r"\b" + _NUMBER + r"\s+(?:milligrams?|mg|mcg|micrograms?|units?|puffs?|drops?|tablets?"
               r"|pills?|ml)\b", _I),
    _words(r"(?:once|twice|three times|four times) (?:a|per) day", r"(?:increased|raised|doubled|lowered"
           r"|reduced|decreased|changed|upped|stopped) (?:his|her|their|the) \w+"),
    re.compile(r"\b[a-z]+(?:pril|olol|statin|pine|zole|cillin|mycin|oxetine|traline|sone|solone|formin"
               r"|sartan|terol|vent|azepam|prazole|tidine)\b", _I),
    _words(r"(?:his|her|their) (?:next )?(?:appointment|visit|infusion|surgery|procedure|pressure check"
           r"|follow[- ]?up|scan|sessions?)"),
)
_IDENTITY_ITEM = _words(r"date of birth", r"birth ?dates?", r"birthdays?", r"dob", r"born",
                        r"member (?:number|id|ID)", r"id number", r"ID", r"social", r"ssn",
                        # ASR: "remember number", "data of the"; a name asked for opens the check
                        r"\w+member (?:number|id)", r"dat[ae] of (?:birth|the)",
                        r"(?:your|full|patient'?s|the) name", r"name and",
                        r"last (?:four|4)", r"(?:home |street |mailing |pickup )?address",
                        r"who i'?m (?:talking|speaking) (?:to|with)", r"identity", r"permission",
                        r"on (?:your|the) (?:chart|file|account)",
                        r"mother's maiden name")
# A caller never asks for "your date of birth": a "customer" turn asking this is the agent's,
# put on the wrong side by diarization. Not "your name" or "your address": callers ask the agent's
# name and the clinic's address.
_IDENTITY_REQUEST = _words(
    r"(?:your|the patient'?s|the member'?s|his|her) (?:date of birth|birth ?date|birthday|dob|member (?:id|number))",
    r"(?<!my )(?<!my full )name and (?:date of birth|birth ?date|birthday|dob)", r"date of birth for me")
_ASKS = _words(r"can you", r"could you", r"would you", r"what(?:'s| is| are)", r"may i", r"can i",
               r"could i", r"let me (?:first )?(?:ask|get|have)", r"please", r"i(?:'ll| will|'d)? need",
               r"give me", r"tell me", r"read me", r"confirm", r"verify", r"check", r"make sure")
_VERIFIED = _words(r"(?:i've|i have) verified", r"you(?:'re| are| have been) (?:verified|confirmed)",
                   r"thank you for verifying", r"(?:that|it|everything|all) (?:all )?(?:matches|checks out"
                   r"|lines up|is correct|confirms it)", r"(?:that|this)(?:'s| is) all correct",
                   r"identity (?:is )?confirmed", r"verification (?:is )?complete", r"\bconfirmed\b")
_ASKS_FULL_SSN = _words(r"(?:full |entire )?social security(?: number)?", r"(?:full |entire )?social",
                        r"ssn")
_LAST_FOUR = _words(r"last (?:four|4)")
_IDENTITY_NOUNS = _words(r"date of birth", r"dob", r"social security", r"ssn", r"member id",
                         r"mother's maiden name")

# --- recording disclosure: a recording/monitoring verb and the call as its object, in one sentence ---
# ASR hears "recorded" as "reported" or "recorder" on a telephone line; the purpose ("for quality",
# "to help us improve") stands in for the call when ASR loses the noun.
_RECORDING = _words(r"record(?:ed|ing|s)?", r"monitor(?:ed|ing|s)?", r"tap(?:ed|ing)", r"listened to",
                    r"saved", r"recorder", r"report(?:ed|ing|s)?")
# The purpose stands for the call when ASR loses the noun: "recorded for quality" heard as
# "reported forcology".
_CHANNEL = _words(r"calls?", r"line", r"conversation", r"this",
                  r"for\w*\s*(?:quality|training|accuracy|coaching|\w*ology|\w*ality)", r"(?:help us |to )improve",
                  r"coach")
# Unambiguous on their own in the opening, whatever ASR made of the rest of the sentence: the
# organisation ("we") recording, whatever ASR made of the object ("we record these polls").
_RECORDING_OPENING = _words(r"recorded", r"recording", r"monitored", r"monitoring", r"taped", r"record it",
                            r"for quality", r"for training",
                            r"we(?:'re| are| do)? (?:record|monitor|tape|report)\w*")
_NOT = re.compile(r"\b(?:not|never|isn't|aren't|won't)\s+(?:be\s+|being\s+)?$", _I)

# --- escalation: a hand-off to more authority inside the organisation, asked for or offered ---
_ESCALATION = re.compile(
    r"\b(?:(?<!case )(?<!care )supervisors?|(?<!case )(?<!care )managers?|team ?lead(?:er)?s?"
    r"|(?:my|our|your|the) lead\b|boss|director|escalat\w*"
    r"|(?:someone|somebody|anyone|anybody|whoever(?:'s| is)?) (?:above you|higher up|senior|more senior"
    r"|in charge|who runs|with (?:more )?authority)|above you|(?:pharmacist|nurse|person) in charge|charge nurse"
    r"|formal (?:complaint|grievance)|grievance|complaints? team"
    # ASR inserts an article: "whoever's in charge" heard as "be in a charge chair"
    r"|(?:be|is|who's|whoever's|someone|somebody) in (?:a )?charge"
    r"|(?:talk|speak) (?:to|with) (?:\w+\s+){0,3}in (?:a )?charge)\b", _I)
_ESCALATION_NEGATED = re.compile(
    r"\b(?:(?:don't|do not|won't|didn't|doesn't) (?:need|want)|no need for|not asking for|without"
    r"|(?:was|were|am) (?:ready|going|about) to ask for)\b(?:\s+\w+){0,2}\s*$", _I)

# --- resolution ---
# Agent: the outcome was delivered (done, booked, sent, answered) ...
_OUTCOME = _words(
    r"i(?:'ve| have)? (?:just )?(?:moved|booked|cancell?ed|reversed|corrected|updated|sent|mailed"
    r"|emailed|faxed|requested|set you up|opened|saved|resubmitted|submitted|ordered|scheduled|fixed"
    r"|processed|applied|removed|waived|added|changed|called them and got|put you down|refunded)",
    r"(?:has|have|'s) been (?:fixed|processed|updated|corrected|submitted|scheduled|approved|paid|sent"
    r"|moved|booked|reversed|cancell?ed)",
    r"you(?:'re| are) (?:booked|down for|all set|set|good to go|scheduled|covered)",
    r"(?:will|'ll|should) (?:post|arrive|be there|reach you|be ready|be back|have it)",
    r"(?:is|are|it's) (?:on (?:its|their) way|filled|ready|waiting for you|done)",
    r"(?:was|were) (?:paid|approved) in full", r"(?:won't|will not|don't|do not) (?:owe|need to pay)",
    r"(?:can|could) (?:ignore|just walk in)", r"no (?:late )?(?:fee|changes?|appointment needed)",
    r"taken care of", r"resolved", r"rescheduled", r"all set",
    r"that(?:'s| is) (?:right|correct|it)",
    # a booking or an answer the caller can act on: "I've got you in for Tuesday", "you can give her
    # the syrup", "the doctor replied"
    r"i(?:'ve| have) got you (?:in|down|for|booked)", r"(?:replied|answered|did reply|wrote back)",
    r"you can (?:give|take|use|stop|start|keep|pick|eat|drink|go ahead)")
# ... or could not be: the agent cannot act, the matter is pending elsewhere, or is handed up.
_NOT_DONE = _words(
    r"can(?:'t|not| not)", r"(?:i'm|i am|we're|we are) (?:not able|unable)", r"not able to",
    r"unable to", r"(?:don't|do not) have a way", r"no way to", r"only (?:our|the|a) [\w ]{1,20} can",
    r"(?:has|have|needs?) to go through", r"(?:is|are) still (?:under review|pending|being reviewed)",
    r"still under review", r"no decision", r"(?:isn't|is not|aren't) open yet",
    r"waitlist", r"before we can", r"(?:don't|do not) have (?:one|it|that) yet",
    r"(?:someone|they|she|he|the nurse)(?:'ll| will| should| would) (?:call|phone|contact|get back|reach)",
    r"(?:call|phone) you (?:back|when)", r"earliest", r"out (?:today|on leave)",
    r"(?:please )?hold", r"transfer\w*", r"put you through", r"connecting you", r"page")
# Customer: the answer landed ...
_ACKNOWLEDGED = _words(
    r"that (?:answers|clears|helps|makes sense|explains|works|was easy|was painless|is what i needed)",
    r"(?:that's|that is|it's|exactly) (?:all|what|everything) i (?:needed|wanted)", r"got it",
    r"understood", r"perfect", r"great", r"wonderful", r"excellent", r"brilliant", r"awesome",
    r"splendid", r"(?:that's a|what a) relief", r"good news", r"makes sense", r"it works",
    r"you (?:saved|made) my", r"i(?:'ll| will) (?:swing|come|pop|be) (?:by|over|in)",
    r"i(?:'ll| will) (?:let (?:her|him|them) know|tell (?:her|him|them))", r"thanks? a (?:lot|ton|bunch)",
    r"that helps", r"(?:oh )?good", r"lovely", r"cool", r"sweet", r"appreciat\w*")
# ... or did not: the caller leaves complaining, threatening, or still stuck.
_COMPLAINT = _words(
    r"ridiculous", r"unbelievable", r"useless", r"forget it", r"still stuck", r"somewhere else",
    r"report (?:you|this|them)", r"complain\w*", r"writing to", r"thanks? for nothing", r"we'll see",
    r"whatever", r"disgrace\w*", r"don't bother", r"unacceptable", r"go without", r"no appointment at all",
    r"(?:this|that) is (?:a joke|a hassle)", r"(?:so|really|very|just) frustrat\w*", r"so i just (?:wait|go)",
    r"i'm stuck",
    r"same thing i heard", r"hassle")
_THANKS = _words(r"thanks?(?: you)?", r"appreciate it", r"cheers")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")

# Sentiment: the caller's frustration with the service outweighs a curt thanks at the end; warmth
# shows as enthusiasm in the closing turns, not as the politeness every call ends with.
_FRUSTRATION = _words(
    r"(?:second|third|fourth) time", r"(?:two|three|four|five|\d+) (?:calls|times)", r"runaround",
    r"nobody (?:told|called|did|can)", r"never (?:showed|came|got|called)", r"can't afford", r"sick of",
    r"fed up", r"done explaining", r"you people", r"answer for", r"still (?:shaking|getting|waiting)",
    r"not paying", r"outrageous", r"annoying", r"frustrat\w*", r"not impressed", r"a joke",
    r"(?:should|shouldn't) (?:have|be)", r"in pain")
_ENTHUSIASM = re.compile(
    r"!|\b(?:so (?:much|clearly|quickly|kind|helpful)|very much|a lot|a ton|a bunch|wonderful|great"
    r"|perfect|lovely|brilliant|awesome"
    r"|excellent|splendid|fantastic|amazing|relief|bless|appreciat\w*|really (?:kind|helpful)|saved me"
    r"|made my day|good news|feel (?:much |a lot )?better|sweet|cool)\b", _I)
# A closing turn this positive is warm whatever its words. High, because VADER reads ASR's garbled
# words at face value ("Free name, okay, good" for "Three days, okay, good" scores 0.80).
ENTHUSIASTIC_VADER = 0.85
NEGATIVE_MEAN = -0.2

ENGLISH = Lexicon(
    language="en", billing_topics=BILLING_TOPICS, topic_negated=_TOPIC_NEGATED, id_cue=_ID_CUE,
    clinical=_CLINICAL, identity_item=_IDENTITY_ITEM, identity_request=_IDENTITY_REQUEST, asks=_ASKS, verified=_VERIFIED,
    asks_full_ssn=_ASKS_FULL_SSN, last_four=_LAST_FOUR, identity_nouns=_IDENTITY_NOUNS, recording=_RECORDING,
    channel=_CHANNEL, recording_opening=_RECORDING_OPENING, not_=_NOT, escalation=_ESCALATION,
    escalation_negated=_ESCALATION_NEGATED, outcome=_OUTCOME, not_done=_NOT_DONE, acknowledged=_ACKNOWLEDGED,
    complaint=_COMPLAINT, thanks=_THANKS, frustration=_FRUSTRATION, enthusiasm=_ENTHUSIASM,
)
LEXICONS: dict[str, Lexicon] = {"en": ENGLISH, "es": lexicon_es.SPANISH}
DEFAULT_LANGUAGE = "en"


def lexicon_for(language: str | None) -> Lexicon:
    """The lexicon of a Whisper language code; English for unknown or missing languages (a call in a
    language without a lexicon is assessed with the English one, as before languages were detected)."""
    return LEXICONS.get(language or DEFAULT_LANGUAGE, ENGLISH)


def call_language(turns: pd.DataFrame | Sequence[Mapping] | Sequence[Turn]) -> str:
    """The language stored with a call's transcript turns (the ``language`` column); English when the
    turns carry none (rows written before detection, plain dicts)."""
    records = turns["language"].dropna().tolist() if isinstance(turns, pd.DataFrame) and "language" in turns else [
        record.get("language") for record in turns if isinstance(record, Mapping)]
    return next((str(code) for code in records if isinstance(code, str) and code), DEFAULT_LANGUAGE)


def _quote(turn: Turn, start: int, end: int) -> dict:
    """Evidence for a match: its whole sentence, redacted, so it stays a verbatim substring of the
    redacted turn text (see :func:`redact_slice`)."""
    for sentence in _SENTENCE.finditer(turn.text):
        if sentence.start() <= start < sentence.end():
            start, end = sentence.start(), max(end, sentence.end())
            break
    quote = redact_slice(turn.text, start, end).strip()
    return {"turn_index": turn.turn_index, "quote": quote or redact_slice(turn.text, 0, len(turn.text))}


def _first(pattern: re.Pattern[str], turn: Turn, negation: re.Pattern[str] | None = None) -> dict | None:
    for match in pattern.finditer(turn.text):
        if negation is None or not negation.search(turn.text[max(0, match.start() - 40):match.start()]):
            return _quote(turn, *match.span())
    return None


def _sentences(turn: Turn):
    return _SENTENCE.finditer(turn.text)


def _phi_disclosed(turn: Turn, kinds: frozenset[str], clinical: bool, lex: Lexicon, cued_ids: bool = False) -> dict | None:
    """The first PHI of ``kinds`` the turn speaks (a raw identifier or a placeholder left by
    redaction), or clinical information when ``clinical``. With ``cued_ids`` a bare number-bearing
    ``ID`` counts only after an identity cue ("my social is", "number"): ASR turns a caller's
    amounts and mumbles into digit runs."""
    found = [(s.start, s.end, s.kind) for s in find_phi(turn.text)]
    found += [(*m.span(), m.group()[1:-1]) for m in PLACEHOLDER_RE.finditer(turn.text)]
    spans = [(start, end) for start, end, kind in found if kind in kinds
             and (kind != "ID" or not cued_ids or lex.id_cue.search(turn.text[max(0, start - 40):start]))]
    if clinical:
        spans += [m.span() for pattern in lex.clinical for m in pattern.finditer(turn.text)]
    return _quote(turn, *min(spans)) if spans else None


def _verification_requested(turn: Turn, lex: Lexicon) -> bool:
    """A sentence asking for identity details ("Name and birth date?", "can you confirm your
    member number"), or naming them without giving any value (ASR drops the "need" of "I'll need
    your date of birth"). A phone number alone is a look-up, not a verification. A "customer" turn
    asks only with a request no caller makes of themself (``identity_request``, "your date of birth"):
    that is the agent's question, put on the caller's side by diarization."""
    if turn.role != "agent" and not lex.identity_request.search(turn.text):
        return False
    return any(
        lex.identity_item.search(s.group()) and (lex.asks.search(s.group()) or s.group().rstrip().endswith("?")
                                              or not _phi_disclosed(Turn(0, "", s.group()), _DISCLOSABLE_KINDS,
                                                                    clinical=False, lex=lex))
        for s in _sentences(turn))


def _before_request(turn: Turn, lex: Lexicon) -> Turn:
    """The agent's turn up to its first identity question: what follows it in the same turn is the
    caller's answer, glued on where diarization missed the hand-over."""
    for sentence in _sentences(turn):
        if _verification_requested(Turn(turn.turn_index, turn.role, sentence.group()), lex):
            return dataclasses.replace(turn, text=turn.text[:sentence.end()])
    return turn


def _verified_at(turns: list[Turn], lex: Lexicon) -> int | None:
    """Turn index from which the caller counts as verified: the other party's first answer after
    identity details were asked for, or the agent's confirmation, whichever comes first."""
    asker = None
    for turn in turns:
        if turn.role == "agent" and lex.verified.search(turn.text):
            return turn.turn_index
        if _verification_requested(turn, lex):
            asker = turn.role
        elif asker is not None and turn.role != asker:
            return turn.turn_index
    return None


def _first_request(turns: list[Turn], lex: Lexicon) -> int | None:
    return next((t.turn_index for t in turns if _verification_requested(t, lex)), None)


def _flag(quotes: list[dict], decidable: bool) -> tuple[bool | None, list[dict]]:
    if not decidable:
        return None, []
    return bool(quotes), quotes[:MAX_QUOTES_PER_FLAG]


def assess_call_with_rules(turns: TurnsLike, language: str | None = None) -> CallAssessment:
    """Assess a call with lexicon/regex rules and VADER sentiment; see module docstring. The lexicon
    is that of ``language``, by default the call's own (the transcripts' ``language`` column)."""
    if not isinstance(turns, pd.DataFrame):
        turns = list(turns)
    lex = lexicon_for(language or call_language(turns))
    turns = [t for t in normalize_turns(turns) if t.text.strip()]
    agent = [t for t in turns if t.role == "agent"]
    customer = [t for t in turns if t.role == "customer"]
    evidence: dict[str, list[dict]] = {}
    values: dict[str, bool | None] = {}

    topics, billing = _billing(turns, lex)
    values["billing_detected"], evidence["billing_detected"] = _flag(billing, bool(turns))

    verified, requested = _verified_at(turns, lex), _first_request(turns, lex)
    early_phi = []
    for turn in turns:
        if verified is not None and turn.turn_index >= verified:
            break
        if turn.role == "agent":
            quote = _phi_disclosed(_before_request(turn, lex), _DISCLOSABLE_KINDS, clinical=True, lex=lex)
        elif requested is None or turn.turn_index < requested:
            quote = _phi_disclosed(turn, _VOLUNTEERED_KINDS, clinical=False, lex=lex, cued_ids=True)
        else:
            quote = None
        if quote:
            early_phi.append(quote)
    values["phi_before_verification"], evidence["phi_before_verification"] = _flag(early_phi, bool(agent))

    unnecessary = []
    for turn in agent:
        if not lex.asks.search(turn.text):
            continue
        full_ssn = lex.asks_full_ssn.search(turn.text) and not lex.last_four.search(turn.text)
        reverify = verified is not None and turn.turn_index > verified and lex.identity_nouns.search(turn.text)
        if full_ssn or reverify:
            unnecessary.append(_first(lex.asks_full_ssn if full_ssn else lex.identity_nouns, turn))
    values["phi_requested_unnecessarily"], evidence["phi_requested_unnecessarily"] = _flag(
        unnecessary, bool(agent))

    # The call's opening counts whoever diarization says spoke it: a swapped role must not turn a
    # disclosure into a missing one.
    opening = {t.turn_index: t for t in [*agent[:DISCLOSURE_WITHIN_AGENT_TURNS], *turns[:OPENING_TURNS]]}
    disclosed = any(_discloses_recording(t, lex) for t in opening.values())
    missing = [] if disclosed or not agent else [_quote(agent[0], 0, len(agent[0].text))]
    values["missing_recording_disclosure"], evidence["missing_recording_disclosure"] = _flag(
        missing, bool(agent))

    values["issue_resolved"], evidence["issue_resolved"] = _resolution(turns, lex)

    escalation = [q for t in turns if (q := _first(lex.escalation, t, lex.escalation_negated))]
    values["escalation_requested"], evidence["escalation_requested"] = _flag(escalation, bool(turns))

    sentiment = _sentiment(customer, lex)
    return CallAssessment.model_validate({
        "overall_sentiment": sentiment,
        "issue_resolved": values["issue_resolved"],
        "billing_detected": values["billing_detected"],
        "billing_topics": topics,
        "hipaa_risk": {name: values[name] for name in HIPAA_FIELDS},
        "escalation_requested": values["escalation_requested"],
        "summary": _summary(turns, topics, values, sentiment),
        "evidence": evidence,
    })


def _billing(turns: list[Turn], lex: Lexicon) -> tuple[list[str], list[dict]]:
    """Billing topics and their quotes. A call whose only billing word is one short, common word
    heard once ("paid", "bill") is not billing: on a telephone line that is as often ASR mishearing
    "recorded", "stay" or "thinner"; a call about money names it more than once."""
    topics, quotes, hit_count = [], [], 0
    for turn in turns:
        hits = [(topic, m) for topic, pattern in lex.billing_topics for m in pattern.finditer(turn.text)
                if not lex.topic_negated.search(turn.text[max(0, m.start() - 40):m.start()])]
        hit_count += len(hits)
        topics += [topic for topic, _ in hits if topic not in topics]
        if hits:
            quotes.append(_quote(turn, *min(m.span() for _, m in hits)))
    if hit_count == 1 and topics[0] in _WEAK_BILLING_TOPICS:
        return [], []
    return topics, quotes


def _discloses_recording(turn: Turn, lex: Lexicon) -> bool:
    if any(not lex.not_.search(turn.text[:m.start()]) for m in lex.recording_opening.finditer(turn.text)):
        return True
    return any(
        lex.channel.search(s.group()) and any(not lex.not_.search(s.group()[:m.start()])
                                           for m in lex.recording.finditer(s.group()))
        for s in _sentences(turn))


def _resolution(turns: list[Turn], lex: Lexicon) -> tuple[bool | None, list[dict]]:
    """Decided from how the call ended, in this order of authority:

    1. the agent's last outcome sentence: delivered (done, booked, sent, answered) is resolved; could
       not act, pending elsewhere or handed up to someone else is not. A sentence with both ("I've
       sent it to her, she'll call you") is pending.
    2. with no agent outcome, the caller's last reaction: an acknowledgement ("that clears it up")
       is resolved; a complaint, a threat to complain or "still stuck" is not.
    3. a caller who only says thanks after being helped counts as resolved;
    4. an outcome sentence under either role label (:func:`_any_role_outcome`).
    ``None`` only when the call gives none of these signals.
    """
    agent_last: tuple[bool, dict] | None = None
    customer_last: tuple[bool, dict] | None = None
    thanks: dict | None = None
    delighted_after = False  # the caller's last reaction was delight after the agent's last "cannot"
    for turn in turns:
        for sentence in _sentences(turn):
            text = sentence.group()
            span = (sentence.start(), sentence.end())
            if turn.role == "agent":
                not_done = lex.not_done.search(text) or _first(lex.escalation, Turn(0, "", text), lex.escalation_negated)
                if not_done:
                    agent_last, delighted_after = (False, _quote(turn, *span)), False
                elif lex.outcome.search(text):
                    agent_last, delighted_after = (True, _quote(turn, *span)), False
            elif turn.role == "customer":
                if lex.complaint.search(text):
                    customer_last, delighted_after = (False, _quote(turn, *span)), False
                elif lex.acknowledged.search(text):
                    customer_last = (True, _quote(turn, *span))
                    delighted_after = bool(lex.enthusiasm.search(text) and agent_last and not agent_last[0])
                elif lex.thanks.search(text):
                    thanks = _quote(turn, *span)
    # ASR flips "can" and "can't" on a telephone line; a caller who answers the agent's last word
    # with delight ("Wonderful, that's a big help") was helped.
    if agent_last and not agent_last[0] and customer_last and customer_last[0] and delighted_after:
        agent_last = customer_last
    decided = agent_last or customer_last or ((True, thanks) if thanks else None) or _any_role_outcome(turns, lex)
    if decided is None:
        return None, []
    resolved, quote = decided
    return resolved, [quote] if resolved else []


def _any_role_outcome(turns: list[Turn], lex: Lexicon) -> tuple[bool, dict] | None:
    """The last outcome sentence whoever said it: diarization sometimes swaps the roles, and a call
    whose agent outcomes landed under the customer's label still ended one way or the other."""
    last = None
    for turn in turns:
        for sentence in _sentences(turn):
            if lex.not_done.search(sentence.group()):
                last = (False, _quote(turn, sentence.start(), sentence.end()))
            elif lex.outcome.search(sentence.group()):
                last = (True, _quote(turn, sentence.start(), sentence.end()))
    return last


def _sentiment(customer: list[Turn], lex: Lexicon) -> str | None:
    """The customer's sentiment over the call, from the customer's turns only (the agent's politeness
    is no signal): negative when the caller voices frustration with the service or demands someone
    above the agent (in more than one turn, or once without a warm close), or is negative on average
    (VADER); positive when the closing turns are enthusiastic; neutral otherwise, which is how a
    matter-of-fact "okay, thanks" call ends."""
    if not customer:
        return None
    upset = [bool(lex.frustration.search(t.text) or lex.complaint.search(t.text)
                  or _first(lex.escalation, t, lex.escalation_negated)) for t in customer]
    scores = [compound(t.text, lex.language) for t in customer]
    warm_close = any((lex.enthusiasm.search(t.text) or score >= ENTHUSIASTIC_VADER) and not angry
                     for t, score, angry in list(zip(customer, scores, upset, strict=True))[-2:])
    frustrated = sum(upset)
    if frustrated > 1 or (frustrated and not warm_close) or sum(scores) / len(scores) <= NEGATIVE_MEAN:
        return "negative"
    return "positive" if warm_close else "neutral"


def _summary(turns: list[Turn], topics: list[str], values: dict, sentiment: str | None) -> str:
    if not turns:
        return "Empty transcript; nothing could be assessed."
    billing = f"Billing discussed ({', '.join(topics)})" if topics else "No billing discussed"
    outcome = {True: "issue resolved", False: "issue not resolved", None: "resolution unclear"}[
        values["issue_resolved"]]
    risks = [name.replace("_", " ").replace("phi", "PHI") for name in HIPAA_FIELDS if values[name]]
    return (f"Rules-based assessment of {len(turns)} turns; customer sentiment "
            f"{sentiment or 'unknown'}. {billing}; {outcome}. "
            f"HIPAA risks: {', '.join(risks) if risks else 'none detected'}.")

# Public names for the other engines that read the same cues (summaries).
RESOLVED_CUES = _OUTCOME
UNRESOLVED_CUES = _NOT_DONE
