"""The one `Definitions` of CallIntel. Resources are chosen by environment variables (see README
"Configuration"); nothing here touches the network or needs a secret at import time."""

from __future__ import annotations

import os

import dagster as dg

from callintel_dagster.assets.compliance import compliance_flags
from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.insights import fused_insights, insights_dashboard
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.assets.tone import tone_model, tone_scores
from callintel_dagster.assets.transcripts import transcripts
from callintel_dagster.jobs import call_pipeline_job, reprocess_malformed_job
from callintel_dagster.resources.blob_store import AzureBlobStore, LocalBlobStore
from callintel_dagster.resources.compute import LocalSparkCompute
from callintel_dagster.resources.lakehouse import DeltaLakehouse
from callintel_dagster.resources.llm import OpenAICompatibleAssessor, RulesAssessor
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.sensors import new_recordings_sensor


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
        "lakehouse": DeltaLakehouse(root=os.environ.get("CALLINTEL_LAKEHOUSE_ROOT", f"{data_root}/lakehouse")),
        "audio_settings": AudioSettings(),
        "compute": LocalSparkCompute(master=os.environ.get("CALLINTEL_SPARK_MASTER", "local[*]")),
        "models": ModelSettings(models_root=f"{data_root}/models"),
        "compliance_assessor": assessor,
        "reports": ReportSettings(root=f"{data_root}/dashboards"),
    }


defs = dg.Definitions(
    assets=[
        raw_call_audio, valid_segments, tone_model, tone_scores, transcripts, compliance_flags,
        fused_insights, insights_dashboard,
    ],
    jobs=[call_pipeline_job, reprocess_malformed_job],
    sensors=[new_recordings_sensor],
    resources=build_resources(),
)
