"""Per-call engine tasks as Spark tasks (`mapInPandas` over calls), without Dagster.

The same code runs under the orchestrator's local Spark (`resources/compute.py`) and on a Databricks
job cluster (`databricks_entrypoint.py`), where only the `engines` extra and `dagster-pipes` are
installed. The engine function runs inside Spark's Python workers, which Spark reuses across tasks,
so each model loads once per worker process (engines/model_cache.py).

Each call's result travels back as JSON (`{table: [rows]}`) together with a status, so one bad
recording becomes one quarantined call instead of a failed Spark job.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from callintel_dagster.engines.chunking import is_chunk_row
from callintel_dagster.engines.heap import limit_heap_arenas, release_free_heap

CallTask = Callable[[dict[str, Any]], dict[str, list[dict[str, Any]]]]

RESULT_COLUMNS = ["call_id", "status", "error", "payload", "seconds"]


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def run_call_task(task: CallTask, call: dict[str, Any]) -> dict[str, Any]:
    """Run `task` on one call; any exception becomes `status="error"` naming the call and the file."""
    started = time.perf_counter()
    try:
        outcome = task(call)
    except Exception as exc:  # noqa: BLE001 - a per-call failure must not fail the other calls
        outcome = exc
    return _result_row(call, outcome, time.perf_counter() - started)


def run_call_tasks(task: CallTask, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result row per call. A task with `run_batch(calls)` (e.g. `ToneTask`: the windows of all
    the task's calls in one model batch stream) gets them together, and its per-call seconds are the
    batch's wall shared out evenly. If the batch fails as a whole, each call runs alone, so one bad
    call still cannot fail the others."""
    run_batch = getattr(task, "run_batch", None)
    try:
        if run_batch is None or len(calls) < 2:
            return [run_call_task(task, call) for call in calls]
        started = time.perf_counter()
        try:
            outcomes = run_batch(calls)
        except Exception:  # noqa: BLE001 - retried call by call, where the failing call is isolated
            return [run_call_task(task, call) for call in calls]
        seconds = (time.perf_counter() - started) / len(calls)
        return [_result_row(call, outcome, seconds) for call, outcome in zip(calls, outcomes, strict=True)]
    finally:
        # The worker (or the run's process) lives on to the next calls: what the models freed goes
        # back to the system rather than staying mapped (engines/heap.py).
        release_free_heap()


def _result_row(call: dict[str, Any], outcome: Any, seconds: float) -> dict[str, Any]:
    status, error, payload = "ok", None, "{}"
    if not isinstance(outcome, Exception):
        try:
            payload = json.dumps(outcome, default=_to_json)
        except Exception as exc:  # noqa: BLE001 - an unserialisable row fails this call only
            outcome = exc
    if isinstance(outcome, Exception):
        status = "error"
        error = f"{call.get('blob_key', call['call_id'])}: {type(outcome).__name__}: {outcome}"
    return {"call_id": call["call_id"], "status": status, "error": error, "payload": payload, "seconds": seconds}


