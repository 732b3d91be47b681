"""The rules engine on wording it was not written for, and the evaluation corpus and its split.

The calls below are phrased the way the issue's illustrations are, not like the corpus or the demo
scripts; the corpus tests check the evaluation discipline (size, variety, fixed disjoint split) and
the scoring code, not the figures, which `make bench` reports.
"""

from __future__ import annotations

import pytest

from callintel_dagster.engines.compliance import (
    FLAG_DEFINITIONS,
    SYSTEM_PROMPT,
    CallAssessment,
)
from callintel_dagster.engines.rules import assess_call_with_rules
from callintel_dagster.tools import compliance_eval as ce


def _call(*lines: str) -> list[dict]:
    """``"A: ..."`` / ``"C: ..."`` lines as turns."""
    return [{"turn_index": i, "role": "agent" if line[0] == "A" else "customer", "text": line[3:]}
            for i, line in enumerate(lines)]


OPENING = "A: Northwind Clinic, we record calls to improve our service. How can I help?"


@pytest.mark.parametrize("outcome", [
    "A: Thanks, you're verified. Your refund will post in three days.",
    "A: Thanks, you're verified. I've moved you to Friday at two.",
    "A: Thanks, you're verified. The lab fee is your share until you reach the deductible.",
])
def test_a_resolution_stated_as_an_outcome_is_resolved(outcome):
    result = assess_call_with_rules(_call(
        OPENING, "C: I have a question about my visit.", "A: Sure, your name and date of birth?",
        "C: Ann Lee, May 2nd, 1970.", outcome, "C: Okay, that clears it up."))
    assert result.issue_resolved is True and result.evidence.issue_resolved


def test_an_unresolved_call_ending_in_a_complaint_is_decided_not_null():
    result = assess_call_with_rules(_call(
        OPENING, "C: My claim was denied again.", "A: Your name and birth date please?",
        "C: Ann Lee, May 2nd, 1970.", "A: I'm unable to change a denial from here.",
        "C: Then I'll complain to the state insurance department."))
    assert result.issue_resolved is False


@pytest.mark.parametrize("disclosure", [
    "A: Maple Health, this line is monitored. How can I help?",
    "A: Maple Health. We record calls to improve our service.",
    "A: Maple Health, heads up, this conversation is being taped.",
])
def test_recording_disclosures_in_other_words(disclosure):
    result = assess_call_with_rules(_call(disclosure, "C: Hi, what are your hours?",
                                          "A: Eight to five.", "C: Thanks."))
    assert result.hipaa_risk.missing_recording_disclosure is False


@pytest.mark.parametrize("disclosure", [
    # as ASR writes them on a telephone line: the verb or the object misheard
    "A: Alder Health, we tape all of these chats. How can I help?",
    "A: Alder Health pharmacy line, reported forth training. How can I help?",
    "A: Alder Health, we're monitoring, how can I help?",
])
def test_recording_disclosures_as_asr_writes_them(disclosure):
    result = assess_call_with_rules(_call(disclosure, "C: Hi, is my refill in?", "A: Yes.", "C: Thanks."))
    assert result.hipaa_risk.missing_recording_disclosure is False


def test_medical_records_are_not_a_recording_disclosure():
    result = assess_call_with_rules(_call("A: Maple Health.", "C: Hi, I need my records.",
                                          "A: Your medical records need a signed release form.", "C: Okay."))
    assert result.hipaa_risk.missing_recording_disclosure is True


@pytest.mark.parametrize("disclosure", [
    "A: Let me see. Her biopsy came back benign, nothing to worry about.",
    "A: Let me see. The doctor raised her metformin to 1000 milligrams twice a day.",
    "A: Let me see. He was diagnosed with shingles last week.",
])
def test_clinical_phi_told_to_an_unverified_relative(disclosure):
    result = assess_call_with_rules(_call(
        OPENING, "C: Hi, I'm calling for my neighbour, she asked me to check on her results.", disclosure,
        "C: Thank you, I'll tell her."))
    assert result.hipaa_risk.phi_before_verification is True
    assert [q.turn_index for q in result.evidence.phi_before_verification] == [2]


def test_clinical_information_after_verification_is_fine():
    result = assess_call_with_rules(_call(
        OPENING, "C: I'm calling for my results.", "A: Can you confirm your date of birth and address?",
        "C: May 2nd, 1970, 12 Elm Street.", "A: Thanks. Your biopsy came back benign.", "C: Great."))
    assert result.hipaa_risk.phi_before_verification is False


