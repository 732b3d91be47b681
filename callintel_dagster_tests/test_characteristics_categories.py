"""Call characteristics, QA categories (YAML rules) and audio PHI redaction, on synthetic calls whose
expected values are computed by hand."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
from callintel_dagster.engines.audio_redaction import (
    TONE_AMPLITUDE,
    phi_word_spans,
    redact_audio,
    write_redacted_copy,
    write_redacted_stream,
)
from callintel_dagster.engines.categories import (
    HEALTHCARE_CATEGORIES,
    CategoryFileError,
    load_categories,
    match_categories,
)
from callintel_dagster.engines.characteristics import (
    call_characteristics,
    turn_sentiment,
)

VADER = SentimentIntensityAnalyzer()


def make_turns(*rows: tuple) -> pd.DataFrame:
    """Turns from (role, start_s, end_s, text[, phi_kinds]) tuples, shaped like the Transcripts table."""
    records = []
    for index, (role, start, end, text, *phi) in enumerate(rows):
        records.append({"turn_index": index, "speaker": "SPEAKER_00" if role == "agent" else "SPEAKER_01",
                        "role": role, "start_s": float(start), "end_s": float(end), "text": text,
                        "confidence": 0.9, "n_words": len(text.split()),
                        "phi_kinds": json.dumps(phi[0] if phi else [])})
    return pd.DataFrame(records)


def tone_windows(*rows: tuple[float, float, float]) -> pd.DataFrame:
    """Tone windows from (start_s, end_s, negative probability); the negative mass is all 'angry'."""
    return pd.DataFrame([{"segment_index": i, "start_s": s, "end_s": e, "p_angry": neg, "p_anxious": 0.0,
                          "p_sad": 0.0, "p_neutral_positive": 1.0 - neg,
                          "top_label": "angry" if neg > 0.5 else "neutral_positive"}
                         for i, (s, e, neg) in enumerate(rows)])


def sine(seconds: float, amplitude: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Characteristics

CALL_TURNS = (
    ("agent", 0, 10, "Thank you for calling, how can I help you today?"),
    ("customer", 9.5, 20, "My claim was denied again and I am really upset about it."),
    ("agent", 25, 30, "I have resubmitted the claim for you."),
    ("customer", 30, 34, "Thank you, that is great."),
)


@pytest.fixture(scope="module")
def characteristics() -> dict[str, dict]:
    """40 s call: agent a 0.5-amplitude sine over its turns, customer a 0.1-amplitude sine over its own;
    the customer barges in 0.5 s before the agent's first turn ends."""
    duration = 40.0
    audio = np.zeros(int(duration * SAMPLE_RATE), dtype=np.float32)
    for role, start, end, _ in CALL_TURNS:
        first = int(start * SAMPLE_RATE)
        piece = sine(end - start, 0.5 if role == "agent" else 0.1)
        audio[first:first + len(piece)] += piece
    tone = tone_windows((0, 10, 0.2), (10, 20, 0.9), (20, 30, 0.5), (30, 40, 0.6))
    rows = call_characteristics(audio, make_turns(*CALL_TURNS), tone, duration)
    return {row["role"]: row for row in rows}


def test_talk_time_non_talk_time_and_pace(characteristics):
    agent, customer = characteristics["agent"], characteristics["customer"]
    assert agent["talk_time_s"] == pytest.approx(15.0)  # 0-10 + 25-30
    assert customer["talk_time_s"] == pytest.approx(14.5)  # 9.5-20 + 30-34
    # Speech is 0-20 and 25-34: silences 20-25 and 34-40.
    for row in (agent, customer):
        assert row["non_talk_time_s"] == pytest.approx(11.0)
        assert row["longest_gap_s"] == pytest.approx(6.0)
    assert agent["n_turns"] == 2 and agent["n_words"] == 10 + 7
    assert agent["words_per_minute"] == pytest.approx(17 / (15 / 60))
    assert customer["words_per_minute"] == pytest.approx((12 + 5) / (14.5 / 60))


