"""The Spark compute resource: real PySpark local mode, one result per call, errors isolated."""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest

from callintel_dagster.resources.compute import LocalSparkCompute, decode_payloads


def _task(call: dict) -> dict:
    if call["call_id"] == "bad-call-0000":
        raise ValueError("cannot decode")
    return {"rows": [{"pid": os.getpid(), "n": int(call["n"]) * 2}]}


@pytest.fixture(scope="module")
def compute() -> LocalSparkCompute:
    return LocalSparkCompute(master="local[2]", calls_per_task=2)


def test_map_calls_runs_in_spark_workers_and_isolates_failures(compute):
    calls = pd.DataFrame(
        {"call_id": [f"call-{i:08d}" for i in range(5)] + ["bad-call-0000"], "n": list(range(5)) + [9], "blob_key": ["x"] * 6}
    )
    results = compute.map_calls(calls, _task, "test")
    assert sorted(results["call_id"]) == sorted(calls["call_id"])
    bad = results.set_index("call_id").loc["bad-call-0000"]
    assert bad["status"] == "error" and "ValueError: cannot decode" in bad["error"]
    rows = decode_payloads(results)["rows"]
    assert sorted(rows["n"]) == [0, 2, 4, 6, 8]
    assert sorted(rows["call_id"]) == sorted(calls["call_id"][:5])
    assert os.getpid() not in set(rows["pid"])  # ran in Spark's Python workers, not the driver


def test_no_calls_means_no_spark_job(compute):
    assert compute.map_calls(pd.DataFrame(columns=["call_id"]), _task, "empty").empty


def _storage_token_task(call: dict) -> dict:
    return {"env": [{"sas_token": os.environ.get("AZURE_STORAGE_SAS_TOKEN", "")}]}


def test_workers_read_the_storage_credentials_as_they_are_now_not_as_the_jvm_started(compute, monkeypatch):
    """A storage credential set after the JVM (and its Python workers) started reaches the tasks,
    and one removed since is gone from them: the workers open blob URLs with their own environment."""
    calls = pd.DataFrame({"call_id": ["call-00000001"]})

    def token_seen() -> str:
        return decode_payloads(compute.map_calls(calls, _storage_token_task, "env"))["env"]["sas_token"].item()

    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    assert token_seen() == ""
    token = f"sas-{uuid.uuid4().hex}"
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", token)
    assert token_seen() == token
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN")
    assert token_seen() == ""

