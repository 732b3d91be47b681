"""`materialize()` runs of the ingest and VAD assets against a temp blob store and lakehouse."""

from __future__ import annotations

import dagster as dg

from callintel_dagster.assets import ingest
from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.tools.demo_data import write_sample_call
from callintel_dagster_tests.conftest import DAY_ONE, DAY_TWO, as_date

FOUNDATION = [raw_call_audio, valid_segments]


def _run(resources, partition: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(FOUNDATION, partition_key=partition, resources=resources, raise_on_error=raise_on_error)


def test_bad_input_is_quarantined_and_the_good_call_processed(resources, day_with_bad_input):
    result = _run(resources, DAY_TWO)
    assert result.success
    lakehouse = resources["lakehouse"]

    raw = lakehouse.read("raw_call_audio")
    assert len(raw) == 5
    assert dict(raw["status"].value_counts()) == {"quarantined": 3, "ok": 2}

    quarantine = lakehouse.read("quarantined_calls")
    reasons = {row.blob_key.split("/")[-1]: (row.stage, row.reason) for row in quarantine.itertuples()}
    assert set(reasons) == set(day_with_bad_input)
    for name, expected in day_with_bad_input.items():
        assert expected in reasons[name][1] and name in reasons[name][1]
    assert reasons["agent-bo__silent.wav"][0] == "valid_segments"

    activity = lakehouse.read("speech_activity")
    assert len(activity) == 1 and 0.6 < activity.iloc[0]["speech_ratio"] < 0.9
    segments = lakehouse.read("valid_segments")
    assert set(segments["kind"]) == {"speech", "silence"}
    assert segments["call_id"].nunique() == 1
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)


def test_two_partitions_and_a_rerun_are_idempotent(resources, blob_root):
    write_sample_call(blob_root / DAY_ONE, "agent-1__one.wav")
    write_sample_call(blob_root / DAY_TWO, "agent-2__two.wav")
    _run(resources, DAY_ONE)
    _run(resources, DAY_TWO)
    lakehouse = resources["lakehouse"]
    before = {t: lakehouse.read(t).drop(columns=["run_id", "ingested_at"], errors="ignore") for t in ("raw_call_audio", "valid_segments")}
    _run(resources, DAY_ONE)
    for table, frame in before.items():
        after = lakehouse.read(table).drop(columns=["run_id", "ingested_at"], errors="ignore")
        key = ["call_id"] + (["segment_index"] if "segment_index" in after else [])
        assert len(after) == len(frame)
        assert not after.duplicated(key).any()
        assert after.sort_values(key).reset_index(drop=True).equals(frame.sort_values(key).reset_index(drop=True))
    assert set(lakehouse.read("raw_call_audio")["call_date"]) == {as_date(DAY_ONE), as_date(DAY_TWO)}


def test_a_fixed_recording_leaves_quarantine_on_rerun(resources, blob_root):
    folder = blob_root / DAY_TWO
    folder.mkdir()
    (folder / "agent-1__late.wav").write_bytes(b"")
    _run(resources, DAY_TWO)
    assert len(resources["lakehouse"].read("quarantined_calls")) == 1
    write_sample_call(folder, "agent-1__late.wav")
    _run(resources, DAY_TWO)
    assert resources["lakehouse"].read("quarantined_calls").empty
    assert list(resources["lakehouse"].read("raw_call_audio")["status"]) == ["ok"]


def test_a_contract_violation_blocks_downstream(resources, blob_root, monkeypatch):
    write_sample_call(blob_root / DAY_TWO)
    real = ingest.inventory_recording

    def corrupt_checksum(*args, **kwargs):
        return {**real(*args, **kwargs), "checksum_sha256": "not-a-sha256"}

    monkeypatch.setattr(ingest, "inventory_recording", corrupt_checksum)
    result = _run(resources, DAY_TWO, raise_on_error=False)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.asset_key == dg.AssetKey("raw_call_audio")
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert dg.AssetKey("valid_segments") not in materialized
    assert dg.AssetKey("speech_activity") not in materialized
    assert resources["lakehouse"].read("raw_call_audio").empty


def test_empty_day_succeeds_with_empty_tables(resources, blob_root):
    (blob_root / DAY_TWO).mkdir()  # a day with no calls: the folder exists and holds nothing
    result = _run(resources, DAY_TWO)
    assert result.success
    assert resources["lakehouse"].read("raw_call_audio").empty