def test_loudness_of_known_sines_within_half_a_db(characteristics):
    # A sine of amplitude A has RMS A/sqrt(2); the 0.5 s of overlapped speech is excluded.
    for role, amplitude in (("agent", 0.5), ("customer", 0.1)):
        expected = 20 * math.log10(amplitude / math.sqrt(2))
        assert characteristics[role]["loudness_mean_dbfs"] == pytest.approx(expected, abs=0.5)
        assert characteristics[role]["loudness_peak_dbfs"] == pytest.approx(expected, abs=0.5)


def test_interruptions_count_who_cut_off_whom(characteristics):
    assert characteristics["agent"]["interruptions"] == 0
    assert json.loads(characteristics["agent"]["interruptions_json"]) == []
    assert characteristics["customer"]["interruptions"] == 1
    assert json.loads(characteristics["customer"]["interruptions_json"]) == [
        {"turn_index": 1, "at_s": 9.5, "by": "customer", "of": "agent"}]


def test_sentiment_overall_and_by_quarter(characteristics):
    score = [VADER.polarity_scores(text)["compound"] for *_, text in CALL_TURNS]
    agent, customer = characteristics["agent"], characteristics["customer"]
    assert agent["sentiment_mean"] == pytest.approx((score[0] + score[2]) / 2)
    assert customer["sentiment_mean"] == pytest.approx((score[1] + score[3]) / 2)
    # Quarters of 40 s: [0, 10) and [30, 40]; turn midpoints 5, 14.75, 27.5, 32.
    assert agent["sentiment_first_quarter"] == pytest.approx(score[0])
    assert math.isnan(agent["sentiment_last_quarter"])
    assert math.isnan(customer["sentiment_first_quarter"])
    assert customer["sentiment_last_quarter"] == pytest.approx(score[3])


def test_tone_is_overlap_weighted_negative_probability(characteristics):
    agent, customer = characteristics["agent"], characteristics["customer"]
    assert agent["tone_negative_mean"] == pytest.approx((0.2 * 10 + 0.5 * 5) / 15)
    assert customer["tone_negative_mean"] == pytest.approx((0.2 * 0.5 + 0.9 * 10 + 0.6 * 4) / 14.5)
    assert agent["tone_negative_first_quarter"] == pytest.approx(0.2)
    assert math.isnan(agent["tone_negative_last_quarter"])
    assert customer["tone_negative_first_quarter"] == pytest.approx(0.2)
    assert customer["tone_negative_last_quarter"] == pytest.approx(0.6)


def test_silent_role_gets_zero_talk_and_undefined_figures():
    turns = make_turns(("agent", 1, 4, "Hello, is anyone there?"))
    rows = call_characteristics(np.zeros(5 * SAMPLE_RATE, np.float32), turns, None, 5.0)
    customer = next(row for row in rows if row["role"] == "customer")
    assert customer["talk_time_s"] == 0 and customer["n_turns"] == 0 and customer["interruptions"] == 0
    for column in ("words_per_minute", "loudness_mean_dbfs", "sentiment_mean", "tone_negative_mean"):
        assert math.isnan(customer[column])
    agent = rows[0]
    assert agent["loudness_mean_dbfs"] == pytest.approx(-120.0)  # digital silence hits the floor
    assert agent["non_talk_time_s"] == pytest.approx(2.0) and agent["longest_gap_s"] == pytest.approx(1.0)


def test_turn_sentiment_labels():
    frame = turn_sentiment(make_turns(("customer", 0, 2, "This is terrible and I hate it."),
                                      ("agent", 2, 3, "Let me check."),
                                      ("customer", 3, 5, "Wonderful, thank you!")))
    assert list(frame["sentiment_label"]) == ["negative", "neutral", "positive"]
    assert frame["sentiment"].dtype == np.float64 and frame["turn_index"].dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Categories: every shipped rule, once matching and once not.

