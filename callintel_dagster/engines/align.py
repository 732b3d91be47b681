"""Speaker-aligned transcript and conversation metrics (pure Python, no Dagster).

ASR gives words with times but no speakers; diarization gives speakers with times but no words.
`build_turns` joins them: each word goes to the speaker whose diarization turns overlap it most
(ties go to the previous word's speaker, so a word in overlapped speech does not split a turn; a
word that overlaps no turn goes to the nearest turn), and consecutive words of one speaker form a
transcript turn.

Role rule (agent vs customer), in order:
1. Each speaker scores one point per agent cue in their words (greeting the caller, the recording
   notice, asking for the caller's identity details, looking the caller up, reporting what was done,
   offering more help: `AGENT_CUES`) and loses one per customer cue (calling about *my* bill, *my*
   mother, waiting, needing something: `CUSTOMER_CUES`). The single top scorer is the agent. The
   cues are read across the whole call because diarization and ASR lose or misplace single lines:
   the agent's greeting dropped, or glued to the caller's first words.
2. If nobody scores above zero, or the top score is tied, the speaker of the first word is the agent:
   a call centre answers the phone, so the agent speaks first.
An enrolled agent's voiceprint (`engines/voiceprints.py`) replaces both when it confidently picks a
speaker (`agent_speaker`). Of the other speakers, the first to talk is the customer (the caller is
on the line from the start); every speaker who first talks after that is an `other_agent` (a
supervisor or specialist the call is transferred to), so a call with a transfer has three roles.
A split-stereo call takes its roles from the channel map instead (`roles`, engines/channels.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from callintel_dagster.engines.asr import Word
from callintel_dagster.engines.diarize import SpeakerTurn
from callintel_dagster.engines.spans import total_length, union_spans
from callintel_dagster.engines.vocabulary import AGENT, CUSTOMER, OTHER_AGENT, ROLES

# Cue lexicons of the role rule, matched on lower-cased text without punctuation or apostrophes
# ("whats", "youre"). They name what
# each side *does* in a service call, in ASR-tolerant forms ("recorder", "date of the" for "date of
# birth"), not fixed sentences.
AGENT_CUES = tuple(re.compile(rf"\b(?:{cue})\b") for cue in (
    r"thanks? (?:you )?for (?:calling|holding|waiting|your patience)",
    r"how (?:can|may|could) (?:i|we) (?:help|assist)", r"what can i do for you",
    r"(?:recorded|recording|recorder|monitored|monitoring)",
    r"(?:can|could|may) i (?:have|get|take|grab|confirm|verify|ask for) (?:your|the|his|her|their)",
    r"what(?:s| is| was) (?:your|the patients|his|her|their) (?:full )?"
    r"(?:name|date|birthday|dob|member|number|address|phone)",
    r"(?:your|the patients) (?:full )?(?:name|date of|birthday|dob|member (?:id|number))",
    r"(?:verify|confirm) (?:your|the|his|her)", r"you(?:re| are) verified", r"that matches",
    r"let me (?:look|check|find|pull|see|put|get|transfer|pull up|bring up)",
    r"i (?:can )?see (?:the|your|a|an|that|you|her|his)",
    r"i(?:ve| have)? (?:just )?(?:sent|booked|moved|updated|resubmitted|scheduled|submitted|cancelled"
    r"|canceled|requested|reversed|waived|removed|applied|flagged|called them)",
    r"(?:anything else|glad (?:i|we) could help|you(?:re| are) (?:all set|welcome|booked))",
    r"i(?:m| am) sorry (?:to hear|for the|about the)",
))
CUSTOMER_CUES = tuple(re.compile(rf"\b(?:{cue})\b") for cue in (
    r"my (?:bill|statement|prescription|refill|referral|appointment|claim|insurance|card|account|plan"
    r"|results?|medication|meds|order|portal|login|copay|deductible|refund|doctor|surgeon|pharmacy"
    r"|wife|husband|partner|mother|mom|mum|father|dad|son|daughter|neighbou?r|boss|employee)",
    r"i(?:m| am)? (?:was |have been |ve been )?(?:calling|trying|waiting|hoping|wondering)",
    r"i (?:got|received|just got) (?:a|an|the|this|my)", r"i(?:d| would) like to",
    r"still (?:stuck|waiting)", r"(?:third|second|fourth) time",
))

_TURN_DTYPES = {
    "turn_index": "int64",
    "speaker": "object",
    "role": "object",
    "start_s": "float64",
    "end_s": "float64",
    "text": "object",
    "confidence": "float64",
    "n_words": "int64",
}
TURN_COLUMNS = list(_TURN_DTYPES)

# Interruption rule (see `conversation_metrics`): the new speaker must overlap the one already
# talking by at least this long; shorter overlaps are turn-taking jitter, not barging in.
INTERRUPTION_MIN_OVERLAP_S = 0.3


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def assign_speakers(words: Sequence[Word], speaker_turns: Sequence[SpeakerTurn]) -> list[str]:
    """Speaker label for each word (max overlap; previous speaker on ties; nearest turn if none)."""
    if not speaker_turns:
        return ["SPEAKER_00"] * len(words)
    labels: list[str] = []
    for word in words:
        overlap_by_speaker: dict[str, float] = {}
        for turn in speaker_turns:
            overlap = _overlap(word.start, word.end, turn.start, turn.end)
            if overlap > 0:
                overlap_by_speaker[turn.speaker] = overlap_by_speaker.get(turn.speaker, 0.0) + overlap
        if overlap_by_speaker:
            best = max(overlap_by_speaker.values())
            tied = [speaker for speaker, value in overlap_by_speaker.items() if value >= best - 1e-9]
            speaker = labels[-1] if labels and labels[-1] in tied else tied[0]
        else:
            middle = (word.start + word.end) / 2
            nearest = min(speaker_turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
            speaker = nearest.speaker
        labels.append(speaker)
    return labels


def _normalized(text: str) -> str:
    text = re.sub(r"[^\w\s']", " ", text.lower().replace("’", "'"))
    return " ".join(text.split())


def assign_roles(
    speaker_words: dict[str, list[str]], first_speaker: str, agent_speaker: str | None = None
) -> dict[str, str]:
    """Role per speaker by the module's role rule: the agent is `agent_speaker` (a voiceprint
    match) when given, else the content-cue scorer, else who spoke first. `speaker_words` is in
    order of first appearance: the first other speaker is the customer, later ones other agents."""
    scores = {}
    for speaker, words in speaker_words.items():
        text = _normalized(" ".join(words)).replace("'", "")
        scores[speaker] = (sum(len(cue.findall(text)) for cue in AGENT_CUES)
                           - sum(len(cue.findall(text)) for cue in CUSTOMER_CUES))
    best = max(scores.values(), default=0)
    top = [speaker for speaker, score in scores.items() if score == best]
    agent = top[0] if best > 0 and len(top) == 1 else first_speaker
    if agent_speaker in speaker_words:
        agent = agent_speaker
    others = [speaker for speaker in speaker_words if speaker != agent]
    return {speaker: AGENT if speaker == agent else CUSTOMER if speaker == others[0] else OTHER_AGENT
            for speaker in speaker_words}


def build_turns(
    words: Sequence[Word],
    speaker_turns: Sequence[SpeakerTurn],
    agent_speaker: str | None = None,
    *,
    speakers: Sequence[str] | None = None,
    roles: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Speaker-attributed transcript turns, one row per run of consecutive words of one speaker.

    Columns: turn_index, speaker, role, start_s, end_s, text, confidence (mean word probability),
    n_words. No words gives an empty frame with those columns. `agent_speaker`: the speaker an
    enrolled voiceprint identified as the agent (see `assign_roles`). When the speaker of each word
    is already known (`speakers`, one per word, e.g. the channel it was heard on) and so are the
    roles (`roles`, speaker -> role), they are taken as given instead of aligned and guessed.
    """
    order = sorted(range(len(words)), key=lambda i: (words[i].start, words[i].end))
    words = [words[i] for i in order]
    if not words:
        return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in _TURN_DTYPES.items()})
    labels = [speakers[i] for i in order] if speakers is not None else assign_speakers(words, speaker_turns)

    groups: list[tuple[str, list[Word]]] = []
    for word, speaker in zip(words, labels):
        if groups and groups[-1][0] == speaker:
            groups[-1][1].append(word)
        else:
            groups.append((speaker, [word]))

    speaker_words: dict[str, list[str]] = {}
    for speaker, group in groups:
        speaker_words.setdefault(speaker, []).extend(w.text for w in group)
    roles = dict(roles) if roles is not None else assign_roles(
        speaker_words, first_speaker=labels[0], agent_speaker=agent_speaker)

    rows = [
        {
            "turn_index": index,
            "speaker": speaker,
            "role": roles[speaker],
            "start_s": group[0].start,
            "end_s": max(w.end for w in group),
            "text": " ".join(w.text for w in group),
            "confidence": float(np.mean([w.probability for w in group])),
            "n_words": len(group),
        }
        for index, (speaker, group) in enumerate(groups)
    ]
    return pd.DataFrame(rows, columns=TURN_COLUMNS).astype(_TURN_DTYPES)


