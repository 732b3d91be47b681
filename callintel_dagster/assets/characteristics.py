"""`call_characteristics` + `turn_sentiment` (per role / per turn) and `call_categories` (QA rules)."""


import dagster as dg
import pandas as pd

from callintel_dagster.assets.incremental import StageConfig
from callintel_dagster.assets.io import (
    RANGE_BACKFILL,
    TableReader,
    partition_dates,
    schema_check_spec,
    table_asset_kwargs,
    table_spec,
    with_call_dates,
    write_table,
)
from callintel_dagster.assets.model_stage import (
    USABLE_CALLS_READS,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.engines.categories import CategoryFileError, match_categories
from callintel_dagster.engines.characteristics import (
    TURN_TABLE_COLUMNS,
    CharacteristicsTask,
)
from callintel_dagster.engines.rules import call_language
from callintel_dagster.engines.vocabulary import PROB_COLUMNS
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.categories import CategorySettings
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.tables import (
    CALL_CATEGORIES,
    CALL_CHARACTERISTICS,
    SPEECH_ACTIVITY,
    TONE_SCORES,
    TRANSCRIPTS,
    TURN_SENTIMENT,
)

TONE_COLUMNS = ["start_s", "end_s", *PROB_COLUMNS]
CHARACTERISTICS_READS = (*USABLE_CALLS_READS, TRANSCRIPTS, TONE_SCORES)


def _json_by_call(frame: pd.DataFrame, columns: list[str], order: str) -> dict[str, str]:
    return {
        call_id: group.sort_values(order)[columns].to_json(orient="records")
        for call_id, group in frame.groupby("call_id")
    }


@dg.multi_asset(
    specs=[
        table_spec(CALL_CHARACTERISTICS, reads=CHARACTERISTICS_READS, group_name="call_analytics", kinds={"delta", "spark"}),
        table_spec(TURN_SENTIMENT, reads=CHARACTERISTICS_READS, group_name="call_analytics", kinds={"delta"}),
    ],
    check_specs=[schema_check_spec(CALL_CHARACTERISTICS), schema_check_spec(TURN_SENTIMENT)],
    partitions_def=call_date_partitions,
    backfill_policy=RANGE_BACKFILL,
)
def call_characteristics(
    context: dg.AssetExecutionContext, config: StageConfig, blob_store: BlobStore, lakehouse: Lakehouse, compute: CallCompute
):
    """Amazon-Transcribe-Call-Analytics-style characteristics from our own audio, turns and tone,
    as Spark tasks (loudness reads the audio)."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    calls = usable_calls(read, blob_store, call_dates)
    turns = _json_by_call(read(TRANSCRIPTS, call_dates), TURN_TABLE_COLUMNS, "turn_index")
    tone = _json_by_call(read(TONE_SCORES, call_dates), TONE_COLUMNS, "start_s")
    calls = calls[calls["call_id"].isin(turns)].reset_index(drop=True)
    calls["turns_json"] = [turns[c] for c in calls["call_id"]]
    calls["tone_json"] = [tone.get(c, "[]") for c in calls["call_id"]]
    stage = run_model_stage(
        context, stage=CALL_CHARACTERISTICS.name, calls=calls, task=CharacteristicsTask(),
        compute=compute, lakehouse=lakehouse, call_dates=call_dates, config=config,
    )
    role_check, role_written = stage.write(CALL_CHARACTERISTICS)
    turn_check, turn_written = stage.write(TURN_SENTIMENT)
    yield dg.MaterializeResult(asset_key=CALL_CHARACTERISTICS.name, metadata={**role_written, **stage.metadata, **read.metadata()})
    yield dg.MaterializeResult(asset_key=TURN_SENTIMENT.name, metadata={**turn_written, **read.metadata()})
    yield role_check
    yield turn_check


@dg.asset(
    **table_asset_kwargs(
        CALL_CATEGORIES, reads=[CALL_CHARACTERISTICS, TRANSCRIPTS, TONE_SCORES, SPEECH_ACTIVITY], owners=["team:compliance"]
    ),
    group_name="call_analytics",
    kinds={"delta", "yaml"},
)
def call_categories(context: dg.AssetExecutionContext, lakehouse: Lakehouse, categories: CategorySettings) -> dg.MaterializeResult:
    """Every QA category each call meets (rules from a YAML file the user edits; the shipped set covers
    recording disclosure, identity verification before PHI, minimum-necessary PHI, empathy on angry
    callers, callbacks on escalations, long non-talk time, negative endings), one row per piece of
    evidence: rule, turn, timestamps, quote."""
    call_dates = partition_dates(context)
    read = TableReader(context, lakehouse)
    turns = read(TRANSCRIPTS, call_dates)
    languages = {call_id: call_language(group) for call_id, group in turns.groupby("call_id")}
    try:
        rules = {language: categories.load(language) for language in {"en", *languages.values()}}
    except CategoryFileError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    roles = read(CALL_CHARACTERISTICS, call_dates)
    tone = read(TONE_SCORES, call_dates)
    activity = read(SPEECH_ACTIVITY, call_dates)
    durations = dict(zip(activity["call_id"], activity["duration_s"]))
    rows = []
    for call_id, call_turns in turns.groupby("call_id"):
        call_tone = tone[tone["call_id"] == call_id]
        call_roles = roles[roles["call_id"] == call_id]
        call_rules = rules[languages[call_id]]
        for match in match_categories(call_rules, call_turns.sort_values("turn_index"), call_roles, call_tone, durations[call_id]):
            rows.append({"call_id": call_id, **match})
    frame = with_call_dates(CALL_CATEGORIES.rows(rows), turns)
    frame["match_index"] = frame.groupby("call_id").cumcount()
    check, written = write_table(context, lakehouse, CALL_CATEGORIES, frame, call_dates)
    counts = frame["category"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={**written, **read.metadata(), "categories_file": str(categories.categories_file or "shipped healthcare.yaml"),
                  "matches_by_category": dg.MetadataValue.json({k: int(v) for k, v in counts.items()})},
        check_results=[check],
    )
