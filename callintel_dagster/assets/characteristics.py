"""`call_characteristics` + `turn_sentiment` (per role / per turn) and `call_categories` (QA rules)."""


import dagster as dg
import pandas as pd

from callintel_dagster.assets.model_stage import (
    MODEL_STAGE_BACKFILL,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.assets.tables import (
    partition_date,
    partition_dates,
    rows_frame,
    schema_check_spec,
    table_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.engines.categories import CategoryFileError, match_categories
from callintel_dagster.engines.characteristics import (
    TURN_TABLE_COLUMNS,
    CharacteristicsTask,
)
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.categories import CategorySettings
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.schemas import CallCategories, CallCharacteristics, TurnSentiment

TONE_COLUMNS = ["start_s", "end_s", "p_angry", "p_anxious", "p_sad", "p_neutral_positive"]


def _json_by_call(frame: pd.DataFrame, columns: list[str], order: str) -> dict[str, str]:
    if frame.empty:
        return {}
    return {
        call_id: group.sort_values(order)[columns].to_json(orient="records")
        for call_id, group in frame.groupby("call_id")
    }


@dg.multi_asset(
    specs=[
        table_spec(
            "call_characteristics", deps=["transcripts", "tone_scores"], group_name="call_analytics",
            kinds={"delta", "spark"},
            description="Per call and role: talk / non-talk time (total, longest gap), words per minute, loudness "
            "(dBFS mean/peak), interruptions (who cut off whom, when), sentiment and tone overall and in the first "
            "vs last quarter. Definitions: engines/characteristics.py.",
        ),
        table_spec(
            "turn_sentiment", deps=["transcripts", "tone_scores"], group_name="call_analytics",
            kinds={"delta"},
            description="Per turn: VADER text sentiment (score + label) and negative acoustic tone.",
        ),
    ],
    check_specs=[schema_check_spec("call_characteristics"), schema_check_spec("turn_sentiment")],
    partitions_def=call_date_partitions,
    backfill_policy=MODEL_STAGE_BACKFILL,
)
def call_characteristics(context: dg.AssetExecutionContext, blob_store: BlobStore, lakehouse: Lakehouse, compute: CallCompute):
    """Amazon-Transcribe-Call-Analytics-style characteristics from our own audio, turns and tone,
    as Spark tasks (loudness reads the audio)."""
    call_dates = partition_dates(context)
    calls = usable_calls(lakehouse, blob_store, call_dates)
    turns = _json_by_call(lakehouse.read("transcripts", call_dates), TURN_TABLE_COLUMNS, "turn_index")
    tone = _json_by_call(lakehouse.read("tone_scores", call_dates), TONE_COLUMNS, "start_s")
    calls = calls[calls["call_id"].isin(turns)].reset_index(drop=True)
    calls["turns_json"] = [turns[c] for c in calls["call_id"]]
    calls["tone_json"] = [tone.get(c, "[]") for c in calls["call_id"]]
    tables, run_metadata = run_model_stage(
        context, stage="call_characteristics", calls=calls, task=CharacteristicsTask(),
        compute=compute, lakehouse=lakehouse, call_dates=call_dates,
    )
    per_role = tables.get("call_characteristics", rows_frame(CallCharacteristics, []))
    per_turn = tables.get("turn_sentiment", rows_frame(TurnSentiment, []))
    role_check, role_written = validate_and_merge(
        lakehouse, asset="call_characteristics", model=CallCharacteristics,
        frame=with_audit_columns(per_role, None, context.run_id), keys=["call_id", "role"], call_dates=call_dates,
    )
    turn_check, turn_written = validate_and_merge(
        lakehouse, asset="turn_sentiment", model=TurnSentiment,
        frame=with_audit_columns(per_turn, None, context.run_id), keys=["call_id", "turn_index"], call_dates=call_dates,
    )
    yield dg.MaterializeResult(asset_key="call_characteristics", metadata={**role_written, **run_metadata})
    yield dg.MaterializeResult(asset_key="turn_sentiment", metadata=turn_written)
    yield role_check
    yield turn_check


@dg.asset(
    partitions_def=call_date_partitions,
    deps=["call_characteristics", "transcripts", "tone_scores"],
    group_name="call_analytics",
    kinds={"delta", "yaml"},
    owners=["team:compliance"],
    code_version="1",
    check_specs=[schema_check_spec("call_categories")],
)
def call_categories(context: dg.AssetExecutionContext, lakehouse: Lakehouse, categories: CategorySettings) -> dg.MaterializeResult:
    """Every QA category each call meets (rules from a YAML file the user edits; the shipped set covers
    recording disclosure, identity verification before PHI, minimum-necessary PHI, empathy on angry
    callers, callbacks on escalations, long non-talk time, negative endings), one row per piece of
    evidence: rule, turn, timestamps, quote."""
    call_date = partition_date(context)
    try:
        rules = categories.load()
    except CategoryFileError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    turns = lakehouse.read("transcripts", [call_date])
    roles = lakehouse.read("call_characteristics", [call_date])
    tone = lakehouse.read("tone_scores", [call_date])
    activity = lakehouse.read("speech_activity", [call_date])
    durations = dict(zip(activity["call_id"], activity["duration_s"])) if len(activity) else {}
    rows = []
    for call_id, call_turns in (turns.groupby("call_id") if len(turns) else []):
        call_tone = tone[tone["call_id"] == call_id] if len(tone) else None
        call_roles = roles[roles["call_id"] == call_id] if len(roles) else pd.DataFrame()
        for match in match_categories(rules, call_turns.sort_values("turn_index"), call_roles, call_tone, durations[call_id]):
            rows.append({"call_id": call_id, **match})
    frame = rows_frame(CallCategories, rows)
    frame["match_index"] = frame.groupby("call_id").cumcount()
    check, written = validate_and_merge(
        lakehouse, asset="call_categories", model=CallCategories,
        frame=with_audit_columns(frame, call_date, context.run_id), keys=["call_id", "match_index"], call_date=call_date,
    )
    counts = frame["category"].value_counts().to_dict() if len(frame) else {}
    return dg.MaterializeResult(
        metadata={**written, "categories_file": str(categories.categories_file or "shipped healthcare.yaml"),
                  "matches_by_category": dg.MetadataValue.json({k: int(v) for k, v in counts.items()})},
        check_results=[check],
    )
