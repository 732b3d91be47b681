"""`new_recordings_sensor` with `build_sensor_context` over a real local blob store."""

from __future__ import annotations

import os

import dagster as dg

from callintel_dagster.resources.blob_store import LocalBlobStore
from callintel_dagster.sensors import new_recordings_sensor
from callintel_dagster_tests.conftest import DAY_ONE, DAY_TWO


def _tick(store: LocalBlobStore, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources={"blob_store": store})
    return new_recordings_sensor(context)


def test_new_same_and_changed_recordings(blob_root):
    store = LocalBlobStore(root=str(blob_root))
    assert isinstance(_tick(store, None), dg.SkipReason)

    store.write(f"{DAY_TWO}/agent-1__a.wav", b"first")
    first = _tick(store, None)
    assert [r.partition_key for r in first.run_requests] == [DAY_TWO]

    again = _tick(store, first.cursor)
    assert isinstance(again, dg.SkipReason)

    path = blob_root / DAY_TWO / "agent-1__a.wav"
    path.write_bytes(b"replaced with a new version")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    changed = _tick(store, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == [DAY_TWO]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key


def test_one_run_per_changed_day_and_folders_outside_the_range_are_ignored(blob_root):
    store = LocalBlobStore(root=str(blob_root))
    store.write(f"{DAY_ONE}/a.wav", b"1")
    store.write(f"{DAY_TWO}/b.wav", b"2")
    store.write(f"{DAY_TWO}/c.wav", b"3")
    store.write("1999-01-01/old.wav", b"4")
    result = _tick(store, None)
    assert sorted(r.partition_key for r in result.run_requests) == [DAY_ONE, DAY_TWO]
    assert {r.tags["callintel/recordings"] for r in result.run_requests} == {"1", "2"}

    store.write(f"{DAY_ONE}/d.wav", b"5")
    later = _tick(store, result.cursor)
    assert [r.partition_key for r in later.run_requests] == [DAY_ONE]