def _spark_partition_runner(
    task: CallTask, threads: int, planned
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """What each Spark task runs: the calls of the planned groups whose ids reach it
    (`planned` is the broadcast list of groups; one id per task, see `map_calls_on_spark`)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        # One intra-op thread pool per task core: several Spark tasks share the machine.
        torch.set_num_threads(threads)
        limit_heap_arenas()
        for batch in batches:
            for group in batch["id"]:
                yield pd.DataFrame(run_call_tasks(task, planned.value[int(group)]), columns=RESULT_COLUMNS)

    return run


def _warm_up_runner(tasks: list[Any], threads: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        torch.set_num_threads(threads)  # as the stage's tasks will run
        limit_heap_arenas()
        for batch in batches:
            for _slot in batch["id"]:
                started, failures = time.perf_counter(), []
                for task in tasks:
                    try:
                        task.warm_up()
                    except Exception as exc:  # noqa: BLE001 - the stage itself reports a broken model per call
                        failures.append(f"{type(task).__name__}: {type(exc).__name__}: {exc}")
                yield pd.DataFrame({"seconds": [time.perf_counter() - started], "failures": [json.dumps(failures)]})

    return run


def warm_up_workers(spark, tasks: list[Any], task_cpus: int = 1) -> dict[str, Any]:
    """Load the models of `tasks` (objects with `warm_up()`) in every Python worker of `spark`: one
    Spark task per slot, started together, so each lands in a worker of its own, which Spark then
    keeps for the stages' tasks (`spark.python.worker.reuse`). Returns the slowest slot's seconds and
    what failed to load (the stage that needs it reports it again, per call)."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    slots = spark.sparkContext.defaultParallelism
    spark.sparkContext.setJobDescription(f"callintel warm-up of {slots} worker(s)")
    schema = StructType([StructField("seconds", DoubleType(), False), StructField("failures", StringType(), False)])
    rows = spark.range(0, slots, 1, slots).mapInPandas(_warm_up_runner(tasks, task_cpus), schema).toPandas()
    failures = sorted({failure for text in rows["failures"] for failure in json.loads(text)})
    return {"workers": len(rows), "seconds": round(float(rows["seconds"].max()), 2), "failures": failures}


def call_seconds(call: dict[str, Any]) -> float:
    """The audio a call row puts in its task: a long call's chunk its own span, else the call's
    duration; 1 s when the row does not say, so calls of unknown length are spread by count."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        if is_chunk_row(call):
            return float(call["chunk_end_s"]) - float(call["chunk_start_s"])
        return float(call["duration_s"])
    return 1.0


# A task object that is cheap per call says so with `packs_calls = True` (tone windows, loudness):
# its calls are packed into a few Spark tasks of up to this much audio each, rather than one task per
# call. On local PySpark a task costs about 0.2 s of its own (the Arrow round trip to the Python
# worker: 40 empty one-call tasks took 4-5 s on 2 slots, 2 tasks 0.2-0.4 s), more than such a call's
# own work; the bound keeps the audio one task holds at once (`run_batch`) to ~115 MB of float32.
PACKED_TASK_MAX_AUDIO_S = 1800.0


def packed_calls_per_task(seconds: list[float], slots: int) -> int:
    """Calls per task for a task object that `packs_calls`: one round over the slots, or as many
    rounds as keep each task under `PACKED_TASK_MAX_AUDIO_S` of audio."""
    tasks = max(slots, -(-int(sum(seconds)) // int(PACKED_TASK_MAX_AUDIO_S)))
    return max(1, -(-len(seconds) // tasks))


def plan_tasks(seconds: list[float], calls_per_task: int, slots: int) -> list[list[int]]:
    """Calls (by index) grouped into Spark tasks, heaviest task first, so every slot stays busy.

    At least one task per slot, and a whole number of rounds over the slots (3 tasks on 2 slots
    leave one slot idle through the last); about `calls_per_task` calls each. Longest calls first,
    each to the task with the least audio so far: the tasks end close together, and as Spark starts
    tasks in order, the longest start first.
    """
    n = len(seconds)
    if n == 0:
        return []
    wanted = max(-(-n // max(1, calls_per_task)), slots)
    n_tasks = min(n, -(-wanted // slots) * slots)
    loads, groups = [0.0] * n_tasks, [[] for _ in range(n_tasks)]
    for index in sorted(range(n), key=lambda i: -seconds[i]):
        target = min(range(n_tasks), key=lambda t: (loads[t], len(groups[t])))
        loads[target] += seconds[index]
        groups[target].append(index)
    return [groups[t] for t in sorted(range(n_tasks), key=lambda t: -loads[t])]


def map_calls_on_spark(
    spark, calls: pd.DataFrame, task: CallTask, description: str, *, calls_per_task: int, task_cpus: int
) -> pd.DataFrame:
    """One result row per call (`RESULT_COLUMNS`), computed by Spark tasks on `spark`.

    The planned groups of call rows travel as one broadcast variable, and the job is `spark.range`
    over the group ids, one id per partition, into `mapInPandas`: each task is a single Python
    evaluation. (Building the rows in Python through `parallelize` ran every task through a second
    Python worker: 3.3 s against 2.9 s for 27 empty tasks on 2 cores, and twice the worker processes.)
    """
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    spark.sparkContext.setJobDescription(description)
    schema = StructType(
        [
            StructField("call_id", StringType(), False),
            StructField("status", StringType(), False),
            StructField("error", StringType(), True),
            StructField("payload", StringType(), False),
            StructField("seconds", DoubleType(), False),
        ]
    )
    # Text, as a table column would hand it over: tasks parse what they need.
    records = calls.astype(str).to_dict("records")
    seconds, slots = [call_seconds(call) for call in records], spark.sparkContext.defaultParallelism
    if getattr(task, "packs_calls", False):
        calls_per_task = max(calls_per_task, packed_calls_per_task(seconds, slots))
    groups = plan_tasks(seconds, calls_per_task, slots)
    planned = spark.sparkContext.broadcast([[records[i] for i in group] for group in groups])
    try:
        result = (spark.range(0, len(groups), 1, len(groups))
                  .mapInPandas(_spark_partition_runner(task, task_cpus, planned), schema).toPandas())
    finally:
        planned.destroy()
    return result[RESULT_COLUMNS]
