"""Incremental per-call stages: a re-run recomputes only the calls whose inputs changed.

A per-call stage records, for each call it computed, a digest of what it computed it from: the
call's input row (blob key and version, and whatever upstream rows the stage was handed, such as
turns or speech segments), the stage's task configuration (model ids, devices, windows) and the
engine code. On the next run of that date, a call with the same digest keeps its rows as they are;
only new, replaced or affected calls go to the models. Changing a model, a setting or any engine
module changes every digest, so everything it affects is computed again.

One new recording in a day of N calls therefore costs one call of model time, not N.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from callintel_dagster.assets.io import write_table
from callintel_dagster.engines.task_spec import task_to_spec
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import PROCESSED_CALLS

ENGINES_DIR = Path(__file__).resolve().parent.parent / "engines"


class StageConfig(dg.Config):
    recompute: bool = False
    """Compute every call again, even those whose inputs, models and code are unchanged."""


@functools.cache
def engine_code_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(ENGINES_DIR.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def task_configuration(task: object) -> str:
    """The settings a task carries, as stable text: its allow-listed spec (which never holds a secret)."""
    return json.dumps(task_to_spec(task), sort_keys=True)


def input_digests(calls: pd.DataFrame, configuration: str) -> dict[str, str]:
    prefix = f"{engine_code_version()}|{configuration}|"
    return {
        row["call_id"]: hashlib.sha256((prefix + json.dumps(row, sort_keys=True, default=str)).encode()).hexdigest()[:32]
        for row in calls.astype(str).to_dict("records")
    }


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """The calls a stage must compute now, and the ones whose rows stay as they are."""

    stage: str
    to_run: pd.DataFrame
    unchanged_call_ids: list[str]
    digests: dict[str, str]

    def kept(self, failed_call_ids: list[str]) -> list[str]:
        """Calls whose stored rows this run must not delete: the unchanged and the failed ones."""
        return sorted({*self.unchanged_call_ids, *failed_call_ids})

    def record(
        self,
        context: dg.AssetExecutionContext,
        lakehouse: Lakehouse,
        failed_call_ids: list[str],
        call_dates: list[dt.date],
    ) -> None:
        """Record what each computed call was computed from. An unchanged call keeps its record as it
        is, and a failed call keeps its earlier one (its rows were kept too)."""
        done = self.to_run[~self.to_run["call_id"].isin(failed_call_ids)]
        now = pd.Timestamp.now(tz="UTC")
        frame = PROCESSED_CALLS.rows([
            {"call_id": c, "stage": self.stage, "input_digest": self.digests[c], "processed_at": now} for c in done["call_id"]
        ])
        frame["call_date"] = list(done["call_date"])
        check, _ = write_table(
            context, lakehouse, PROCESSED_CALLS, frame, call_dates, check_asset=self.stage,
            scope={"stage": self.stage}, keep_call_ids=self.kept(failed_call_ids),
        )
        if not check.passed:
            raise ValueError(f"[{self.stage}] processed_calls rows break their contract: {check.metadata}")


def plan_stage(
    lakehouse: Lakehouse, stage: str, calls: pd.DataFrame, configuration: str, call_dates: list[dt.date], recompute: bool
) -> StagePlan:
    digests = input_digests(calls, configuration)
    previous = lakehouse.read(PROCESSED_CALLS, call_dates)
    previous = dict(zip(previous.loc[previous["stage"] == stage, "call_id"], previous.loc[previous["stage"] == stage, "input_digest"]))
    unchanged = [] if recompute else [c for c, digest in digests.items() if previous.get(c) == digest]
    return StagePlan(stage, calls[~calls["call_id"].isin(unchanged)].reset_index(drop=True), unchanged, digests)