def test_an_ssn_volunteered_before_verification_counts_but_not_one_given_when_asked():
    volunteered = assess_call_with_rules(_call(
        OPENING, "C: My social is 123-45-6789, I need a new card.", "A: Sure, your name and birth date?",
        "C: Ann Lee, May 2nd, 1970.", "A: Thanks, a card is on its way."))
    assert volunteered.hipaa_risk.phi_before_verification is True
    assert "[SSN]" in volunteered.evidence.phi_before_verification[0].quote
    asked = assess_call_with_rules(_call(
        OPENING, "C: I need a new card.", "A: Sure, can you give me your member ID?",
        "C: It's member ID XK 55 1203.", "A: Thanks, a card is on its way."))
    assert asked.hipaa_risk.phi_before_verification is False


def test_an_identity_request_as_asr_writes_it_still_counts_and_a_glued_answer_is_not_a_disclosure():
    # "date of birth" heard as "dater the birth", "member number" as "remember number"; the caller's
    # answer lands in the agent's turn after the question (missed hand-over).
    result = assess_call_with_rules(_call(
        OPENING, "C: I need a copy of my lab order.",
        "A: Sure. Could I get your name? Dater the birth and remember number. Vic Ortiz, 4 4 7 1 9 0 2.",
        "C: That's me.", "A: Thanks, you're confirmed. I've sent the order to your portal."))
    assert result.hipaa_risk.phi_before_verification is False
    volunteered = assess_call_with_rules(_call(
        OPENING, "C: Hi, my social is for one eight, 22, 90 31, I need to update my address.",
        "A: Sure, can I get your name first?", "C: Vic Ortiz.", "A: Thanks. Updated."))
    assert volunteered.hipaa_risk.phi_before_verification is True


def test_an_identity_check_counts_when_diarization_swapped_who_asked_and_who_answered():
    # The agent's question sits on the caller's side and the caller's answer on the agent's: the
    # answer is not the agent disclosing a date of birth before verifying anyone.
    result = assess_call_with_rules(_call(
        OPENING, "A: Hello, I need help with a referral.", "C: Sure, name and date of birth for me.",
        "A: Omar Fitch, June 4th, 1979.", "C: Thanks. The referral went to the clinic yesterday."))
    assert result.hipaa_risk.phi_before_verification is False
    # A caller asking the agent's name and the clinic's address asks for no identity details.
    caller_asks = assess_call_with_rules(_call(
        OPENING, "C: Hi, what's your name and your address, please?",
        "A: I'm Sam, at 12 Elm Street. Your date of birth is on file as May 2nd, 1970.",
        "C: Okay. Can you move my visit?", "A: Sure, can I have your name and date of birth first?",
        "C: Omar Fitch, June 4th, 1979.", "A: Thanks, it's moved to Monday."))
    assert caller_asks.hipaa_risk.phi_before_verification is True


@pytest.mark.parametrize(("line", "expected"), [
    ("C: Let me talk to the doctor in charge today.", True),
    ("A: I'll get my manager on the line for you.", True),
    ("C: Put someone above you on the phone.", True),
    ("A: I'm opening a formal grievance for you.", True),
    ("C: No need for a manager, I just want the form.", False),
    ("C: I don't want a supervisor, just the fax number.", False),
])
def test_escalation_offered_or_demanded_and_negated(line, expected):
    result = assess_call_with_rules(_call(OPENING, "C: My form was lost.", line, "A: Understood."))
    assert result.escalation_requested is expected


@pytest.mark.parametrize(("line", "expected"), [
    ("C: To be clear, this is not about a bill, I need a referral.", False),
    ("C: Why is the price of my inhaler 300 dollars now?", True),
    ("C: I owe them money after my surgery and don't know why.", True),
])
def test_billing_with_negated_and_indirect_mentions(line, expected):
    result = assess_call_with_rules(_call(OPENING, line, "A: Let me look into that."))
    assert result.billing_detected is expected


def test_a_furious_call_ending_in_a_curt_thanks_is_negative():
    result = assess_call_with_rules(_call(
        OPENING, "C: This is the third time I'm calling, you people keep losing my paperwork!",
        "A: I'm sorry, I've re-sent it.", "C: Fine. Thanks."))
    assert result.overall_sentiment == "negative"


