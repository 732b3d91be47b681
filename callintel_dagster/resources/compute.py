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
from collections.abc import Sequence
from concurrent.futures import Future

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
    warm_up_workers,
)

__all__ = ["RESULT_COLUMNS", "CallCompute", "CallTask", "LocalSparkCompute", "decode_payloads", "run_call_task",
           "run_call_tasks"]


class CallCompute(dg.ConfigurableResource, abc.ABC):
    """Runs a per-call engine task over many calls and returns one result row per call."""

    @abc.abstractmethod
    def map_calls(self, calls: pd.DataFrame, task: CallTask, description: str) -> pd.DataFrame:
        """`calls` needs a `call_id` column; returns `RESULT_COLUMNS`, one row per input call."""

    def warm_up(self, tasks: Sequence[CallTask], audio_s: float) -> Future[str] | None:
        """Start getting the workers ready for `tasks` (objects with `warm_up()`) without waiting for
        it, while the caller works through `audio_s` of audio; the future says how it went. None when
        nothing was started (a compute whose workers live elsewhere, a Databricks job per stage)."""
        return None


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
    warm_workers: bool = Field(
        default=True,
        description="While a run's VAD stage works, start Spark and load the model stages' models in every Python "
        "worker in the background, so the first calls of `tone_scores` and `transcripts` pay no load.",
    )
    warm_up_min_audio_s: float = Field(
        default=600.0,
        description="Warm up only when the VAD stage has at least this much audio to go through (about 10 s of VAD per "
        "10 min on one core, what the warm-up takes on 2 cores); on less it would slow VAD down more than it saves.",
    )

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

    def warm_up(self, tasks: Sequence[CallTask], audio_s: float) -> Future[str] | None:
        """In a background thread: start the Spark application and load the tasks' models in each of
        its Python workers (`engines/spark_calls.warm_up_workers`). The run's process meanwhile does
        its own work (the VAD stage uses one core), and the model stages then find warm workers.
        Only from `warm_up_min_audio_s` of audio on: a shorter VAD stage ends before the warm-up does,
        and the two then only compete for the cores."""
        if not self.warm_workers or audio_s < self.warm_up_min_audio_s:
            return None
        outcome: Future[str] = Future()
        threading.Thread(target=lambda: outcome.set_result(self._warm_up(list(tasks))),
                         name="callintel-warm-up", daemon=True).start()
        return outcome

    def _warm_up(self, tasks: list[CallTask]) -> str:
        try:
            spark = self._session()
            # The same worker environment the stages' tasks get, so they reuse these workers.
            _hand_storage_credentials_to_workers(spark.sparkContext)
            outcome = warm_up_workers(spark, tasks, self.task_cpus)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only means the first calls load the models
            return f"Spark worker warm-up failed ({type(exc).__name__}: {exc}); each worker's first call loads its models"
        failed = f"; could not load: {'; '.join(outcome['failures'])}" if outcome["failures"] else ""
        return f"{outcome['workers']} Spark worker(s) warmed up in {outcome['seconds']} s{failed}"

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
