"""Delta MERGE semantics of the lakehouse, and the blob-store contract (local + Azure code path)."""

from __future__ import annotations

import datetime as dt

import fsspec
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from callintel_dagster.resources.blob_store import (
    AzureBlobStore,
    BlobStore,
    LocalBlobStore,
    MissingLocationError,
)
from callintel_dagster.resources.lakehouse import DeltaLakehouse

D1, D2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)


def _frame(call_date: dt.date, ids: list[str], value: float) -> pa.Table:
    return pa.table(
        {
            "call_id": ids,
            "call_date": pa.array([call_date] * len(ids), pa.date32()),
            "value": [value] * len(ids),
        }
    )


def test_merge_replaces_exactly_one_partition(lakehouse: DeltaLakehouse):
    lakehouse.merge_partition("t", _frame(D1, ["a", "b"], 1.0), ["call_id"], D1)
    lakehouse.merge_partition("t", _frame(D2, ["a", "c"], 2.0), ["call_id"], D2)
    # Re-run D1: "b" is gone from the source, "a" changes, "d" is new; D2 is untouched.
    lakehouse.merge_partition("t", _frame(D1, ["a", "d"], 3.0), ["call_id"], D1)
    lakehouse.merge_partition("t", _frame(D1, ["a", "d"], 3.0), ["call_id"], D1)
    rows = lakehouse.read("t").sort_values(["call_date", "call_id"])
    assert list(zip(rows["call_date"].astype(str), rows["call_id"], rows["value"])) == [
        ("2026-11-23", "a", 3.0),
        ("2026-11-23", "d", 3.0),
        ("2026-11-24", "a", 2.0),
        ("2026-11-24", "c", 2.0),
    ]
    table = DeltaTable(lakehouse.table_uri("t"))
    assert table.metadata().partition_columns == ["call_date"]
    assert table.schema().to_arrow().field("call_date").type == pa.date32()
    assert list(lakehouse.read("t", [D2])["call_id"].sort_values()) == ["a", "c"]


def test_scope_limits_the_delete_to_one_stage(lakehouse: DeltaLakehouse):
    def frame(stage: str, ids: list[str]) -> pa.Table:
        return pa.table({"call_id": ids, "call_date": pa.array([D1] * len(ids), pa.date32()), "stage": [stage] * len(ids)})

    lakehouse.merge_partition("q", frame("ingest", ["a"]), ["call_id", "stage"], D1, scope={"stage": "ingest"})
    lakehouse.merge_partition("q", frame("vad", ["b"]), ["call_id", "stage"], D1, scope={"stage": "vad"})
    lakehouse.merge_partition("q", frame("vad", []), ["call_id", "stage"], D1, scope={"stage": "vad"})
    assert list(lakehouse.read("q")["call_id"]) == ["a"]


def test_reading_a_missing_table_is_empty(lakehouse: DeltaLakehouse):
    assert lakehouse.read("nothing_here").empty
    assert lakehouse.tables() == []


class MemoryAzureBlobStore(AzureBlobStore):
    """The Azure implementation with fsspec's in-memory filesystem in place of adlfs (no network)."""

    def _filesystem(self):
        return fsspec.filesystem("memory")


@pytest.fixture(params=["local", "azure"])
def store(request, tmp_path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(root=str(tmp_path / "blobs"))
    fsspec.filesystem("memory").store.clear()
    return MemoryAzureBlobStore(account_name="acct", container="calls", prefix="incoming")


def test_blob_store_contract(store: BlobStore):
    with pytest.raises(MissingLocationError, match="recordings root .* does not exist"):
        store.list_recordings()
    store.write("2026-11-24/agent-1__a.wav", b"RIFF....")
    store.write("2026-11-24/notes.txt", b"not a recording")
    store.write("2026-11-25/b.flac", b"fLaC")
    store.write("misc/c.wav", b"RIFF")  # not a date folder: ignored
    assert store.date_folders() == ["2026-11-24", "2026-11-25"]
    day = store.list_recordings("2026-11-24")
    assert [b.key for b in day] == ["2026-11-24/agent-1__a.wav"]
    assert day[0].size == 8 and day[0].call_date == "2026-11-24"
    assert [b.key for b in store.list_recordings()] == ["2026-11-24/agent-1__a.wav", "2026-11-25/b.flac"]
    with store.local_copy("2026-11-25/b.flac") as path:
        assert path.read_bytes() == b"fLaC"
    with pytest.raises(MissingLocationError, match="no folder .*2026-11-26"):
        store.list_recordings("2026-11-26")


def test_blob_version_changes_when_content_is_replaced(store: BlobStore):
    store.write("2026-11-24/a.wav", b"one")
    before = store.list_recordings("2026-11-24")[0].version
    store.write("2026-11-24/a.wav", b"second version")
    assert store.list_recordings("2026-11-24")[0].version != before


def test_call_ids_limit_the_replacement_to_those_calls(lakehouse: DeltaLakehouse):
    lakehouse.merge_partition("t", _frame(D1, ["a", "b", "c"], 1.0), ["call_id"], D1)
    # Re-process only "a" and "b": "a" is updated, "b" produced no row now (deleted), "c" untouched.
    lakehouse.merge_partition("t", _frame(D1, ["a"], 5.0), ["call_id"], D1, call_ids=["a", "b"])
    rows = lakehouse.read("t").sort_values("call_id")
    assert list(zip(rows["call_id"], rows["value"])) == [("a", 5.0), ("c", 1.0)]


def test_delete_is_idempotent(store: BlobStore):
    store.write("2026-11-24/a.wav", b"x")
    assert store.delete("2026-11-24/a.wav") is True
    assert store.delete("2026-11-24/a.wav") is False
    assert store.list_recordings("2026-11-24") == []
