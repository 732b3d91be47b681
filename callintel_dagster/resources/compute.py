"""Where per-call model work runs: Spark tasks (`mapInPandas` over calls).

Locally a PySpark `local[*]` session; on Databricks the same code runs on the job cluster's session
(see `resources/databricks.py`). The engine function runs inside Spark's Python workers, which Spark
reuses across tasks, so each model loads once per worker process (engines/model_cache.py).

Each call's result travels back as JSON (`{table: [rows]}`) together with a status, so one bad
recording becomes one quarantined call instead of a failed Spark job.
"""

from __future__ import annotations

import abc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

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


class CallCompute(dg.ConfigurableResource, abc.ABC):
    """Runs a per-call engine task over many calls and returns one result row per call."""

    @abc.abstractmethod
    def map_calls(self, calls: pd.DataFrame, task: CallTask, description: str) -> pd.DataFrame:
        """`calls` needs a `call_id` column; returns `RESULT_COLUMNS`, one row per input call."""


_session_lock = threading.Lock()


class LocalSparkCompute(CallCompute):
    """PySpark in local mode: one Spark task per call group, models cached per Python worker."""

    master: str = Field(default="local[*]", description="Spark master URL; `local[N]` caps the cores used.")
    task_cpus: int = Field(default=1, description="Cores per Spark task; torch uses this many intra-op threads.")
    calls_per_task: int = Field(
        default=4, description="Most calls batched into one Spark task; a day with fewer calls than slots gets a task per call."
    )
    driver_memory: str = Field(default="2g", description="spark.driver.memory for the local JVM.")

    def _session(self):
        from pyspark.sql import SparkSession

        from callintel_dagster.engines.jit_cache import ensure_published_cache

        with _session_lock:
            # Built once per user and library versions; every Python worker then starts warm.
            ensure_published_cache()
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            return (
                SparkSession.builder.master(self.master)
                .appName("callintel")
                .config("spark.driver.memory", self.driver_memory)
                .config("spark.task.cpus", str(self.task_cpus))
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .config("spark.python.worker.reuse", "true")
                .config("spark.ui.enabled", "false")
                .config("spark.sql.shuffle.partitions", "4")
                .getOrCreate()
            )

    def map_calls(self, calls: pd.DataFrame, task: CallTask, description: str) -> pd.DataFrame:
        if calls.empty:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        from pyspark.sql.types import DoubleType, StringType, StructField, StructType

        spark = self._session()
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
        # Batch calls per task (one model load amortised over them), but never leave a slot idle.
        n_tasks = max(-(-len(calls) // self.calls_per_task), min(len(calls), spark.sparkContext.defaultParallelism))
        frame = spark.createDataFrame(calls.astype(str)).repartition(n_tasks)
        result = frame.mapInPandas(_spark_partition_runner(task, self.task_cpus), schema).toPandas()
        return result[RESULT_COLUMNS]


def decode_payloads(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Concatenate the per-call `{table: rows}` payloads of successful calls into one frame per
    table, stamping each row with its `call_id`."""
    tables: dict[str, list[dict]] = {}
    for result in results[results["status"] == "ok"].itertuples():
        for table, rows in json.loads(result.payload).items():
            tables.setdefault(table, []).extend({**row, "call_id": result.call_id} for row in rows)
    return {table: pd.DataFrame(rows) for table, rows in tables.items()}
