"""Per-call engine tasks as Spark tasks (`mapInPandas` over calls), without Dagster.

The same code runs under the orchestrator's local Spark (`resources/compute.py`) and on a Databricks
job cluster (`databricks_entrypoint.py`), where only the `engines` extra and `dagster-pipes` are
installed. The engine function runs inside Spark's Python workers, which Spark reuses across tasks,
so each model loads once per worker process (engines/model_cache.py).

Each call's result travels back as JSON (`{table: [rows]}`) together with a status, so one bad
recording becomes one quarantined call instead of a failed Spark job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

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
        payload = json.dumps(task(call), default=_to_json)
        status, error = "ok", None
    except Exception as exc:  # noqa: BLE001 - a per-call failure must not fail the other calls
        payload, status = "{}", "error"
        error = f"{call.get('blob_key', call['call_id'])}: {type(exc).__name__}: {exc}"
    return {
        "call_id": call["call_id"],
        "status": status,
        "error": error,
        "payload": payload,
        "seconds": time.perf_counter() - started,
    }


def _spark_partition_runner(task: CallTask, threads: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        # One intra-op thread pool per task core: several Spark tasks share the machine.
        torch.set_num_threads(threads)
        for batch in batches:
            rows = [run_call_task(task, call) for call in batch.to_dict("records")]
            yield pd.DataFrame(rows, columns=RESULT_COLUMNS)

    return run


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
    # Batch calls per task (one model load amortised over them), but never leave a slot idle.
    n_tasks = max(-(-len(calls) // calls_per_task), min(len(calls), spark.sparkContext.defaultParallelism))
    frame = spark.createDataFrame(calls.astype(str)).repartition(n_tasks)
    result = frame.mapInPandas(_spark_partition_runner(task, task_cpus), schema).toPandas()
    return result[RESULT_COLUMNS]
