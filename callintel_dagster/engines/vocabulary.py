"""The domain's closed vocabularies, defined once: the table contracts, the engines, fusion and the
dashboard all import them from here."""

from __future__ import annotations

AGENT = "agent"
CUSTOMER = "customer"
# A second agent on the call (a supervisor or specialist the call was transferred to).
OTHER_AGENT = "other_agent"
ROLES: tuple[str, ...] = (AGENT, CUSTOMER, OTHER_AGENT)
# How a recording's channels carry the parties (engines/channels.py) and where a call's roles came from.
MONO = "mono"
SPLIT_STEREO = "split_stereo"
MONO_IN_STEREO = "mono_in_stereo"
MULTICHANNEL = "multichannel"
CHANNEL_LAYOUTS: tuple[str, ...] = (MONO, SPLIT_STEREO, MONO_IN_STEREO, MULTICHANNEL)
ROLE_FROM_CHANNEL_MAP = "channel_map"
ROLE_FROM_DIARIZATION = "diarization"
ROLE_SOURCES: tuple[str, ...] = (ROLE_FROM_CHANNEL_MAP, ROLE_FROM_DIARIZATION)
# How a call's agent speaker was chosen: an enrolled voiceprint, the phrase / first-speaker rule, or
# the channel map of a split-stereo call.
VOICE_ROLE_SOURCES: tuple[str, ...] = ("voiceprint", "heuristic", ROLE_FROM_CHANNEL_MAP)
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
TONE_LABELS: tuple[str, ...] = ("angry", "anxious", "sad", "neutral_positive")
NEGATIVE_TONES: frozenset[str] = frozenset({"angry", "anxious", "sad"})
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{label}" for label in TONE_LABELS)
# High-priority findings that are alerted on (engines/alerts.py), and what became of each delivery.
ALERT_KINDS: tuple[str, ...] = (
    "phi_before_verification", "missing_recording_disclosure", "escalation_unresolved", "anger_at_billing", "qa_priority",
)
ALERT_STATUSES: tuple[str, ...] = ("sent", "failed", "skipped")
# Compliance flags a reviewer counts and drills into (the BI gold layer's `fact_flag`).
BI_FLAGS: tuple[str, ...] = (
    "phi_before_verification", "phi_requested_unnecessarily", "missing_recording_disclosure", "escalation_requested",
    "billing_detected",
)
