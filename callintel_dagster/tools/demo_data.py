"""Demo and test recordings: the real sample call from the pyannote.audio wheel, plus the kinds of
broken input production sees (empty, truncated, not audio, silent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile

from callintel_dagster.engines.reference import sample_call_path


def write_sample_call(folder: Path, name: str = "agent-ana__sample-call.wav") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(sample_call_path(), target)
    return target


def write_bad_recordings(folder: Path) -> dict[str, str]:
    """Write one file per failure mode; returns {file name: the reason class expected}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent-bo__empty.wav").write_bytes(b"")
    sample = sample_call_path().read_bytes()
    (folder / "agent-bo__truncated.wav").write_bytes(sample[:40])
    (folder / "agent-bo__not-audio.mp3").write_bytes(b"%PDF-1.4 this is a scanned invoice, not a recording\n" * 50)
    soundfile.write(folder / "agent-bo__silent.wav", np.zeros(16_000 * 5, dtype=np.float32), 16_000)
    return {
        "agent-bo__empty.wav": "empty",
        "agent-bo__truncated.wav": "decod",
        "agent-bo__not-audio.mp3": "decod",
        "agent-bo__silent.wav": "silent",
    }
