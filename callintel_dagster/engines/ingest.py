"""Inventory of one recording: identity, checksum, container facts, and whether it is usable."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from callintel_dagster.engines.audio import AudioDecodeError, probe_audio, sha256_of
from callintel_dagster.engines.channels import measure_layout

AGENT_SEPARATOR = "__"


def call_id_for(blob_key: str) -> str:
    """Stable id from the blob path: the same recording keeps its id across re-runs and versions."""
    return hashlib.sha1(blob_key.encode("utf-8")).hexdigest()[:16]


def agent_id_for(blob_key: str) -> str | None:
    """`<date>/<agent_id>__<rest>.<ext>` names the agent; files without the prefix have none."""
    name = blob_key.rsplit("/", 1)[-1]
    return name.split(AGENT_SEPARATOR, 1)[0] if AGENT_SEPARATOR in name else None


def inventory_recording(path: Path, blob_key: str, max_bytes: int, max_duration_s: float) -> dict:
    """Probe one recording, and measure how its channels carry the parties (`engines/channels.py`:
    a two-channel file is decoded once for that). Problems become `status="quarantined"` with a
    reason, never an exception."""
    size = path.stat().st_size
    row: dict = {
        "call_id": call_id_for(blob_key),
        "blob_key": blob_key,
        "agent_id": agent_id_for(blob_key),
        "size_bytes": size,
        "checksum_sha256": sha256_of(path),
        "duration_s": None,
        "sample_rate": None,
        "channels": None,
        "codec": None,
        "channel_layout": None,
        "channel_separation": None,
        "status": "ok",
        "error": None,
    }
    try:
        if size > max_bytes:
            raise AudioDecodeError(f"{path.name}: {size} bytes exceeds the {max_bytes}-byte limit")
        probe = probe_audio(path)
        row.update(
            duration_s=None if math.isnan(probe.duration_s) else probe.duration_s,
            sample_rate=probe.sample_rate,
            channels=probe.channels,
            codec=probe.codec,
        )
        if probe.sample_rate <= 0 or probe.channels <= 0:
            raise AudioDecodeError(f"{path.name}: invalid stream (sample rate {probe.sample_rate}, {probe.channels} channels)")
        if row["duration_s"] is not None and row["duration_s"] > max_duration_s:
            raise AudioDecodeError(
                f"{path.name}: {row['duration_s']:.0f} s exceeds the {max_duration_s:.0f}-second limit"
            )
        layout = measure_layout(path, probe.channels)
        row.update(channel_layout=layout.layout, channel_separation=layout.separation)
    except AudioDecodeError as exc:
        row.update(status="quarantined", error=str(exc))
    return row
