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
    if run_batch is None or len(calls) < 2:
        return [run_call_task(task, call) for call in calls]
    started = time.perf_counter()
    try:
        outcomes = run_batch(calls)
    except Exception:  # noqa: BLE001 - retried call by call, where the failing call is isolated
        return [run_call_task(task, call) for call in calls]
    seconds = (time.perf_counter() - started) / len(calls)
    return [_result_row(call, outcome, seconds) for call, outcome in zip(calls, outcomes, strict=True)]


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


def _spark_partition_runner(task: CallTask, threads: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        # One intra-op thread pool per task core: several Spark tasks share the machine.
        torch.set_num_threads(threads)
        for batch in batches:
            yield pd.DataFrame(run_call_tasks(task, batch.to_dict("records")), columns=RESULT_COLUMNS)

    return run


def call_seconds(call: dict[str, Any]) -> float:
    """The audio a call row puts in its task: a long call's chunk its own span, else the call's
    duration; 1 s when the row does not say, so calls of unknown length are spread by count."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        if is_chunk_row(call):
            return float(call["chunk_end_s"]) - float(call["chunk_start_s"])
        return float(call["duration_s"])
    return 1.0


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
    """One result row per call (`RESULT_COLUMNS`), computed by Spark tasks on `spark`."""
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
    records = calls.astype(str).to_dict("records")
    groups = plan_tasks([call_seconds(call) for call in records], calls_per_task,
                        spark.sparkContext.defaultParallelism)
    columns = list(calls.columns)
    # One planned group per partition (parallelize slices a list of n items into n partitions of one).
    rows = spark.sparkContext.parallelize([[tuple(records[i][c] for c in columns) for i in group] for group in groups],
                                          len(groups)).flatMap(lambda group: group)
    frame = spark.createDataFrame(rows, StructType([StructField(c, StringType(), True) for c in columns]))
    result = frame.mapInPandas(_spark_partition_runner(task, task_cpus), schema).toPandas()
    return result[RESULT_COLUMNS]
