"""The shape of a rules-engine lexicon: the cue patterns one language needs (pure Python; no Dagster).

`engines/rules.py` holds the English lexicon and the logic; `engines/lexicon_es.py` the Spanish
one. The rules read every cue through a :class:`Lexicon`, chosen by the call's language
(:func:`callintel_dagster.engines.rules.lexicon_for`), so adding a language is adding a lexicon, not
changing the rules.
"""

from __future__ import annotations

import dataclasses
import re

Pattern = re.Pattern[str]


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """Cue patterns by what they answer; see the English definitions in `engines/rules.py` for what
    each must match."""

    language: str
    billing_topics: tuple[tuple[str, Pattern], ...]  # (topic, pattern)
    topic_negated: Pattern  # ends right before a topic named only to rule it out
    id_cue: Pattern  # ends right before a number that is an identifier
    clinical: tuple[Pattern, ...]  # results, diagnoses, medications, doses
    identity_item: Pattern  # what an agent asks to verify identity
    identity_request: Pattern  # an ask for the other party's identity details no caller makes of themself
    asks: Pattern
    verified: Pattern
    asks_full_ssn: Pattern
    last_four: Pattern
    identity_nouns: Pattern
    recording: Pattern
    channel: Pattern
    recording_opening: Pattern
    not_: Pattern  # ends right before a negated recording verb
    escalation: Pattern
    escalation_negated: Pattern
    outcome: Pattern
    not_done: Pattern
    acknowledged: Pattern
    complaint: Pattern
    thanks: Pattern
    frustration: Pattern
    enthusiasm: Pattern


def words(*phrases: str) -> Pattern:
    """Case-insensitive alternatives matched as whole words."""
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)
