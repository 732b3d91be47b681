"""PHI redaction of call *audio* by word timestamps (pure Python; no Dagster).

Redacting the transcript is not enough when recordings are kept for QA playback: the spoken date of
birth is still in the audio. As Amazon Transcribe Call Analytics does, every word that is (part of)
PHI is overwritten, from its start to its end (plus `pad_s` either side, because ASR word
boundaries are approximate and a clipped syllable can still be intelligible), by a 1 kHz tone — an
audible marker that something was removed — or by silence. Everything outside those spans is left
bit-identical, so the redacted copy stays valid evidence for everything else.

Which words are PHI is decided by the transcript redactor (`redaction.phi_word_indices`), so audio
and text redaction never disagree. Its patterns expect written numbers ("March 5th, 1980",
"555 123 4567"), while ASR often spells them out ("march fifth nineteen eighty", "five five five
...") — so spoken numbers are first rewritten in the written form the patterns know (see
`_written_tokens`), and each rewritten token maps back to the words it came from.
"""

from __future__ import annotations

import re
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from callintel_dagster.engines.audio import SAMPLE_RATE
from callintel_dagster.engines.blob_files import open_url_for_write, remove_url
from callintel_dagster.engines.redaction import phi_word_indices

TONE_HZ = 1000.0
# −20 dBFS peak: clearly audible over a phone line without being painful at playback volume.
TONE_AMPLITUDE = 0.1

_DIGITS = {"zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
           "seven": 7, "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
             "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
             "nineteenth": 19, "twentieth": 20, "thirtieth": 30}
_WRITTEN_DAY = re.compile(r"\d{1,2}(?:st|nd|rd|th),?")
_CENTURIES = {**_TEENS, "twenty": 20}
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
           "sept", "oct", "nov", "dec"}
# A spoken digit string shorter than this is a count or a time, not an identifier (the shortest
# identifiers the redactor knows — last-four SSN, ZIP — have four and five digits).
_MIN_DIGIT_RUN = 3


def _is_month(word: str, key: str) -> bool:
    """Whether a word names a month. "may" only when written "May": the modal verb is far more
    common, and ASR capitalises the month."""
    return key in _MONTHS and (key != "may" or word.strip().startswith("May"))


def _ordinal(value: int) -> str:
    suffix = "th" if 10 <= value % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"


def _day(keys: list[str], i: int) -> tuple[int, int] | None:
    """(day, words used) for an ordinal day at `i`: "fifth", "twenty first", "thirtieth"."""
    if keys[i] in ("twenty", "thirty") and i + 1 < len(keys) and _ORDINALS.get(keys[i + 1], 10) < 10:
        return _TENS[keys[i]] + _ORDINALS[keys[i + 1]], 2
    if keys[i] in _ORDINALS:
        return _ORDINALS[keys[i]], 1
    return None


def _year(keys: list[str], i: int) -> tuple[int, int] | None:
    """(year, words used) at `i`: "nineteen eighty (five)", "nineteen oh five", "twenty twelve",
    "two thousand (and) (five|twelve|twenty one)"."""
    rest = keys[i + 1:i + 4] + [""] * 3
    if keys[i] == "two" and rest[0] == "thousand":
        used, tail = 2, rest[1:]
        if tail[0] == "and":
            used, tail = 3, tail[1:]
        small = _small(tail)
        return (2000 + small[0], used + small[1]) if small else (2000, 2)
    century = _CENTURIES.get(keys[i])
    if century is None:
        return None
    if rest[0] in ("oh", "o") and rest[1] in _DIGITS:
        return century * 100 + _DIGITS[rest[1]], 3
    small = _small(rest)
    if small and small[0] >= 10:
        return century * 100 + small[0], 1 + small[1]
    return None


def _small(keys: list[str]) -> tuple[int, int] | None:
    """(1..99, words used) for "five", "twelve", "eighty", "eighty five" at the start of `keys`."""
    if keys and keys[0] in _TENS:
        if len(keys) > 1 and _DIGITS.get(keys[1], 0) > 0:
            return _TENS[keys[0]] + _DIGITS[keys[1]], 2
        return _TENS[keys[0]], 1
    if keys and keys[0] in _TEENS:
        return _TEENS[keys[0]], 1
    if keys and _DIGITS.get(keys[0], 0) > 0:
        return _DIGITS[keys[0]], 1
    return None


