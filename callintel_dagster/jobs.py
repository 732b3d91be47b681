"""Jobs over the asset graph."""

import dagster as dg

from callintel_dagster.partitions import call_date_partitions

call_pipeline_job = dg.define_asset_job(
    "call_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=call_date_partitions,
    description="Every stage for one call date: what the sensor and backfills run.",
)
