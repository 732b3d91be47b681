"""Shared fixtures: a temp blob store + lakehouse per test, the real sample call, bad recordings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from callintel_dagster.demo_data import write_bad_recordings, write_sample_call
from callintel_dagster.resources.blob_store import LocalBlobStore
from callintel_dagster.resources.lakehouse import DeltaLakehouse
from callintel_dagster.resources.settings import AudioSettings

DAY_ONE = "2026-11-23"
DAY_TWO = "2026-11-24"


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    root = tmp_path / "blobs"
    root.mkdir()
    return root


@pytest.fixture
def lakehouse(tmp_path: Path) -> DeltaLakehouse:
    return DeltaLakehouse(root=str(tmp_path / "lakehouse"))


@pytest.fixture
def resources(blob_root: Path, lakehouse: DeltaLakehouse) -> dict:
    return {
        "blob_store": LocalBlobStore(root=str(blob_root)),
        "lakehouse": lakehouse,
        "audio_settings": AudioSettings(),
    }


@pytest.fixture
def day_with_bad_input(blob_root: Path) -> dict[str, str]:
    """DAY_TWO holds the real sample call plus one file per failure mode."""
    folder = blob_root / DAY_TWO
    write_sample_call(folder)
    return write_bad_recordings(folder)


def as_date(key: str) -> dt.date:
    return dt.date.fromisoformat(key)