def _written_tokens(words: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Words with spoken numbers rewritten as digits, each token with the word indices it covers.

    - an ordinal right after a month, or before "of <month>", becomes a day: "fifth" → "5th";
    - "nineteen eighty", "twenty twelve", "two thousand and five" become a year after a day or a
      month;
    - a run of at least `_MIN_DIGIT_RUN` single spoken digits becomes one digit string
      ("five five five one two one two" → "5551212"), as identifiers are read digit by digit.
    Everything else passes through unchanged (case kept: the name patterns need capitals).
    Hyphenated number words ("twenty-first") count as separate words of the same index.
    """
    keys: list[str] = []
    sources: list[int] = []
    for index, word in enumerate(words):
        parts = re.sub(r"[^\w'-]", "", word.lower()).split("-")
        number_parts = all(p in _DIGITS or p in _TEENS or p in _TENS or p in _ORDINALS for p in parts)
        for part in parts if len(parts) > 1 and number_parts else ["-".join(parts)]:
            keys.append(part)
            sources.append(index)

    def month_at(k: int) -> bool:
        return 0 <= k < len(keys) and _is_month(words[sources[k]], keys[k])

    tokens: list[tuple[str, list[int]]] = []
    i = 0
    while i < len(keys):
        day = _day(keys, i)
        if day and not (month_at(i - 1) or (keys[i + day[1]:i + day[1] + 1] == ["of"]
                                            and month_at(i + day[1] + 1))):
            day = None
        after_date = i > 0 and (month_at(i - 1) or _WRITTEN_DAY.fullmatch(tokens[-1][0]) is not None)
        year = _year(keys, i) if after_date else None
        run = 0
        while i + run < len(keys) and keys[i + run] in _DIGITS:
            run += 1
        if day:
            text, used = _ordinal(day[0]), day[1]
        elif year:
            text, used = str(year[0]), year[1]
        elif run >= _MIN_DIGIT_RUN:
            text, used = "".join(str(_DIGITS[k]) for k in keys[i:i + run]), run
        else:
            text, used = None, 1
        covered = sorted(set(sources[i:i + used]))
        tokens.append((text if text is not None else words[sources[i]].strip(), covered))
        i += used
        # A word split at hyphens that was not consumed as a number is emitted once.
        while text is None and i < len(keys) and sources[i] == covered[-1]:
            i += 1
    return tokens


def _word_field(word: Any, name: str) -> Any:
    return word[name] if isinstance(word, Mapping) else getattr(word, name)


def phi_word_spans(words: Sequence[Any]) -> list[int]:
    """Indices of `words` (objects or mappings with `text`) that are (part of) PHI."""
    tokens = _written_tokens([str(_word_field(w, "text")) for w in words])
    flagged = phi_word_indices([text for text, _ in tokens])
    return sorted({index for t in flagged for index in tokens[t][1]})


def redaction_spans(words: Sequence[Any], duration_s: float, pad_s: float = 0.05) -> list[tuple[float, float]]:
    """The time spans (s) a redacted copy replaces: every PHI word's (± `pad_s`), merged where padding
    makes neighbouring words touch, clipped to [0, `duration_s`]."""
    raw = sorted((max(0.0, float(_word_field(words[i], "start")) - pad_s),
                  min(duration_s, float(_word_field(words[i], "end")) + pad_s)) for i in phi_word_spans(words))
    spans: list[tuple[float, float]] = []
    for start, end in raw:
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        elif end > start:
            spans.append((start, end))
    return spans


def _masked(block: np.ndarray, first_sample: int, spans: Sequence[tuple[float, float]], mode: str,
            sample_rate: int) -> np.ndarray:
    """`block` (the call's samples from `first_sample` on, changed in place) with the parts of `spans`
    inside it replaced; the tone's phase follows the call's clock, so it runs on across blocks."""
    for start, end in spans:
        first = max(int(round(start * sample_rate)), first_sample)
        last = min(int(round(end * sample_rate)), first_sample + block.size)
        if last <= first:
            continue
        if mode == "silence":
            block[first - first_sample:last - first_sample] = 0
        else:
            t = np.arange(first, last) / sample_rate
            block[first - first_sample:last - first_sample] = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(block.dtype)
    return block


def _check_mode(mode: str) -> None:
    if mode not in ("tone", "silence"):
        raise ValueError(f"mode must be 'tone' or 'silence', not {mode!r}")


def redact_audio(audio: np.ndarray, words: Sequence[Any], mode: Literal["tone", "silence"] = "tone",
                 pad_s: float = 0.05, sample_rate: int = SAMPLE_RATE
                 ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A copy of `audio` with every PHI word's time span (± `pad_s`) replaced by a 1 kHz tone or silence.

    `words` carry `start`, `end` (seconds from the start of `audio`) and `text` (`asr.Word`, or dicts).
    Returns the redacted audio (same dtype and length) and the replaced spans in seconds, merged
    where padding makes neighbouring words touch and clipped to the audio.
    """
    _check_mode(mode)
    spans = redaction_spans(words, len(audio) / sample_rate, pad_s)
    return _masked(audio.copy(), 0, spans, mode, sample_rate), spans


def write_redacted_copy(audio: np.ndarray, dst: str | Path, words: Sequence[Any],
                        mode: Literal["tone", "silence"] = "tone", pad_s: float = 0.05
                        ) -> list[tuple[float, float]]:
    """Redact decoded 16 kHz mono `audio` (as `redact_audio` does) and write it as a 16 kHz mono
    16-bit PCM WAV to `dst`, a local path or an fsspec URL of the blob store (streamed, never staged
    on local disk); returns the redacted spans. WAV because every player and QA tool opens it and
    16-bit PCM holds telephone audio without loss."""
    blocks = (audio[first:first + _PCM_BLOCK] for first in range(0, audio.size, _PCM_BLOCK))
    return write_redacted_stream(blocks, audio.size, dst, words, mode, pad_s)


def write_redacted_stream(blocks: Iterable[np.ndarray], n_samples: int, dst: str | Path, words: Sequence[Any],
                          mode: Literal["tone", "silence"] = "tone", pad_s: float = 0.05
                          ) -> list[tuple[float, float]]:
    """`write_redacted_copy` of a call that arrives as consecutive blocks of `n_samples` in all
    (`audio.stream_call_audio`): one block in memory at a time, each copied before it is masked."""
    _check_mode(mode)
    spans = redaction_spans(words, n_samples / SAMPLE_RATE, pad_s)
    written = 0
    try:
        with open_url_for_write(str(dst)) as handle, wave.open(handle, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            # Declared up front, so the header is final and the stream never seeks back (blob uploads can't).
            out.setnframes(n_samples)
            for block in blocks:
                block = block[: n_samples - written]
                # A block at a time: converting a 2-hour call at once held four copies of it (float64 ones).
                # `writeframesraw`: `writeframes` would patch the header after each block, seeking back.
                for first in range(0, block.size, _PCM_BLOCK):
                    piece = _masked(block[first:first + _PCM_BLOCK].copy(), written + first, spans, mode, SAMPLE_RATE)
                    out.writeframesraw(_pcm16(piece))
                written += block.size
        if written != n_samples:
            raise ValueError(f"{dst}: {written} samples arrived for the {n_samples} the WAV header declares")
    except BaseException:
        # A blob upload commits what it has on close: a half-written copy would pass for the call's
        # redacted recording, so none is left (the call fails with the reason).
        remove_url(str(dst))
        raise
    return spans


_PCM_BLOCK = 1 << 20  # samples (~1 min at 16 kHz)


def _pcm16(samples: np.ndarray) -> np.ndarray:
    """Little-endian 16-bit PCM. Scaled by 32768, as the decoder divides by it, so samples decoded
    from 16-bit PCM write back exactly (k / 32768 times 32768 is exact in float64) and the unredacted
    audio of a 16-bit source stays bit-identical."""
    return np.clip(np.round(samples.astype(np.float64) * 32768), -32768, 32767).astype("<i2")