def test_prompt_states_the_same_definitions_the_rules_implement():
    for name, definition in FLAG_DEFINITIONS.items():
        assert definition in SYSTEM_PROMPT, name
    assert "diagnoses" in CallAssessment.model_json_schema()["$defs"]["HipaaRisk"]["properties"][
        "phi_before_verification"]["description"]


# --- corpus and split ------------------------------------------------------------------------------

def test_corpus_is_large_varied_and_consistent():
    scripts = ce.load_corpus()
    assert len(scripts) >= 60
    assert len({s.agent_id for s in scripts}) >= 4 and len({s.body["customer"]["voice"] for s in scripts}) >= 8
    for flag in ce.SCORED_FLAGS:
        positives = [s for s in scripts if s.body["expected"][flag]]
        assert 5 <= len(positives) < len(scripts), flag
    for script in scripts:
        spoken = " ".join(turn["text"] for turn in script.transcript())
        assert all(phi["text"] in spoken for phi in script.body["phi"]), script.name


def test_split_is_fixed_by_the_seed_disjoint_and_covers_every_flag():
    names = [s.name for s in ce.load_corpus()]
    parts = ce.split(names)
    assert parts == ce.split(list(reversed(names))) and parts != ce.split(names, seed=ce.SPLIT_SEED + 1)
    test = {n for n, p in parts.items() if p == "test"}
    assert len(test) == round(len(names) * ce.TEST_SHARE) and set(parts) == set(names)
    for part in ("dev", "test"):
        scripts = ce.corpus_part(part)
        for flag in ce.SCORED_FLAGS:
            assert any(s.body["expected"][flag] for s in scripts), (part, flag)


def test_score_counts_nulls_and_sentiment():
    truth = {"a": {"issue_resolved": True, "billing_detected": True, "overall_sentiment": "negative"},
             "b": {"issue_resolved": False, "billing_detected": False, "overall_sentiment": "neutral"}}
    predicted = {"a": {"issue_resolved": None, "billing_detected": True, "overall_sentiment": "negative"},
                 "b": {"issue_resolved": False, "billing_detected": True, "overall_sentiment": "positive"}}
    scores = ce.score(predicted, truth)
    assert scores["issue_resolved_null_rate"] == 0.5 and scores["sentiment_accuracy"] == 0.5
    assert scores["per_flag"]["billing_detected"]["precision"] == 0.5
    assert scores["per_flag"]["issue_resolved"]["recall"] == 0.0


def test_text_evaluation_and_misses_use_the_given_assessor():
    def undecided(turns) -> CallAssessment:
        answer = assess_call_with_rules(turns).model_dump()
        answer["issue_resolved"], answer["evidence"]["issue_resolved"] = None, []
        return CallAssessment.model_validate(answer)

    assert ce.text_evaluation("dev", undecided)["issue_resolved_null_rate"] == 1.0
    assert any("issue_resolved expected" in line for line in ce.misses("dev", undecided))


def test_transcribed_redaction_recall_counts_words_that_still_reveal_the_identifier():
    truth = {"c1": {"turns": [{"text": "You live at 418 Willow Lane, right?"}],
                    "phi": [{"kind": "ADDRESS", "text": "418 Willow Lane"}]}}
    leaked = ce.transcribed_redaction_recall(truth, {"c1": ["You live at 418 willow away, right?"]})
    assert leaked["recall"] == 0.0 and leaked["tokens"] == 2  # "away" reveals nothing
    redacted = ce.transcribed_redaction_recall(truth, {"c1": ["You live at [ADDRESS] away, right?"]})
    assert redacted["recall"] == 1.0 and redacted["tokens"] == 1  # one placeholder for three words
    partly = ce.transcribed_redaction_recall(truth, {"c1": ["You live at [ADDRESS] Lane, right?"]})
    assert partly["recall"] == 0.5


def test_transcription_cache_key_follows_audio_and_settings(tmp_path):
    import dataclasses

    from callintel_dagster.engines.asr import AsrConfig
    from callintel_dagster.engines.diarize import DiarizationConfig

    audio, other = tmp_path / "a.wav", tmp_path / "b.wav"
    audio.write_bytes(b"RIFF one")
    other.write_bytes(b"RIFF two")
    asr, diarization = AsrConfig(), DiarizationConfig()
    key = ce.transcription_key(audio, asr, diarization)
    assert key == ce.transcription_key(audio, AsrConfig(), DiarizationConfig())
    assert key != ce.transcription_key(other, asr, diarization)
    assert key != ce.transcription_key(audio, dataclasses.replace(asr, beam_size=5), diarization)
    assert key != ce.transcription_key(audio, asr, dataclasses.replace(diarization, num_speakers=3))