@pytest.fixture(scope="module")
def healthcare():
    return load_categories(HEALTHCARE_CATEGORIES)


def evaluate(categories, turns: pd.DataFrame, duration: float, tone: pd.DataFrame | None = None) -> list[dict]:
    audio = np.zeros(int(duration * SAMPLE_RATE), dtype=np.float32)
    return match_categories(categories, turns, call_characteristics(audio, turns, tone, duration), tone, duration)


def matched(categories, turns, duration, tone=None) -> set[str]:
    return {match["category"] for match in evaluate(categories, turns, duration, tone)}


GREETING = ("agent", 0, 6, "Thank you for calling, this call may be recorded for quality. How can I help?")
GOOD_CALL = (
    GREETING,
    ("customer", 6.5, 10, "Hi, I have a question about my bill."),
    ("agent", 10.5, 13, "Sure. Can you verify your date of birth please?"),
    ("customer", 13.5, 15, "It is [DOB].", ["DOB"]),
    ("agent", 15.5, 20, "Thank you for verifying. Your member ID is [MEMBER_ID].", ["MEMBER_ID"]),
    ("customer", 20.5, 24, "Great, thank you so much, that is really helpful!"),
)


def test_a_clean_call_matches_no_shipped_category(healthcare):
    assert matched(healthcare, make_turns(*GOOD_CALL), 25.0) == set()


def test_recording_disclosure_missing(healthcare):
    late = (("agent", 0, 5, "Thank you for calling, how can I help?"),
            ("customer", 5.5, 30, "I have a question about my bill."),
            ("agent", 40, 44, "By the way, this call may be recorded."))
    matches = [m for m in evaluate(healthcare, make_turns(*late), 60.0)
               if m["category"] == "recording_disclosure_missing"]
    # Both windows are reported: the first 15 s and the first 20% (12 s) of the call.
    assert [(m["start_s"], m["end_s"], m["turn_index"]) for m in matches] == [(0, 15, None), (0, 12, None)]
    # Said at 16-18 s in a 100 s call: after 15 s but within the first 20 s (20%), so it counts.
    within_fraction = (("agent", 0, 5, "Thank you for calling."), ("customer", 5.5, 15.5, "Hi there."),
                       ("agent", 16, 18, "Before we start, this call may be recorded."))
    assert "recording_disclosure_missing" not in matched(healthcare, make_turns(*within_fraction), 100.0)


def test_phi_before_identity_verification(healthcare):
    leaky = (GREETING, ("customer", 6.5, 10, "I need my member number."),
             ("agent", 10.5, 14, "Sure, your member ID is [MEMBER_ID].", ["MEMBER_ID"]),
             ("agent", 14.5, 17, "Can you verify your date of birth?"))
    matches = [m for m in evaluate(healthcare, make_turns(*leaky), 20.0)
               if m["category"] == "phi_before_identity_verification"]
    assert [m["turn_index"] for m in matches] == [2]
    assert "MEMBER_ID" in matches[0]["evidence"]
    # In GOOD_CALL the member ID comes after "verify your date of birth".
    assert "phi_before_identity_verification" not in matched(healthcare, make_turns(*GOOD_CALL), 25.0)


def test_phi_minimum_necessary(healthcare):
    full = (GREETING, ("agent", 7, 10, "Can I get your full social security number?"))
    last_four = (GREETING, ("agent", 7, 10, "Can I get the last four of your social security number?"))
    assert "phi_minimum_necessary_violation" in matched(healthcare, make_turns(*full), 12.0)
    assert "phi_minimum_necessary_violation" not in matched(healthcare, make_turns(*last_four), 12.0)


ANGRY = ("customer", 6.5, 14, "This is ridiculous. I am furious, your service is terrible and useless.")


