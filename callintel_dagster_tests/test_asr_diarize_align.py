"""ASR, diarization and alignment engines.

Fast tests use synthetic words/turns (no models). `slow` tests run the real shipped models on the
real two-party call from the pyannote.audio wheel and score against its references; module-scoped
fixtures run each model once per session.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from callintel_dagster.engines import align, asr, diarize, reference
from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
from callintel_dagster.engines.diarize import SpeakerTurn
from callintel_dagster.engines.model_cache import loaded_model_keys

# --------------------------------------------------------------------------- no models


def _words(spec: list[tuple[float, float, str]], probability: float = 0.9) -> list[Word]:
    return [Word(start, end, text, probability) for start, end, text in spec]


def test_assign_speakers_max_overlap_and_nearest_turn():
    turns = [SpeakerTurn(0.0, 2.0, "SPEAKER_00"), SpeakerTurn(1.8, 4.0, "SPEAKER_01")]
    words = _words([(0.1, 0.5, "a"), (1.7, 2.0, "b"), (1.9, 2.5, "c"), (5.0, 5.2, "d")])
    # b: 0.3 s with 00 vs 0.2 s with 01; c: 0.1 vs 0.6; d overlaps nothing -> nearest turn (01).
    assert align.assign_speakers(words, turns) == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01", "SPEAKER_01"]


def test_assign_speakers_tie_keeps_previous_speaker():
    turns = [SpeakerTurn(0.0, 3.0, "SPEAKER_00"), SpeakerTurn(1.0, 3.0, "SPEAKER_01")]
    words = _words([(1.2, 1.6, "x")])
    assert align.assign_speakers(_words([(0.2, 0.6, "w")]) + words, turns)[1] == "SPEAKER_00"
    assert align.assign_speakers(words, []) == ["SPEAKER_00"]


def test_build_turns_groups_words_and_roles_by_agent_phrase():
    speaker_turns = [
        SpeakerTurn(0.0, 1.5, "SPEAKER_00"),
        SpeakerTurn(1.6, 5.0, "SPEAKER_01"),
        SpeakerTurn(5.2, 6.0, "SPEAKER_00"),
    ]
    words = [
        Word(0.1, 0.5, "Hi,", 0.8),
        Word(0.6, 1.0, "hello?", 1.0),
        Word(1.7, 2.0, "Thank", 0.9),
        Word(2.0, 2.2, "you", 0.9),
        Word(2.2, 2.4, "for", 0.9),
        Word(2.4, 2.9, "calling.", 0.9),
        Word(3.0, 3.5, "How", 0.9),
        Word(3.5, 3.7, "can", 0.9),
        Word(3.7, 3.8, "I", 0.9),
        Word(3.8, 4.2, "help?", 0.5),
        Word(5.3, 5.8, "Billing.", 0.7),
    ]
    df = align.build_turns(words, speaker_turns)
    assert list(df.columns) == align.TURN_COLUMNS
    assert df["turn_index"].tolist() == [0, 1, 2]
    assert df["speaker"].tolist() == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    # SPEAKER_00 spoke first, but SPEAKER_01 used agent phrases: phrases win over speaking order.
    assert df["role"].tolist() == ["customer", "agent", "customer"]
    assert df.loc[1, "text"] == "Thank you for calling. How can I help?"
    assert df.loc[1, "n_words"] == 8
    assert df.loc[0, "confidence"] == pytest.approx(0.9)
    assert (df.loc[1, "start_s"], df.loc[1, "end_s"]) == (1.7, 4.2)


def _timed(*lines: tuple[str, str]) -> tuple[list[Word], list[SpeakerTurn]]:
    """``(speaker, text)`` lines as consecutive words (0.3 s each) and speaker turns."""
    words, turns, clock = [], [], 0.0
    for speaker, text in lines:
        start = clock
        for token in text.split():
            words.append(Word(clock, clock + 0.3, token, 0.9))
            clock += 0.3
        turns.append(SpeakerTurn(start, clock, speaker))
        clock += 0.2
    return words, turns


@pytest.mark.parametrize("lines", [
    # ASR lost the agent's greeting: the caller speaks first.
    [("S0", "Hi, I'm trying to find out where my referral went."),
     ("S1", "Sure, let me look. What's your full name and birthday?"),
     ("S0", "Dana Cole, third of May."),
     ("S1", "Thanks, you're verified. I can see the referral, I've sent it again.")],
    # Diarization glued the agent's "how can I help" onto the caller's first words.
    [("S1", "Kestrel Clinic, this call is monitored."),
     ("S0", "How can I help? I got a statement and my insurance should have paid it."),
     ("S1", "Could I have your member number? I see the claim, I've resubmitted it."), ("S0", "Okay, thanks.")],
])
def test_roles_follow_what_each_speaker_does_across_the_call(lines):
    words, turns = _timed(*lines)
    df = align.build_turns(words, turns)
    assert dict(zip(df["speaker"], df["role"])) == {"S1": "agent", "S0": "customer"}


def test_roles_fall_back_to_first_speaker_and_empty_input():
    speaker_turns = [SpeakerTurn(0.0, 1.0, "SPEAKER_01"), SpeakerTurn(1.0, 2.0, "SPEAKER_00")]
    df = align.build_turns(_words([(0.2, 0.8, "hello"), (1.2, 1.8, "hi")]), speaker_turns)
    assert dict(zip(df["speaker"], df["role"])) == {"SPEAKER_01": "agent", "SPEAKER_00": "customer"}
    empty = align.build_turns([], speaker_turns)
    assert list(empty.columns) == align.TURN_COLUMNS and empty.empty
    assert empty["n_words"].dtype == np.int64


def test_conversation_metrics_on_synthetic_call():
    speaker_turns = [
        SpeakerTurn(1.0, 5.0, "SPEAKER_00"),
        SpeakerTurn(4.0, 8.0, "SPEAKER_01"),  # starts 1.0 s before 00 stops: an interruption
        SpeakerTurn(7.9, 9.0, "SPEAKER_00"),  # 0.1 s overlap: a hand-over, not an interruption
    ]
    words = _words([(1.2, 1.5, "thank"), (1.5, 1.8, "you"), (1.8, 2.0, "for"), (2.0, 2.4, "calling")])
    words += _words([(5.5, 6.0, "my"), (6.0, 6.5, "bill")])
    df = align.build_turns(words, speaker_turns)
    metrics = align.conversation_metrics(df, speaker_turns, call_duration_s=10.0)
    assert metrics["talk_time_agent_s"] == pytest.approx(4.0 + 1.1)
    assert metrics["talk_time_customer_s"] == pytest.approx(4.0)
    assert metrics["overlap_s"] == pytest.approx(1.1)
    assert metrics["non_talk_time_s"] == pytest.approx(2.0)
    assert metrics["interruptions"] == 1
    assert metrics["words_per_minute_agent"] == pytest.approx(4 / (5.1 / 60))
    assert metrics["words_per_minute_customer"] == pytest.approx(2 / (4.0 / 60))
    total = metrics["talk_time_agent_s"] + metrics["talk_time_customer_s"] - metrics["overlap_s"]
    assert total + metrics["non_talk_time_s"] == pytest.approx(10.0)


def test_speech_regions_and_first_appearance_naming():
    turns = [SpeakerTurn(0.0, 1.0, "b"), SpeakerTurn(0.5, 2.0, "a"), SpeakerTurn(2.2, 3.0, "b")]
    assert diarize.speech_regions(turns) == [(0.0, 2.0), (2.2, 3.0)]
    assert diarize.speech_regions(turns, min_gap_s=0.5) == [(0.0, 3.0)]
    renamed = diarize._rename_by_first_appearance(turns)
    assert [t.speaker for t in renamed] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]


def test_text_normalization_and_wer():
    assert reference.normalize_text("Oh, I DIDN'T know 'you' were there!") == "oh i didn't know you were there"
    assert reference.word_error_rate("Hello there.", "hello, there") == 0.0
    assert reference.word_error_rate("a b c d", "a x c") == pytest.approx(0.5)


def test_reference_files_load():
    annotation = reference.load_rttm()
    assert set(annotation.labels()) == {"speaker90", "speaker91"}
    utterances = reference.load_stm()
    assert utterances[0].text == "Hello?" and utterances[0].start == pytest.approx(6.68)
    assert reference.load_stm_words()[:3] == ["Hello?", "Hello?", "Oh,"]
    perfect = [SpeakerTurn(s.start, s.end, label) for s, _, label in annotation.itertracks(yield_label=True)]
    assert reference.diarization_error_rate(perfect, annotation) == pytest.approx(0.0)


def test_missing_model_paths_fail_clearly():
    with pytest.raises(FileNotFoundError, match="not a CTranslate2"):
        asr.load_whisper(asr.AsrConfig(model="/nonexistent/whisper"))
    config = diarize.DiarizationConfig(pyannote_pipeline="/nonexistent/pipeline/config.yaml")
    with pytest.raises(FileNotFoundError, match="no such local path"):
        diarize.diarize(np.zeros(SAMPLE_RATE, dtype=np.float32), config)


def test_shipped_weights_are_found():
    assert (asr.default_whisper_model_path() / "model.bin").is_file()
    assert diarize.segmentation_model_path().is_file()
    assert reference.sample_call_path().is_file()


# --------------------------------------------------------------------------- real models, real call


@pytest.fixture(scope="module")
def sample_audio() -> np.ndarray:
    return decode_audio(reference.sample_call_path())


@pytest.fixture(scope="module")
def asr_words(sample_audio) -> list[Word]:
    return asr.transcribe(sample_audio, asr.AsrConfig())


@pytest.fixture(scope="module")
def speaker_turns(sample_audio) -> list[SpeakerTurn]:
    return diarize.diarize(sample_audio, diarize.DiarizationConfig())


@pytest.mark.slow
def test_asr_wer_on_real_call(asr_words, sample_audio):
    hypothesis = " ".join(word.text for word in asr_words)
    assert reference.word_error_rate(reference.reference_transcript(), hypothesis) <= 0.20
    duration = len(sample_audio) / SAMPLE_RATE
    assert all(0.0 <= w.start <= w.end <= duration + 0.5 and 0.0 <= w.probability <= 1.0 for w in asr_words)
    assert any(key[0] == "faster-whisper" for key in loaded_model_keys())


@pytest.mark.slow
def test_asr_speech_segments_keep_absolute_times(sample_audio):
    words = asr.transcribe(sample_audio, asr.AsrConfig(), speech_segments=[(14.4, 18.0)])
    text = reference.normalize_text(" ".join(w.text for w in words))
    assert "sheila" in text and "chicago" in text
    assert all(14.0 <= w.start and w.end <= 18.5 for w in words)
    assert asr.transcribe(sample_audio, asr.AsrConfig(), speech_segments=[]) == []


def test_speech_chunks_cut_in_silences_and_never_exceed_whisper_window():
    spans = [(0.0, 12.0), (13.0, 25.0), (26.0, 40.0), (41.0, 105.0)]
    chunks = asr.speech_chunks(spans, chunk_s=30.0)
    assert chunks[0] == (0.0, 25.0) and chunks[1] == (26.0, 40.0)  # 0-40 would exceed 30 s: cut at 25-26
    assert all(hi - lo <= 30.0 + 1e-9 for lo, hi in chunks)
    # The 64 s span has no silence: split evenly into three pieces, still covering all of it.
    assert chunks[-1][1] == 105.0 and sum(hi - lo for lo, hi in chunks[2:]) == pytest.approx(64.0)
    assert asr.speech_chunks([]) == []


def test_batch_size_is_configured_or_unbatched_on_cpu():
    assert asr.resolved_batch_size(asr.AsrConfig()) == 0
    assert asr.resolved_batch_size(asr.AsrConfig(batch_size=8)) == 8


@pytest.mark.slow
@pytest.mark.parametrize("with_spans", [False, True], ids=["bundled-vad", "vad-spans"])
def test_batched_asr_on_real_call_keeps_quality_and_absolute_times(sample_audio, with_spans):
    """The batched pipeline (chunks cut at silences, several per batch): the code path a GPU runs,
    here on CPU with a small batch."""
    from callintel_dagster.engines.vad import speech_segments

    spans = speech_segments(sample_audio) if with_spans else None
    words = asr.transcribe(sample_audio, asr.AsrConfig(batch_size=2), speech_segments=spans)
    hypothesis = " ".join(word.text for word in words)
    assert reference.word_error_rate(reference.reference_transcript(), hypothesis) <= 0.30
    duration = len(sample_audio) / SAMPLE_RATE
    assert all(0.0 <= w.start <= w.end <= duration + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    if spans:
        chunks = asr.speech_chunks(spans)
        assert all(any(lo - 0.5 <= w.start and w.end <= hi + 0.5 for lo, hi in chunks) for w in words)


@pytest.mark.slow
def test_diarization_der_on_real_call(speaker_turns, sample_audio):
    rttm = reference.load_rttm()
    duration = len(sample_audio) / SAMPLE_RATE
    assert {t.speaker for t in speaker_turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert reference.diarization_error_rate(speaker_turns, rttm, collar=0.0, duration_s=duration) <= 0.20
    assert reference.diarization_error_rate(speaker_turns, rttm, collar=0.25, duration_s=duration) <= 0.20


def test_diarization_cuts_each_segment_only_when_the_encoder_needs_it(sample_audio, speaker_turns):
    """Every frame is heard in about four overlapping segmentation windows: holding each window's
    segment audio at once took four times the call. Cut lazily, the traced peak stays near the call's
    own size, and the turns are the same."""
    import tracemalloc

    call = np.tile(sample_audio, 4)
    tracemalloc.start()
    try:
        turns = diarize.diarize(call, diarize.DiarizationConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * call.nbytes, f"peak {peak / 1e6:.1f} MB for {call.nbytes / 1e6:.1f} MB of audio"
    period = len(sample_audio) / SAMPLE_RATE
    first = [(t.start, t.end) for t in turns if t.end <= period - 1.0]
    assert first and len({t.speaker for t in turns}) == 2 and len(turns) >= 4 * len(first) - 4


@pytest.mark.slow
def test_diarization_auto_speaker_count(sample_audio):
    turns = diarize.diarize(sample_audio, dataclasses.replace(diarize.DiarizationConfig(), num_speakers=None))
    assert len({t.speaker for t in turns}) == 2


@pytest.mark.slow
def test_diarization_of_silence_and_short_audio(speaker_turns):
    config = diarize.DiarizationConfig()
    assert diarize.diarize(np.zeros(3 * SAMPLE_RATE, dtype=np.float32), config) == []
    assert diarize.diarize(np.zeros(100, dtype=np.float32), config) == []


@pytest.mark.slow
def test_aligned_turns_and_metrics_on_real_call(asr_words, speaker_turns, sample_audio):
    df = align.build_turns(asr_words, speaker_turns)
    assert set(df["role"]) == {"agent", "customer"}
    assert df["n_words"].sum() == len(asr_words)
    # "This is Diane in New Jersey" / "And I'm Sheila in Texas": the two introductions land on
    # different speakers.
    diane = df[df["text"].str.contains("Diane")]["speaker"].iloc[0]
    sheila = df[df["text"].str.contains("Sheila")]["speaker"].iloc[0]
    assert diane != sheila

    duration = len(sample_audio) / SAMPLE_RATE
    metrics = align.conversation_metrics(df, speaker_turns, duration)
    speech = sum(end - start for start, end in diarize.speech_regions(speaker_turns))
    talk = metrics["talk_time_agent_s"] + metrics["talk_time_customer_s"] - metrics["overlap_s"]
    assert talk == pytest.approx(speech, abs=0.01)
    assert metrics["non_talk_time_s"] == pytest.approx(duration - speech, abs=0.01)
    assert 60 <= metrics["words_per_minute_agent"] <= 300
    assert 60 <= metrics["words_per_minute_customer"] <= 300
