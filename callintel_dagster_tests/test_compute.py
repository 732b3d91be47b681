"""The Spark compute resource: real PySpark local mode, one result per call, errors isolated."""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest

from callintel_dagster.engines.spark_calls import (
    PACKED_TASK_MAX_AUDIO_S,
    call_seconds,
    packed_calls_per_task,
    plan_tasks,
)
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


def _slot_ends(loads: list[float], slots: int) -> list[float]:
    """When each slot ends if it takes the next task in order as soon as it is free (as Spark does)."""
    ends = [0.0] * slots
    for load in loads:
        ends[ends.index(min(ends))] += load
    return ends


SECONDS = [300.0, 30.0, 30.0, 30.0, 200.0, 30.0, 30.0, 100.0, 30.0, 30.0, 30.0]


def test_one_call_per_task_longest_first_ends_both_slots_together():
    groups = plan_tasks(SECONDS, calls_per_task=1, slots=2)
    assert sorted(groups) == [[i] for i in range(11)]
    loads = [SECONDS[group[0]] for group in groups]
    assert loads == sorted(loads, reverse=True), "the longest call starts first"
    first, second = _slot_ends(loads, 2)
    assert abs(first - second) <= 30.0, "the slots end within one short call of each other"


def test_batched_tasks_make_whole_rounds_over_the_slots():
    # 11 calls at 4 per task would be 3 tasks, one slot idle through the third: 4 tasks instead.
    groups = plan_tasks(SECONDS, calls_per_task=4, slots=2)
    assert len(groups) == 4 and sorted(i for group in groups for i in group) == list(range(11))
    loads = [sum(SECONDS[i] for i in group) for group in groups]
    assert loads == sorted(loads, reverse=True) and groups[0] == [0]
    assert plan_tasks([5.0], calls_per_task=4, slots=2) == [[0]] and plan_tasks([], 4, 2) == []


def test_call_seconds_reads_a_chunks_span_and_survives_missing_durations():
    assert call_seconds({"duration_s": "61.5"}) == 61.5
    assert call_seconds({"duration_s": 7200.0, "chunk_start_s": "600.0", "chunk_end_s": "1190.5"}) == 590.5
    assert call_seconds({"duration_s": "3.0", "chunk_start_s": "nan"}) == 3.0
    assert call_seconds({"call_id": "x"}) == 1.0


def _partition_task(call: dict) -> dict:
    from pyspark import TaskContext

    return {"rows": [{"partition": TaskContext.get().partitionId()}]}


def test_each_planned_group_runs_as_one_spark_task(compute):
    seconds = [300.0, 30.0, 30.0, 200.0, 30.0, 100.0]
    calls = pd.DataFrame({"call_id": [f"call-{i:08d}" for i in range(6)], "duration_s": seconds})
    rows = decode_payloads(compute.map_calls(calls, _partition_task, "planned"))["rows"].set_index("call_id")
    for task, group in enumerate(plan_tasks(seconds, calls_per_task=2, slots=2)):
        assert set(rows.loc[[f"call-{i:08d}" for i in group], "partition"]) == {task}


def test_cheap_calls_are_packed_into_one_round_of_bounded_tasks():
    # 27 one-minute calls: one task per slot, balanced by audio, not 27 tasks of Spark overhead each.
    minutes = [60.0] * 27
    groups = plan_tasks(minutes, packed_calls_per_task(minutes, slots=2), slots=2)
    assert sorted(len(group) for group in groups) == [13, 14]
    # More audio than a task may hold at once: whole rounds of tasks under the bound.
    hours = [600.0] * 30
    groups = plan_tasks(hours, packed_calls_per_task(hours, slots=2), slots=2)
    assert len(groups) % 2 == 0 and max(sum(hours[i] for i in g) for g in groups) <= PACKED_TASK_MAX_AUDIO_S
    assert packed_calls_per_task([7200.0], slots=2) == 1


class _PackedPartitionTask:
    packs_calls = True

    def __call__(self, call: dict) -> dict:
        return _partition_task(call)


def test_a_task_that_packs_calls_runs_one_spark_task_per_slot(compute):
    calls = pd.DataFrame({"call_id": [f"call-{i:08d}" for i in range(9)], "duration_s": [60.0] * 9})
    rows = decode_payloads(compute.map_calls(calls, _PackedPartitionTask(), "packed"))["rows"]
    assert sorted(rows.groupby("partition").size()) == [4, 5]
    # The same calls as plain tasks: at compute.calls_per_task (2) each.
    rows = decode_payloads(compute.map_calls(calls, _partition_task, "plain"))["rows"]
    assert rows["partition"].nunique() == 6


class _WarmableTask:
    """Its `warm_up` loads a 'model' (the worker's pid) into the process-wide model cache."""

    def warm_up(self) -> None:
        from callintel_dagster.engines.model_cache import cached_model

        cached_model(("test-warm-up",), os.getpid)

    def __call__(self, call: dict) -> dict:
        from callintel_dagster.engines.model_cache import loaded_model_keys

        return {"rows": [{"warm": ("test-warm-up",) in loaded_model_keys(), "pid": os.getpid()}]}


