"""Audio limits, VAD knobs and the channel map, as one resource so every stage reads the same values."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from callintel_dagster.engines.vad import VadConfig


class AudioSettings(dg.ConfigurableResource):
    """Limits that decide when a recording is quarantined instead of processed."""

    max_bytes: int = Field(default=2 * 1024**3, description="Recordings larger than this are quarantined.")
    max_duration_s: float = Field(default=3 * 3600, description="Recordings longer than this are quarantined.")
    min_speech_s: float = Field(
        default=0.5, description="A call with less detected speech than this is quarantined as silent/dead air."
    )
    vad_threshold: float = Field(default=0.5, description="silero-vad speech probability threshold.")
    vad_min_silence_ms: int = Field(default=300, description="Pauses shorter than this do not split a segment.")
    flagged_silence_s: float = Field(default=1.0, description="Silences at least this long are flagged as dead air.")
    max_vanished_share: float = Field(
        default=0.5,
        description="A listing in which more than this share of a day's known recordings has vanished fails the "
        "ingest instead of deleting their rows, unless the run sets `raw_call_audio.config.allow_purge`.",
    )

    agent_channel: Literal["left", "right"] = Field(
        default="left",
        description="The channel map of two-channel recordings with one party per channel (split_stereo): the "
        "agent's channel; the other one is the customer's. Mono and mono-in-stereo files are diarized instead.",
    )

    def vad_config(self) -> VadConfig:
        return VadConfig(
            threshold=self.vad_threshold,
            min_silence_duration_ms=self.vad_min_silence_ms,
            min_flagged_silence_s=self.flagged_silence_s,
        )