def _cached_words(lines: list[tuple[str, str]]) -> tuple[list[dict], list[dict], float]:
    """A cached entry's words (0.3 s each) and speaker turns for (speaker, text) lines, and its length."""
    words, speakers, clock = [], [], 0.0
    for speaker, text in lines:
        start = clock
        for token in text.split():
            words.append({"start": clock, "end": clock + 0.3, "text": token, "probability": 0.9})
            clock += 0.3
        speakers.append({"start": start, "end": clock, "speaker": speaker})
        clock += 0.2
    return words, speakers, clock


def test_cached_audio_evaluation_replays_roles_redaction_and_rules():
    # Cached ASR words and speaker turns of one call; the caller speaks first (greeting lost).
    lines = [("S0", "Hi, my bill says I owe 90 dollars for a visit my plan covers."),
             ("S1", "I'm sorry to hear that. What's your member number?"), ("S0", "It's QZ 4 4 1 8 2 7."),
             ("S1", "Thanks, you're verified. I've reversed the charge, you owe nothing."), ("S0", "Great, thanks!")]
    words, speakers, clock = _cached_words(lines)
    expected = {"billing_detected": True, "issue_resolved": True, "phi_before_verification": False,
                "missing_recording_disclosure": True, "escalation_requested": False, "overall_sentiment": "positive"}
    truth = {"expected": expected, "phi": [{"kind": "MEMBER_ID", "text": "QZ 4 4 1 8 2 7"}],
             "turns": [{"text": text} for _, text in lines]}
    entry = {"truth": truth, "duration_s": clock, "words": words, "speakers": speakers}
    turns = ce.replay_turns(entry)
    assert [t["role"] for t in turns] == ["customer", "agent", "customer", "agent", "customer"]
    assert "4 4 1" not in turns[2]["text"] and ce.PLACEHOLDER_RE.search(turns[2]["text"])
    result = ce.cached_audio_evaluation({"call": entry})
    assert result["calls"] == 1 and result["flags"]["sentiment_accuracy"] == 1.0
    assert {flag: s["f1"] for flag, s in result["flags"]["per_flag"].items() if s["support"]} == {
        "billing_detected": 1.0, "issue_resolved": 1.0, "missing_recording_disclosure": 1.0}
    assert result["redaction_as_transcribed"]["recall"] == 1.0
    assert ce.audio_misses({"call": entry}) == []
    # A spoken PHI word the redactor did not catch is on the to-do list, with the words around it.
    leaky = {**entry, "truth": {**truth, "phi": [*truth["phi"], {"kind": "NAME", "text": "Great"}]}}
    assert ce.audio_misses({"call": leaky}) == [
        "call: NAME 'Great,' stored as 'Great,' in clear: ... reversed the charge, you owe nothing. Great, thanks! ..."]
    assert ce.cached_audio_evaluation({"call": leaky})["redaction_as_transcribed"]["per_kind"]["NAME"] == {
        "recall": 0.0, "tokens": 1}


def test_a_cached_call_is_replayed_in_the_language_it_was_heard_in():
    """`--language es --through-audio`: a cached entry keeps the language detected when it was
    transcribed, and the replay reads it with that language's lexicon; older entries are English."""
    lines = [("S0", "Oficina de cobros, buenas tardes."),
             ("S1", "Me cobraron dos veces el mismo cargo en la factura de marzo.")]
    words, speakers, clock = _cached_words(lines)
    entry = {"duration_s": clock, "words": words, "speakers": speakers, "language": "es"}
    from callintel_dagster.engines.rules import assess_call_with_rules

    spanish = ce.replay_turns(entry)
    assert {t["language"] for t in spanish} == {"es"}
    assert ce.assessment_flags(assess_call_with_rules(spanish))["billing_detected"] is True
    english = ce.replay_turns({k: v for k, v in entry.items() if k != "language"})
    assert {t["language"] for t in english} == {"en"}
    assert ce.assessment_flags(assess_call_with_rules(english))["billing_detected"] is not True