class _BrokenWarmUp:
    def warm_up(self) -> None:
        raise RuntimeError("no weights at /nowhere")


def test_warm_up_loads_the_models_in_the_workers_the_stage_then_uses(compute):
    # A short VAD stage ends before a warm-up would: none starts.
    assert compute.warm_up([_WarmableTask()], audio_s=compute.warm_up_min_audio_s - 1) is None
    outcome = compute.warm_up([_BrokenWarmUp(), _WarmableTask()], audio_s=compute.warm_up_min_audio_s)
    # Returns at once; the workers warm up in the background, and one broken model stops nothing.
    message = outcome.result(timeout=300)
    assert message.startswith("2 Spark worker(s) warmed up in") and "_BrokenWarmUp: RuntimeError: no weights" in message
    calls = pd.DataFrame({"call_id": [f"call-{i:08d}" for i in range(6)], "duration_s": [30.0] * 6})
    rows = decode_payloads(compute.map_calls(calls, _WarmableTask(), "after the warm-up"))["rows"]
    assert rows["warm"].all() and os.getpid() not in set(rows["pid"])
    assert LocalSparkCompute(warm_workers=False).warm_up([_WarmableTask()], audio_s=3600.0) is None


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


_builds = {"n": 0}


def _model_task(call: dict) -> dict:
    from callintel_dagster.engines.model_cache import cached_model

    def build() -> str:
        _builds["n"] += 1
        return "model"

    cached_model(("test-shared-model",), build)
    return {"rows": [{"pid": os.getpid(), "builds": _builds["n"], "numba_cache": os.environ.get("NUMBA_CACHE_DIR", "")}]}


def test_stages_share_one_spark_app_whose_workers_keep_their_models(compute):
    """Two model stages of a run (two Spark jobs on the one session): the second stage's tasks run in
    the Python workers of the first, which built the shared model once and reuse it."""
    calls = pd.DataFrame({"call_id": [f"call-{i:08d}" for i in range(4)], "blob_key": ["x"] * 4})
    first = decode_payloads(compute.map_calls(calls, _model_task, "stage one"))["rows"]
    application = compute._session().sparkContext.applicationId
    second = decode_payloads(compute.map_calls(calls, _model_task, "stage two"))["rows"]
    assert compute._session().sparkContext.applicationId == application
    assert set(second["pid"]) <= set(first["pid"])
    assert set(first["builds"]) == {1} and set(second["builds"]) == {1}  # never rebuilt in a worker
    # Each worker reads numba's cache through its own folder (engines/jit_cache.py).
    assert first.groupby("pid")["numba_cache"].nunique().eq(1).all() and first["numba_cache"].nunique() == first["pid"].nunique()


class _BatchTask:
    """A task that scores its calls together; the call named 'poison' fails the whole batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, call: dict) -> dict:
        if call["call_id"] == "poison":
            raise RuntimeError("poisoned call")
        return {"rows": [{"alone": True}]}

    def run_batch(self, calls: list[dict]) -> list:
        self.batches.append([call["call_id"] for call in calls])
        if any(call["call_id"] == "poison" for call in calls):
            raise MemoryError("the batch as a whole failed")
        return [ValueError("undecodable") if call["call_id"] == "bad" else {"rows": [{"alone": False}]} for call in calls]


def test_batch_tasks_get_their_calls_together_and_failures_stay_per_call():
    from callintel_dagster.resources.compute import run_call_tasks

    task = _BatchTask()
    rows = run_call_tasks(task, [{"call_id": "a"}, {"call_id": "bad"}, {"call_id": "b"}])
    assert task.batches == [["a", "bad", "b"]]
    assert [row["status"] for row in rows] == ["ok", "error", "ok"]
    assert "ValueError: undecodable" in rows[1]["error"] and '"alone": false' in rows[0]["payload"]
    # A batch that fails as a whole is retried call by call: only the culprit fails.
    rows = run_call_tasks(task, [{"call_id": "a"}, {"call_id": "poison"}])
    assert [row["status"] for row in rows] == ["ok", "error"] and '"alone": true' in rows[0]["payload"]
    assert "RuntimeError: poisoned call" in rows[1]["error"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="glibc heap on Linux")
def test_a_worker_gives_the_heap_its_models_freed_back_to_the_system():
    """What a task frees in the middle of the heap stays mapped until `malloc_trim`: a worker that
    lives on to the next calls returns it (engines/heap.py, after every task group)."""
    import numpy as np
    import psutil

    from callintel_dagster.engines.heap import release_free_heap

    process = psutil.Process()
    blocks = [np.ones(1024) for _ in range(20_000)]  # 160 MB in 8 kB pieces on the heap
    kept = blocks[::10]  # the survivors pin the heap's top: plain free() cannot shrink it
    del blocks
    held = process.memory_info().rss
    assert release_free_heap()
    assert held - process.memory_info().rss > 100 * 2**20
    assert len(kept) == 2_000
