"""The Python task of a Databricks model-stage run (see `resources/databricks.py`).

Deliberately thin: open Dagster Pipes, rebuild the per-call engine task from the JSON spec the
orchestrator sent (never un-pickled; secrets such as HF_TOKEN come from the cluster's environment,
set from its secret scope), run it over the day's calls as Spark tasks on the cluster's session
(the same `mapInPandas` code as the local compute, `engines/spark_calls.py`), write one result row per
call to the staging path, report materialization metadata. Everything it imports ships with
`callintel_dagster[engines]` (the engines and `dagster-pipes`) or the Databricks runtime (pyspark,
torch): it never imports Dagster, which the cluster does not have.

`--pipes-io` picks where Pipes context and messages live: `volumes` (a Unity Catalog volume,
FUSE-mounted at the same path), `dbfs` (DBFS, mounted at /dbfs), or `env` (Pipes' default local
files, for running the script under `PipesSubprocessClient` on any Spark).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from dagster_pipes import (
    PipesContext,
    PipesDbfsContextLoader,
    PipesDbfsMessageWriter,
    PipesDefaultContextLoader,
    PipesDefaultMessageWriter,
    PipesUnityCatalogVolumesContextLoader,
    PipesUnityCatalogVolumesMessageWriter,
    open_dagster_pipes,
)
from pyspark.sql import SparkSession

from callintel_dagster.engines.spark_calls import map_calls_on_spark
from callintel_dagster.engines.task_spec import task_from_spec

_PIPES_IO = {
    "volumes": (PipesUnityCatalogVolumesContextLoader, PipesUnityCatalogVolumesMessageWriter),
    "dbfs": (PipesDbfsContextLoader, PipesDbfsMessageWriter),
    "env": (PipesDefaultContextLoader, PipesDefaultMessageWriter),
}


def local_path(uri: str) -> Path:
    """Where the cluster sees a staging URI on its filesystem: DBFS is mounted at /dbfs."""
    if uri.startswith("dbfs:/"):
        return Path("/dbfs") / uri.removeprefix("dbfs:/")
    return Path(uri)


def run_stage(pipes: PipesContext, spark) -> None:
    extras = pipes.extras
    calls = pd.DataFrame(extras["calls"])
    task = task_from_spec(extras["task"])
    pipes.log.info(f"{extras['description']}: {len(calls)} calls on Spark {spark.version}")
    results = map_calls_on_spark(
        spark, calls, task, extras["description"], calls_per_task=int(extras["calls_per_task"]), task_cpus=1
    )
    target = local_path(extras["results_path"])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Python's file API, like the Pipes message writer: on the cluster both go through the FUSE mount
    # (the loopback cluster of the tests maps that API, not pyarrow's own filesystem).
    with open(target, "wb") as out:
        results.to_parquet(out, index=False)
    metadata = {
        "databricks_calls": len(results),
        "databricks_calls_failed": int((results["status"] != "ok").sum()),
        "databricks_model_seconds": round(float(results["seconds"].sum()), 2),
        "databricks_cluster_cores": spark.sparkContext.defaultParallelism,
        "databricks_cuda_devices": _cuda_devices(),
    }
    for asset_key in pipes.asset_keys:
        pipes.report_asset_materialization(metadata=metadata, asset_key=asset_key)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipes-io", choices=sorted(_PIPES_IO), default="volumes")
    args = parser.parse_args(argv)
    loader, writer = _PIPES_IO[args.pipes_io]
    # Before Pipes opens: the DBFS writer reads the cluster's log settings from the active session.
    spark = SparkSession.builder.getOrCreate()
    with open_dagster_pipes(context_loader=loader(), message_writer=writer()) as pipes:
        run_stage(pipes, spark)


if __name__ == "__main__":
    main()
