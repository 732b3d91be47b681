"""The domain's closed vocabularies, defined once: the table contracts, the engines, fusion and the
dashboard all import them from here."""

from __future__ import annotations

AGENT = "agent"
CUSTOMER = "customer"
ROLES: tuple[str, ...] = (AGENT, CUSTOMER)
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
TONE_LABELS: tuple[str, ...] = ("angry", "anxious", "sad", "neutral_positive")
NEGATIVE_TONES: frozenset[str] = frozenset({"angry", "anxious", "sad"})
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{label}" for label in TONE_LABELS)
