"""The one `Definitions` of CallIntel. Resources are chosen by `CALLINTEL_ENV` (local | azure);
nothing here touches the network or needs a secret at import time."""

from __future__ import annotations

import os

import dagster as dg

from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.jobs import call_pipeline_job
from callintel_dagster.resources.blob_store import AzureBlobStore, LocalBlobStore
from callintel_dagster.resources.lakehouse import DeltaLakehouse
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.sensors import new_recordings_sensor


def build_resources(env: str | None = None) -> dict:
    env = env or os.environ.get("CALLINTEL_ENV", "local")
    if env == "local":
        blob_store = LocalBlobStore(root=os.environ.get("CALLINTEL_BLOB_ROOT", "data/blobs"))
    elif env == "azure":
        blob_store = AzureBlobStore(
            account_name=dg.EnvVar("CALLINTEL_AZURE_ACCOUNT"),
            container=dg.EnvVar("CALLINTEL_AZURE_CONTAINER"),
            account_key=dg.EnvVar("AZURE_STORAGE_KEY"),
        )
    else:
        raise ValueError(f"CALLINTEL_ENV must be 'local' or 'azure', not {env!r}")
    return {
        "blob_store": blob_store,
        "lakehouse": DeltaLakehouse(root=os.environ.get("CALLINTEL_LAKEHOUSE_ROOT", "data/lakehouse")),
        "audio_settings": AudioSettings(),
    }


defs = dg.Definitions(
    assets=[raw_call_audio, valid_segments],
    jobs=[call_pipeline_job],
    sensors=[new_recordings_sensor],
    resources=build_resources(),
)
