"""Delta MERGE semantics of the lakehouse, and the blob-store contract: the local store, the Azure
implementation on fsspec's memory filesystem, and the Azure implementation on Azurite (adlfs)."""

from __future__ import annotations

import datetime as dt

import fsspec
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from callintel_dagster.engines.blob_files import local_file_of_url, open_url_for_write
from callintel_dagster.resources.blob_store import (
    FOLDER_MARKER,
    AzureBlobStore,
    BlobStore,
    LocalBlobStore,
    MissingLocationError,
    redacted_copy_key,
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


@pytest.fixture(params=["local", "azure-memory", "azurite"])
def store(request, tmp_path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(root=str(tmp_path / "blobs"))
    if request.param == "azurite":
        return request.getfixturevalue("azure_store")
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


@pytest.mark.parametrize("kind", ["local", "azurite"])
def test_a_task_reads_and_writes_blobs_by_url_with_the_credentials_of_its_environment(kind, request, tmp_path):
    """What a model task does on a worker: open the recording's URL and write the masked copy to
    another, with `engines.blob_files` and no credential in the URL (adlfs reads the environment)."""
    store = LocalBlobStore(root=str(tmp_path / "blobs")) if kind == "local" else request.getfixturevalue("azure_store")
    key = "2026-11-24/agent-1__a.wav"
    store.write(key, b"RIFF recording")
    url = store.url(key)
    assert url.startswith("file:///" if kind == "local" else f"abfs://{store.container}@devstoreaccount1.dfs.core.windows.net/")
    assert "AccountKey" not in url and "sig=" not in url
    with local_file_of_url(url) as path:
        assert path.read_bytes() == b"RIFF recording"
    masked = redacted_copy_key(key, "redacted")
    assert masked == "2026-11-24/redacted/agent-1__a.redacted.wav"
    with open_url_for_write(store.url(masked)) as handle:
        handle.write(b"RIFF masked")
    with store.local_copy(masked) as path:
        assert path.read_bytes() == b"RIFF masked"
    assert [b.key for b in store.list_recordings("2026-11-24")] == [key]  # masked copies are never calls

    # Erasure deletes both; the day stays a day (empty), not a missing folder.
    assert store.delete(masked) and store.delete(key)
    assert store.list_recordings("2026-11-24") == []
    assert store.date_folders() == ["2026-11-24"]
    if kind == "azurite":  # a flat namespace keeps the folder with a marker blob, never listed as a call
        with store.local_copy(f"2026-11-24/{FOLDER_MARKER}") as path:
            assert path.read_bytes() == b""

