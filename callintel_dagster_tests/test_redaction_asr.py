"""Redaction of identifiers as ASR writes them, not as a form would.

The leaks the issue found ("418 willow away", "HP 531 -0427") and their kin: spaced and dashed ids,
digit runs spoken as words, spoken dates, names without a cue (Presidio's spaCy recognizer). And the
other side: amounts, doses, times and years must stay readable.
"""

from __future__ import annotations

import pytest

from callintel_dagster.engines.model_cache import loaded_model_keys
from callintel_dagster.engines.redaction import (
    PLACEHOLDER_RE,
    find_phi,
    redact_call,
    redact_slice,
    redact_text,
)


@pytest.mark.parametrize(("text", "leak"), [
    ("Okay, you live at 418 willow away, and that's on file.", "418 willow away"),
    ("and your member ID is HP 531 -0427.", "531 -0427"),
    ("member number M K 7 7 4 0 2 1 9.", "7 7 4 0"),
    ("my ID is CP551803 and I moved", "CP551803"),
    ("It's 2 1 7, 5 5 5, 0 1 4 3.", "5 5 5"),
    ("the number is two one seven five five five oh one four three", "five five five"),
    ("sure, it's four four one two nine", "four four one"),
    ("I was born March third nineteen eighty", "nineteen eighty"),
    ("my birthday is the fourteenth of July", "fourteenth of July"),
    ("she's at 640 cherry hill, apartment two", "640 cherry"),
    ("Hi, this is Jenny, Harold Baxter's daughter.", "Baxter"),
    ("my wife Angela Reyes was in yesterday", "Angela"),
    ("I live next door to Doris Whitfield and she asked me to call.", "Whitfield"),
    ("Thanks, Priya, I found your chart.", "Priya"),
    ("Teresa Molina, October 30th, 1970.", "Teresa"),
])
def test_asr_shaped_identifiers_are_redacted(text, leak):
    redacted, spans = redact_text(text)
    assert leak not in redacted and spans, redacted
    assert redact_text(redacted)[0] == redacted  # idempotent


@pytest.mark.parametrize("text", [
    "The copay was 40 dollars and the balance is 1,900 dollars.",
    "Take two puffs twice a day and 20 units at night.",
    "We open at 9 30 and close at 5.",
    "Your plan year started in 2024 and you met 250 of it.",
    "Cedar Valley Orthopedics, good morning.",
    "It should arrive in five to seven business days.",
])
def test_amounts_doses_times_and_clinic_names_stay_readable(text):
    assert redact_text(text)[0] == text


def test_typed_cued_spans_win_over_the_bare_id_fallback():
    assert [s.kind for s in find_phi("member ID is ABC123456")] == ["MEMBER_ID"]
    assert [s.kind for s in find_phi("Springfield, IL 62704")] == ["ZIP"]


def test_person_recognizer_loads_once_and_slices_stay_substrings():
    text = "I live next door to Doris Whitfield, member number M K 7 7 4 0 2 1 9."
    redacted, _ = redact_text(text)
    assert redacted.count("[NAME]") == 1 and PLACEHOLDER_RE.search(redacted)
    assert redact_slice(text, 0, len(text)) == redacted
    redact_text("And Doris Whitfield again.")
    assert loaded_model_keys().count("presidio-person") == 1


def test_an_answer_to_an_identity_question_is_redacted_however_asr_spelled_it():
    turns = ["Can I have your full name and date of birth?", "Every six. 19 hundred eighty. Thanks.",
             "Thanks. Can you read me your member number?", "Sure, it's M .E. 8 and the A .R. 6.",
             "Great. What day works for you?", "Friday at 2 is fine, thanks."]
    roles = ["agent", "customer"] * 3
    redacted = [text for text, _ in redact_call(turns, roles)]
    assert not any(leak in redacted[1] for leak in ("six", "19", "eighty")) and "[DOB]" in redacted[1]
    assert not any(leak in redacted[3] for leak in (" 8 ", "6.", ".E.")) and "[MEMBER_ID]" in redacted[3]
    assert redacted[5] == turns[5]  # not an identity question: left alone
    assert [text for text, _ in redact_call(turns, ["agent"] * 6)] == [redact_text(t)[0] for t in turns]


def test_an_answer_is_redacted_after_a_request_without_a_question_mark_and_across_swapped_roles():
    # The request is a bare noun phrase closing the sentence; the reply's year and day stand apart
    # from the month, so no date pattern holds them.
    turns = ["Right, let's sort that out, full name and birth date please.", "Noor Haddad, the 3rd and then 1988."]
    redacted = [text for text, _ in redact_call(turns, ["agent", "customer"])]
    assert "1988" not in redacted[1] and "3rd" not in redacted[1] and "Haddad" not in redacted[1]
    # Diarization put the agent's question on the caller's side and the answer on the agent's.
    swapped = [text for text, _ in redact_call(turns, ["customer", "agent"])]
    assert swapped == redacted


@pytest.mark.parametrize(("text", "leak"), [
    ("Sure, my social's nine oh two, uh, 44 81 19.", "44 81"),
    ("the member number on the card is kx to 7 .3 10.", "7 .3"),
    ("best phone number is for one, 7 7 3 2, 09", "7 7 3 2"),
    ("we have your birthday as june nine nineteen seventy one", "nineteen seventy"),
    ("Yes, I have Dana Cole at 19 maplewod lan, is that current?", "19"),
])
def test_a_value_after_its_cue_is_redacted_however_asr_spelled_it(text, leak):
    redacted, _ = redact_text(text)
    assert leak not in redacted and PLACEHOLDER_RE.search(redacted), redacted


@pytest.mark.parametrize("text", [
    "Member Services, this call may be recorded. What can I do for you?",
    "Can I have your date of birth first, please?",
    "Your member number is on the back of the card, and the copay is 25 dollars.",
    "See you Monday at 930 sharp, and the lab opens at 4 pm.",
])
def test_cues_without_a_value_leave_the_sentence_alone(text):
    assert redact_text(text)[0] == text


def test_an_answer_glued_to_its_question_or_cut_by_a_turn_boundary_is_redacted():
    glued = ("Thanks for holding, can I get your name and date of birth? Marta Diaz, 19 hundred 60, April 2. "
             "Thanks Marta.")
    [(redacted, _)] = redact_call([glued], ["agent"])
    assert not any(leak in redacted for leak in ("19", "60", "April 2", "Diaz")), redacted
    assert "Thanks for holding, can I get your name and date of birth?" in redacted
    cut = ["What's your member ID?", "It's QR 5 5", "0 1. Thanks, I see it, your refill is ready in 2 hours."]
    redacted = [text for text, _ in redact_call(cut, ["agent", "customer", "agent"])]
    assert "5 5" not in redacted[1] and not redacted[2].startswith("0 1"), redacted
    assert redacted[2].endswith("your refill is ready in 2 hours.")  # the agent's own words stay
    greeting = ["Member Services, this call may be recorded.", "I waited about a two hour wait, 3 times."]
    assert [text for text, _ in redact_call(greeting, ["agent", "customer"])] == greeting