def test_empathy_missing_with_upset_caller(healthcare):
    cold = (GREETING, ANGRY, ("agent", 14.5, 18, "Please hold while I check the claim."))
    warm = (GREETING, ANGRY, ("agent", 14.5, 18, "I'm sorry to hear that. Let me check the claim."))
    assert "empathy_missing_with_upset_caller" in matched(healthcare, make_turns(*cold), 20.0)
    assert "empathy_missing_with_upset_caller" not in matched(healthcare, make_turns(*warm), 20.0)
    # Neutral words, angry voice: the acoustic tone alone qualifies the caller as upset.
    calm_words = (GREETING, ("customer", 6.5, 14, "I am calling about the claim from last month."),
                  ("agent", 14.5, 18, "Please hold while I check the claim."))
    angry_voice = tone_windows((0, 6.5, 0.1), (6.5, 14, 0.85), (14, 20, 0.2))
    assert "empathy_missing_with_upset_caller" in matched(healthcare, make_turns(*calm_words), 20.0, angry_voice)
    assert "empathy_missing_with_upset_caller" not in matched(healthcare, make_turns(*calm_words), 20.0)


ESCALATE = ("customer", 6.5, 10, "This is not working, I want to speak to a supervisor.")


def test_callback_offered_or_not_on_escalation(healthcare):
    offered = (GREETING, ESCALATE, ("agent", 10.5, 14, "I can have a supervisor call you back today."))
    ignored = (GREETING, ESCALATE, ("agent", 10.5, 14, "Let me see what I can do for you."))
    # A callback mentioned before the caller escalated does not answer the escalation.
    too_early = (GREETING, ("agent", 6.2, 6.4, "We can call you back if we get cut off."), ESCALATE)
    assert {"callback_offered_on_escalation"} <= matched(healthcare, make_turns(*offered), 15.0)
    assert "escalation_without_callback" not in matched(healthcare, make_turns(*offered), 15.0)
    assert "escalation_without_callback" in matched(healthcare, make_turns(*ignored), 15.0)
    assert "callback_offered_on_escalation" not in matched(healthcare, make_turns(*ignored), 15.0)
    assert "callback_offered_on_escalation" not in matched(healthcare, make_turns(*too_early), 15.0)
    evidence = [m for m in evaluate(healthcare, make_turns(*offered), 15.0)
                if m["category"] == "callback_offered_on_escalation"]
    assert [(m["rule"], m["turn_index"], m["evidence"]) for m in evidence] == [
        ("all[0].said", 1, "speak to a supervisor"), ("all[1].said", 2, "call you back")]


def test_long_non_talk_time(healthcare):
    assert "long_non_talk_time" in matched(healthcare, make_turns(*GOOD_CALL), 60.0)  # 60 - 22 s of speech
    assert "long_non_talk_time" not in matched(healthcare, make_turns(*GOOD_CALL), 25.0)


def test_customer_negative_in_last_quarter(healthcare):
    soured = (*GOOD_CALL[:-1], ("customer", 20.5, 24, "No, this is terrible. I am very disappointed."))
    matches = [m for m in evaluate(healthcare, make_turns(*soured), 25.0)
               if m["category"] == "customer_negative_at_end"]
    assert [m["turn_index"] for m in matches] == [5]
    # The same complaint early in the call, then a happy ending: last quarter is positive.
    early = (GREETING, ("customer", 6.5, 10, "No, this is terrible. I am very disappointed."), *GOOD_CALL[2:])
    assert "customer_negative_at_end" not in matched(healthcare, make_turns(*early), 25.0)


# ---------------------------------------------------------------------------------------------
# Custom rules: fuzzy phrases, windows, interruptions, file validation.

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_fuzzy_match_survives_an_asr_error(tmp_path):
    rule = """\
categories:
  - name: billing_transfer
    rule:
      said: {role: customer, phrases: [billing department], fuzzy: 80}
  - name: billing_transfer_exact
    rule:
      said: {role: customer, phrases: [billing department]}
"""
    turns = make_turns(("customer", 0, 3, "Can you transfer me to the building department?"))
    matches = evaluate(load_categories(write(tmp_path, rule)), turns, 5.0)
    assert [(m["category"], m["evidence"]) for m in matches] == [("billing_transfer", "building department")]


