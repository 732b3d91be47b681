"""The shared shape of the model stages: take the usable calls of the run's dates, run a per-call
engine task over all of them as one Spark job, quarantine the calls whose task failed, and return
the rows of each output table, each row stamped with its call's date.

A call that fails keeps the rows an earlier run wrote for it (`StageRun.kept_call_ids` narrows the
partition MERGE's delete), so one crashed worker never erases a good transcript; its quarantine row
says so until a later run succeeds. A call whose inputs, settings and engine code are unchanged since
its last run is not computed again (`assets/incremental.py`) and keeps its rows the same way.

A single-run backfill (`BackfillPolicy.single_run`) hands these assets a whole date range, so a
range is one Spark job with every model loaded once per worker, not one job per day."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import dagster as dg
import pandas as pd

from callintel_dagster.assets.incremental import (
    StageConfig,
    plan_stage,
    task_configuration,
)
from callintel_dagster.assets.io import TableReader, write_quarantine, write_table
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute, CallTask, decode_payloads
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import RAW_CALL_AUDIO, SPEECH_ACTIVITY, Table

USABLE_CALLS_READS = (RAW_CALL_AUDIO, SPEECH_ACTIVITY)
KEPT_NOTE = "earlier results of this stage are kept (stale) until a run succeeds"


def usable_calls(read: TableReader, blob_store: BlobStore, call_dates: list[dt.date]) -> pd.DataFrame:
    """Calls of the dates that passed ingest and VAD, with the fsspec URL the workers open
    (`audio_url`, no credential in it), what `engines.audio.decode_call_audio` checks the file
    against (size, checksum, VAD-measured duration) and the channel layout (a `split_stereo` call is
    transcribed per channel)."""
    activity = read(SPEECH_ACTIVITY, call_dates)[["call_id", "call_date", "duration_s"]]
    inventoried = ["call_id", "call_date", "blob_key", "blob_version", "size_bytes", "checksum_sha256", "channel_layout"]
    raw = read(RAW_CALL_AUDIO, call_dates)[inventoried]
    calls = activity.merge(raw, on=["call_id", "call_date"], how="inner")
    calls["audio_url"] = [blob_store.url(key) for key in calls["blob_key"]]
    return calls.sort_values(["call_date", "call_id"]).reset_index(drop=True)


@dataclasses.dataclass
class StageRun:
    """The rows each output table got from the successful calls, the calls that failed, and metadata."""

    context: dg.AssetExecutionContext
    lakehouse: Lakehouse
    call_dates: list[dt.date]
    tables: dict[str, pd.DataFrame]
    kept_call_ids: list[str]
    metadata: dict

    def rows(self, table: Table) -> pd.DataFrame:
        return self.tables.get(table.name, table.rows([]))

    def write(self, table: Table, frame: pd.DataFrame | None = None) -> tuple[dg.AssetCheckResult, dict]:
        """MERGE the stage's rows of `table`; unchanged and failed calls keep their stored rows."""
        return write_table(
            self.context, self.lakehouse, table, self.rows(table) if frame is None else frame, self.call_dates,
            keep_call_ids=self.kept_call_ids,
        )


def run_model_stage(
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    calls: pd.DataFrame,
    task: CallTask,
    compute: CallCompute,
    lakehouse: Lakehouse,
    call_dates: list[dt.date],
    config: StageConfig,
    configuration: str = "",
    map_calls: Callable[[pd.DataFrame, CallTask, str], pd.DataFrame] | None = None,
) -> StageRun:
    """Run `task` over the calls whose inputs changed since the last run (all of them with
    `config.recompute`), quarantine the failures, and return what the computed calls produced.
    `configuration` adds what the task object does not carry (e.g. the trained model's checksum);
    `map_calls` replaces `compute.map_calls` (the transcript stage splits long calls with it)."""
    plan = plan_stage(lakehouse, stage, calls, task_configuration(task) + configuration, call_dates, config.recompute)
    all_calls, calls = calls, plan.to_run
    audio_s = float(calls["duration_s"].astype(float).sum()) if len(calls) else 0.0
    span = f"{call_dates[0]}" if len(call_dates) == 1 else f"{call_dates[0]}..{call_dates[-1]}"
    context.log.info(
        f"[{stage}] {len(calls)} of {len(all_calls)} calls ({span}) to compute, {audio_s / 60:.1f} min of audio → Spark tasks; "
        f"{len(plan.unchanged_call_ids)} unchanged since their last run keep their rows"
    )
    started = time.perf_counter()
    results = (map_calls or compute.map_calls)(calls, task, f"callintel {stage} {span}")
    wall = time.perf_counter() - started
    by_call = calls.set_index("call_id")
    failed = results[results["status"] != "ok"]
    write_quarantine(
        lakehouse, context, stage=stage, call_dates=call_dates,
        rows=[
            {
                "call_id": row.call_id,
                "call_date": by_call.loc[row.call_id, "call_date"],
                "blob_key": by_call.loc[row.call_id, "blob_key"],
                "blob_version": by_call.loc[row.call_id, "blob_version"],
                "reason": f"{row.error} ({KEPT_NOTE})",
            }
            for row in failed.itertuples()
        ],
    )
    for row in results[results["status"] == "ok"].itertuples():
        context.log.debug(f"[{stage}] {row.call_id} done in {row.seconds:.1f} s")
    plan.record(context, lakehouse, sorted(failed["call_id"]), call_dates)
    metadata = {
        "calls": len(calls),
        "calls_unchanged": len(plan.unchanged_call_ids),
        "call_dates": len(call_dates),
        "quarantined": len(failed),
        "audio_minutes": round(audio_s / 60, 2),
        "wall_seconds": round(wall, 2),
        "model_seconds": round(float(results["seconds"].sum()), 2),
    }
    if audio_s:
        metadata["audio_seconds_per_wall_second"] = round(audio_s / wall, 3)
    dates = by_call["call_date"].to_dict()
    tables = {name: rows.assign(call_date=rows["call_id"].map(dates)) for name, rows in decode_payloads(results).items()}
    return StageRun(context, lakehouse, call_dates, tables, plan.kept(sorted(failed["call_id"])), metadata)
