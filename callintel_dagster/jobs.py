"""Jobs over the asset graph."""

import dagster as dg

from callintel_dagster.partitions import call_date_partitions

# The model stages run inside Spark, which already spreads each stage over every core. Under Dagster's
# default multiprocess executor each step was its own process with its own Spark JVM: `tone_scores`
# and `transcripts` ran at once, two JVMs and four Python workers on two cores, and every stage
# loaded its models again. In one process the steps share one SparkSession, and its Python workers
# keep their models from stage to stage (`make bench`, section 4b, measures both executors).
PIPELINE_EXECUTOR = dg.in_process_executor

call_pipeline_job = dg.define_asset_job(
    "call_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=call_date_partitions,
    executor_def=PIPELINE_EXECUTOR,
    description="Every stage for one call date: what the sensor and backfills run. The unpartitioned "
    "`tone_model` reuses its stored model unless its training code or data changed.",
)

reprocess_malformed_job = dg.define_asset_job(
    "reprocess_malformed_job",
    selection=dg.AssetSelection.assets("compliance_flags", "malformed_llm_outputs"),
    partitions_def=call_date_partitions,
    config={"ops": {"compliance_flags": {"config": {"only_pending": True}}}},
    description="Re-assess only the calls whose LLM answer was malformed or missing, MERGE the fixed rows back.",
)