def _multi_speaker_time(per_speaker: dict[str, list[tuple[float, float]]]) -> float:
    """Seconds during which two or more speakers talk at once (sweep over turn boundaries)."""
    events = sorted(
        (t, delta) for spans in per_speaker.values() for s, e in spans for t, delta in ((s, 1), (e, -1))
    )
    active, previous, total = 0, 0.0, 0.0
    for time, delta in events:
        if active >= 2:
            total += time - previous
        active += delta
        previous = time
    return total


def _count_interruptions(per_speaker: dict[str, list[tuple[float, float]]]) -> int:
    """Turns starting inside another speaker's turn and overlapping it >= INTERRUPTION_MIN_OVERLAP_S."""
    count = 0
    for speaker, spans in per_speaker.items():
        for start, end in spans:
            count += any(
                other != speaker
                and other_start < start
                and _overlap(start, end, other_start, other_end) >= INTERRUPTION_MIN_OVERLAP_S
                for other, other_spans in per_speaker.items()
                for other_start, other_end in other_spans
            )
    return count


def conversation_metrics(
    turns_df: pd.DataFrame,
    speaker_turns: Sequence[SpeakerTurn],
    call_duration_s: float,
    roles: Mapping[str, str] | None = None,
) -> dict[str, float | int]:
    """Talk-time and turn-taking facts of one call.

    Times come from diarization (`speaker_turns`), which also covers speech ASR produced no words
    for; roles and word counts come from `turns_df` (a speaker with no words counts as customer),
    unless the roles are known (`roles`, speaker -> role: the channel map of a split-stereo call).
    - talk_time_<role>_s: union of that role's speaker turns (agent, customer, other_agent).
    - overlap_s: time with two or more speakers talking at once.
    - non_talk_time_s: call time nobody talks, so agent + customer + other_agent - overlap +
      non_talk = duration (exact while no more than two roles talk at once).
    - interruptions: turns that start while another speaker is mid-turn and overlap that turn by at
      least `INTERRUPTION_MIN_OVERLAP_S`, so quick hand-overs do not count (backchannels that long
      do).
    - words_per_minute_<role>: that role's words over its talk time.
    """
    roles = dict(roles) if roles is not None else dict(zip(turns_df["speaker"], turns_df["role"]))
    per_speaker: dict[str, list[tuple[float, float]]] = {}
    for turn in speaker_turns:
        per_speaker.setdefault(turn.speaker, []).append((turn.start, turn.end))
    per_speaker = {speaker: union_spans(spans) for speaker, spans in per_speaker.items()}

    def role_spans(role: str) -> list[tuple[float, float]]:
        return union_spans([s for sp, spans in per_speaker.items() if roles.get(sp, CUSTOMER) == role for s in spans])

    talk = {role: total_length(role_spans(role)) for role in ROLES}
    speech = total_length(union_spans([s for spans in per_speaker.values() for s in spans]))

    words = turns_df.groupby("role")["n_words"].sum()

    def per_minute(role: str) -> float:
        return float(words.get(role, 0)) / (talk[role] / 60.0) if talk[role] > 0 else 0.0

    return {
        "talk_time_agent_s": talk[AGENT],
        "talk_time_customer_s": talk[CUSTOMER],
        "talk_time_other_agent_s": talk[OTHER_AGENT],
        "non_talk_time_s": max(0.0, float(call_duration_s) - speech),
        "overlap_s": _multi_speaker_time(per_speaker),
        "interruptions": _count_interruptions(per_speaker),
        "words_per_minute_agent": per_minute(AGENT),
        "words_per_minute_customer": per_minute(CUSTOMER),
        "words_per_minute_other_agent": per_minute(OTHER_AGENT),
    }
