"""The one `Definitions` of CallIntel. Resources are chosen by environment variables (see README
"Configuration"); nothing here touches the network or needs a secret at import time."""

from __future__ import annotations

import os

import dagster as dg

from callintel_dagster.assets.characteristics import (
    call_categories,
    call_characteristics,
)
from callintel_dagster.assets.compliance import compliance_flags
from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.insights import fused_insights, insights_dashboard
from callintel_dagster.assets.maintenance import forget_call
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.assets.summaries import call_summaries
from callintel_dagster.assets.tone import tone_model, tone_scores
from callintel_dagster.assets.transcripts import transcripts
from callintel_dagster.jobs import call_pipeline_job, reprocess_malformed_job
from callintel_dagster.resources.blob_store import AzureBlobStore, LocalBlobStore
from callintel_dagster.resources.categories import CategorySettings
from callintel_dagster.resources.compute import LocalSparkCompute
from callintel_dagster.resources.databricks import (
    DatabricksPipesCompute,
    GpuClusterSpec,
    SparkDeltaLakehouse,
)
from callintel_dagster.resources.lakehouse import DeltaLakehouse
from callintel_dagster.resources.llm import OpenAICompatibleAssessor, RulesAssessor
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.sensors import new_recordings_sensor


def build_compute(kind: str | None = None):
    """`local` (default): PySpark local mode. `databricks`: the model stages run on a Databricks GPU job
    cluster through Dagster Pipes; everything else stays on the orchestrator."""
    kind = kind or os.environ.get("CALLINTEL_COMPUTE", "local")
    if kind == "local":
        return LocalSparkCompute(master=os.environ.get("CALLINTEL_SPARK_MASTER", "local[*]"))
    if kind == "databricks":
        return DatabricksPipesCompute(
            host=dg.EnvVar("DATABRICKS_HOST"),
            token=dg.EnvVar("DATABRICKS_TOKEN"),
            entrypoint_file=dg.EnvVar("CALLINTEL_DATABRICKS_ENTRYPOINT"),
            wheel=dg.EnvVar("CALLINTEL_DATABRICKS_WHEEL"),
            staging_path=dg.EnvVar("CALLINTEL_DATABRICKS_STAGING"),
            cluster=GpuClusterSpec(node_type_id=os.environ.get("CALLINTEL_DATABRICKS_NODE_TYPE", "g5.xlarge")),
            secret_env={"HF_TOKEN": "callintel/hf-token", "CALLINTEL_LLM_API_KEY": "callintel/llm-api-key"},
        )
    raise ValueError(f"CALLINTEL_COMPUTE must be 'local' or 'databricks', not {kind!r}")


def build_lakehouse(data_root: str):
    """`delta-rs` (default) on a folder/URI, or `spark` for Unity Catalog tables written with delta-spark MERGE."""
    if os.environ.get("CALLINTEL_LAKEHOUSE", "delta-rs") == "spark":
        return SparkDeltaLakehouse(
            catalog=os.environ.get("CALLINTEL_UC_CATALOG", "main"), schema_name=os.environ.get("CALLINTEL_UC_SCHEMA", "callintel")
        )
    return DeltaLakehouse(root=os.environ.get("CALLINTEL_LAKEHOUSE_ROOT", f"{data_root}/lakehouse"))


def build_resources(env: str | None = None) -> dict:
    env = env or os.environ.get("CALLINTEL_ENV", "local")
    data_root = os.environ.get("CALLINTEL_DATA_ROOT", "data")
    if env == "local":
        blob_store = LocalBlobStore(root=os.environ.get("CALLINTEL_BLOB_ROOT", f"{data_root}/blobs"))
    elif env == "azure":
        blob_store = AzureBlobStore(
            account_name=dg.EnvVar("CALLINTEL_AZURE_ACCOUNT"),
            container=dg.EnvVar("CALLINTEL_AZURE_CONTAINER"),
            account_key=dg.EnvVar("AZURE_STORAGE_KEY"),
        )
    else:
        raise ValueError(f"CALLINTEL_ENV must be 'local' or 'azure', not {env!r}")
    if os.environ.get("CALLINTEL_LLM_BASE_URL"):
        assessor = OpenAICompatibleAssessor(
            base_url=dg.EnvVar("CALLINTEL_LLM_BASE_URL"),
            api_key=dg.EnvVar("CALLINTEL_LLM_API_KEY"),
            model=dg.EnvVar("CALLINTEL_LLM_MODEL"),
        )
    else:
        assessor = RulesAssessor()
    return {
        "blob_store": blob_store,
        "lakehouse": build_lakehouse(data_root),
        "audio_settings": AudioSettings(),
        "compute": build_compute(),
        "models": ModelSettings(models_root=f"{data_root}/models"),
        "compliance_assessor": assessor,
        "reports": ReportSettings(root=f"{data_root}/dashboards"),
        "categories": CategorySettings(categories_file=os.environ.get("CALLINTEL_CATEGORIES_FILE")),
    }


defs = dg.Definitions(
    assets=[
        raw_call_audio, valid_segments, tone_model, tone_scores, transcripts, compliance_flags,
        fused_insights, insights_dashboard, call_characteristics, call_categories, call_summaries,
    ],
    jobs=[call_pipeline_job, reprocess_malformed_job, forget_call],
    sensors=[new_recordings_sensor],
    resources=build_resources(),
)
