"""`new_recordings_sensor` with `build_sensor_context` over a real local blob store and a real
(ephemeral) Dagster instance."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.test_utils import instance_for_test
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from callintel_dagster.resources.blob_store import LocalBlobStore
from callintel_dagster.sensors import INGEST_ASSET, SETTLE_ENV, new_recordings_sensor
from callintel_dagster_tests.conftest import DAY_ONE, DAY_TWO, pipeline_run

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def settled(monkeypatch):
    """Uploads count as settled at once (the settle delay has its own test)."""
    monkeypatch.setenv(SETTLE_ENV, "0")


def _tick(store: LocalBlobStore, cursor: str | None, instance: dg.DagsterInstance):
    context = dg.build_sensor_context(cursor=cursor, resources={"blob_store": store}, instance=instance)
    return new_recordings_sensor(context)


def _backdate(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_new_same_and_changed_recordings(blob_root, instance, settled):
    store = LocalBlobStore(root=str(blob_root))
    assert isinstance(_tick(store, None, instance), dg.SkipReason)

    store.write(f"{DAY_TWO}/agent-1__a.wav", b"first")
    first = _tick(store, None, instance)
    assert [r.partition_key for r in first.run_requests] == [DAY_TWO]

    again = _tick(store, first.cursor, instance)
    assert isinstance(again, dg.SkipReason)

    path = blob_root / DAY_TWO / "agent-1__a.wav"
    path.write_bytes(b"replaced with a new version")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 5))
    changed = _tick(store, first.cursor, instance)
    assert [r.partition_key for r in changed.run_requests] == [DAY_TWO]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key


def test_one_run_per_changed_day_and_folders_outside_the_range_are_ignored(blob_root, instance, settled):
    store = LocalBlobStore(root=str(blob_root))
    store.write(f"{DAY_ONE}/a.wav", b"1")
    store.write(f"{DAY_TWO}/b.wav", b"2")
    store.write(f"{DAY_TWO}/c.wav", b"3")
    store.write("1999-01-01/old.wav", b"4")
    result = _tick(store, None, instance)
    assert sorted(r.partition_key for r in result.run_requests) == [DAY_ONE, DAY_TWO]
    assert {r.tags["callintel/recordings"] for r in result.run_requests} == {"1", "2"}

    store.write(f"{DAY_ONE}/d.wav", b"5")
    later = _tick(store, result.cursor, instance)
    assert [r.partition_key for r in later.run_requests] == [DAY_ONE]


def test_first_tick_adopts_ingested_dates_and_requests_only_new_ones(blob_root, instance, settled):
    """Turning the sensor on must not re-run history: DAY_ONE already has a raw_call_audio
    materialization, so the first tick records its folder and requests only DAY_TWO."""
    store = LocalBlobStore(root=str(blob_root))
    store.write(f"{DAY_ONE}/old.wav", b"1")
    store.write(f"{DAY_TWO}/new.wav", b"2")
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=INGEST_ASSET, partition=DAY_ONE))

    first = _tick(store, None, instance)
    assert [r.partition_key for r in first.run_requests] == [DAY_TWO]
    assert isinstance(_tick(store, first.cursor, instance), dg.SkipReason)

    # The adopted folder is watched like any other from now on.
    store.write(f"{DAY_ONE}/late.wav", b"3")
    later = _tick(store, first.cursor, instance)
    assert [r.partition_key for r in later.run_requests] == [DAY_ONE]


def test_first_tick_with_only_ingested_dates_records_them_without_a_run(blob_root, instance, settled):
    store = LocalBlobStore(root=str(blob_root))
    store.write(f"{DAY_ONE}/old.wav", b"1")
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=INGEST_ASSET, partition=DAY_ONE))
    first = _tick(store, None, instance)
    assert isinstance(first, dg.SensorResult) and not first.run_requests
    assert DAY_ONE in first.cursor
    assert isinstance(_tick(store, first.cursor, instance), dg.SkipReason)


def test_a_burst_of_uploads_becomes_one_run_once_settled(blob_root, instance, monkeypatch):
    monkeypatch.setenv(SETTLE_ENV, "120")
    store = LocalBlobStore(root=str(blob_root))
    for name in ("a.wav", "b.wav"):
        store.write(f"{DAY_TWO}/{name}", b"x")
        _backdate(blob_root / DAY_TWO / name, 300)
    store.write(f"{DAY_TWO}/c.wav", b"still uploading")  # written just now

    waiting = _tick(store, None, instance)
    assert isinstance(waiting, dg.SkipReason) and "settling" in waiting.skip_message

    _backdate(blob_root / DAY_TWO / "c.wav", 121)
    settled = _tick(store, None, instance)
    assert [r.partition_key for r in settled.run_requests] == [DAY_TWO]
    assert settled.run_requests[0].tags["callintel/recordings"] == "3"


def test_dagster_yaml_keeps_runs_of_one_date_from_overlapping():
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_coordinator"]
    assert config["class"] == "QueuedRunCoordinator"
    limits = config["config"]["tag_concurrency_limits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_a_second_run_of_the_same_date_stays_queued(tmp_path):
    """The real queued-run daemon's dequeue pass over an instance configured from dagster.yaml (with
    room for ten runs at once): a run of a date that already has one in progress is held back, a run
    of another date is launched."""
    coordinator = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_coordinator"]
    coordinator["config"]["max_concurrent_runs"] = 10
    with instance_for_test(overrides={"run_coordinator": coordinator}, temp_dir=str(tmp_path)) as instance:
        def add(status: dg.DagsterRunStatus, partition: str) -> str:
            return instance.add_run(pipeline_run(status, {"dagster/partition": partition})).run_id

        add(dg.DagsterRunStatus.STARTED, DAY_ONE)
        same_day = add(dg.DagsterRunStatus.QUEUED, DAY_ONE)
        other_day = add(dg.DagsterRunStatus.QUEUED, DAY_TWO)
        with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
            dequeued = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)  # noqa: SLF001
    assert [run.run_id for run in dequeued] == [other_day]
    assert same_day not in {run.run_id for run in dequeued}
