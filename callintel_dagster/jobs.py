"""Jobs over the asset graph."""

import dagster as dg

from callintel_dagster.partitions import call_date_partitions

call_pipeline_job = dg.define_asset_job(
    "call_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=call_date_partitions,
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