def test_windows_and_interruption_rules(tmp_path):
    rules = load_categories(write(tmp_path, """\
categories:
  - name: goodbye_at_end
    rule:
      said: {role: agent, phrases: [have a great day], within: {last_fraction: 0.1}}
  - name: customer_barges_in
    rule:
      interruptions: {by: customer, min_count: 1}
  - name: long_silence
    rule:
      non_talk_time: {min_gap_s: 5}
"""))
    turns = make_turns(("agent", 0, 4, "Have a great day, how can I help?"),
                       ("customer", 3, 8, "Hi, my card was declined."),
                       ("agent", 15, 19.5, "All done, have a great day!"))
    matches = evaluate(rules, turns, 20.0)
    assert [(m["category"], m["turn_index"], m["start_s"], m["end_s"]) for m in matches] == [
        ("goodbye_at_end", 2, 15, 19.5), ("customer_barges_in", 1, 3, 8), ("long_silence", None, 8, 15)]


@pytest.mark.parametrize(("body", "line", "problem"), [
    # An unknown rule kind on line 6.
    ("categories:\n  - name: ok\n    rule: {said: {phrases: [hi]}}\n"
     "  - name: bad\n    rule:\n      sayd: {phrases: [hi]}\n",
     6, "exactly one key"),
    # A bad field deep inside an `all` on line 8.
    ("categories:\n  - name: x\n    rule:\n      all:\n        - said: {phrases: [hi]}\n        - not_said:\n"
     "            phrases: [bye]\n            fuzzy: very\n", 8, "fuzzy"),
    # A window with two keys.
    ("categories:\n  - name: x\n    rule:\n      said:\n        phrases: [hi]\n"
     "        within: {first_s: 3, last_s: 2}\n",
     6, "exactly one of"),
    # The second category named x, on line 4.
    ("categories:\n  - name: x\n    rule: {said: {phrases: [hi]}}\n"
     "  - name: x\n    rule: {said: {phrases: [hi]}}\n",
     4, "duplicate category name"),
    # An unclosed flow mapping: the parser notices at the end of the file.
    ("categories:\n  - name: x\n    rule: {said: {phrases: [hi]\n", 4, "invalid YAML"),
])
def test_invalid_file_names_file_and_line(tmp_path, body, line, problem):
    path = write(tmp_path, body)
    with pytest.raises(CategoryFileError) as error:
        load_categories(path)
    assert str(error.value).startswith(f"{path}:{line}:")
    assert problem in str(error.value)


# ---------------------------------------------------------------------------------------------
# Audio redaction

SPOKEN_DOB = ["my", "date", "of", "birth", "is", "march", "fifth", "nineteen", "eighty", "okay"]


def spoken_words(texts: list[str], step: float = 0.3) -> list[Word]:
    return [Word(start=i * step, end=i * step + 0.25, text=f" {text}", probability=0.9)
            for i, text in enumerate(texts)]


def dominant_hz(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.fixture
def speechlike() -> np.ndarray:
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * SAMPLE_RATE).astype(np.float32)
    return sine(3.0, 0.3, hz=300) + noise


def test_spoken_numbers_are_found_as_phi():
    found = [SPOKEN_DOB[i] for i in phi_word_spans(spoken_words(SPOKEN_DOB))]
    assert found == ["march", "fifth", "nineteen", "eighty"]
    phone = ["call", "me", "at", "five", "five", "five", "one", "two", "three", "four", "five", "six", "seven"]
    assert phi_word_spans([{"text": w} for w in phone]) == list(range(3, 13))
    assert phi_word_spans(spoken_words(["you", "may", "first", "need", "one", "two", "forms"])) == []


