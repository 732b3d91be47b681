"""Where per-call model work runs: Spark tasks (`mapInPandas` over calls, `engines/spark_calls.py`).

Locally a PySpark `local[*]` session; on Databricks the same engine code runs on the job cluster's
session (see `resources/databricks.py`).
"""

from __future__ import annotations

import abc
import json
import os
import sys
import threading

import dagster as dg
import pandas as pd
from pydantic import Field

from callintel_dagster.engines.blob_files import STORAGE_CREDENTIAL_ENV
from callintel_dagster.engines.spark_calls import (
    RESULT_COLUMNS,
    CallTask,
    map_calls_on_spark,
    run_call_task,
    run_call_tasks,
)

__all__ = ["RESULT_COLUMNS", "CallCompute", "CallTask", "LocalSparkCompute", "decode_payloads", "run_call_task",
           "run_call_tasks"]


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
        default=1,
        description="About how many calls one Spark task takes (engines/spark_calls.plan_tasks). 1: each call is a task, "
        "longest first, so the slots end together; more only pays where a task batches its calls' model inputs (a GPU).",
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
        spark = self._session()
        _hand_storage_credentials_to_workers(spark.sparkContext)
        return map_calls_on_spark(
            spark, calls, task, description, calls_per_task=self.calls_per_task, task_cpus=self.task_cpus
        )


def _hand_storage_credentials_to_workers(context) -> None:
    """Spark's Python workers inherit the JVM's environment as it was when the JVM started, so
    storage credentials set later (another profile, a test's emulator) would not reach them. The
    ones the tasks read (`STORAGE_CREDENTIAL_ENV`) go to the workers as they are now, through
    `SparkContext.environment` (what Spark sets on its Python workers), never through the task."""
    for name in STORAGE_CREDENTIAL_ENV:
        if name in os.environ:
            context.environment[name] = os.environ[name]
        else:
            context.environment.pop(name, None)


def decode_payloads(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Concatenate the per-call `{table: rows}` payloads of successful calls into one frame per
    table, stamping each row with its `call_id`."""
    tables: dict[str, list[dict]] = {}
    for result in results[results["status"] == "ok"].itertuples():
        for table, rows in json.loads(result.payload).items():
            tables.setdefault(table, []).extend({**row, "call_id": result.call_id} for row in rows)
    return {table: pd.DataFrame(rows) for table, rows in tables.items()}