def test_tone_replaces_only_the_phi_span(speechlike):
    redacted, spans = redact_audio(speechlike, spoken_words(SPOKEN_DOB), mode="tone", pad_s=0.05)
    # "march" starts at 1.5 s, "eighty" ends at 2.4 + 0.25 s.
    assert spans == [(pytest.approx(1.45), pytest.approx(2.70))]
    first, last = int(round(1.45 * SAMPLE_RATE)), int(round(2.70 * SAMPLE_RATE))
    assert np.array_equal(redacted[:first], speechlike[:first])
    assert np.array_equal(redacted[last:], speechlike[last:])
    muted = redacted[first:last]
    assert dominant_hz(muted) == pytest.approx(1000, abs=5)
    assert 20 * np.log10(np.sqrt(np.mean(muted ** 2))) == pytest.approx(
        20 * np.log10(TONE_AMPLITUDE / np.sqrt(2)), abs=0.5)
    assert dominant_hz(speechlike[first:last]) == pytest.approx(300, abs=5)


def test_silence_mode_and_wav_copy(tmp_path, speechlike):
    words = spoken_words(SPOKEN_DOB)
    redacted, spans = redact_audio(speechlike, words, mode="silence")
    first, last = int(round(spans[0][0] * SAMPLE_RATE)), int(round(spans[0][1] * SAMPLE_RATE))
    assert not redacted[first:last].any()
    assert np.array_equal(redacted[:first], speechlike[:first])
    assert np.array_equal(redacted[last:], speechlike[last:])

    source = tmp_path / "call.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((speechlike * 32768).round().astype("<i2").tobytes())
    copy_spans = write_redacted_copy(decode_audio(source), tmp_path / "out" / "call.redacted.wav", words)
    assert copy_spans == spans
    original, copy = decode_audio(source), decode_audio(tmp_path / "out" / "call.redacted.wav")
    assert len(copy) == len(original)
    assert np.array_equal(copy[:first], original[:first]) and np.array_equal(copy[last:], original[last:])
    assert dominant_hz(copy[first:last]) == pytest.approx(1000, abs=5)


def test_a_long_masked_copy_is_written_in_blocks_that_join_exactly(tmp_path):
    """Over a minute of 16-bit audio spans several conversion blocks: the copy is the source sample
    for sample outside the PHI span, whatever block a sample fell in, and its header is final."""
    rng = np.random.default_rng(7)
    seconds = 75.0
    pcm = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 3000).clip(-32768, 32767).astype("<i2")
    source = tmp_path / "long.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    words = [{"start": 65.0 + 0.3 * i, "end": 65.25 + 0.3 * i, "text": w} for i, w in enumerate(SPOKEN_DOB)]
    target = tmp_path / "long.redacted.wav"
    [(start, end)] = write_redacted_copy(decode_audio(source), target, words)
    with wave.open(str(target), "rb") as copy:
        assert copy.getnframes() == pcm.size
        written = np.frombuffer(copy.readframes(copy.getnframes()), dtype="<i2")
    first, last = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
    assert np.array_equal(written[:first], pcm[:first]) and np.array_equal(written[last:], pcm[last:])
    assert not np.array_equal(written[first:last], pcm[first:last])

    # The same copy from blocks that cut through the span (a long call's stream): byte for byte.
    audio = decode_audio(source)
    edge = int(65.5 * SAMPLE_RATE)
    streamed = tmp_path / "long.streamed.wav"
    assert write_redacted_stream(iter([audio[:edge], audio[edge:]]), audio.size, streamed, words) == [(start, end)]
    assert streamed.read_bytes() == target.read_bytes()
    with pytest.raises(ValueError, match=r"samples arrived for the \d+ the WAV header declares"):
        write_redacted_stream(iter([audio[:edge]]), audio.size, tmp_path / "short.wav", words)
    assert not (tmp_path / "short.wav").exists()  # no half copy passes for the redacted recording

    def failing_read():
        yield audio[:edge]
        raise OSError("blob read failed")

    with pytest.raises(OSError, match="blob read failed"):
        write_redacted_stream(failing_read(), audio.size, tmp_path / "failed.wav", words)
    assert not (tmp_path / "failed.wav").exists()
