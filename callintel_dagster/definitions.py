"""The one `Definitions` of CallIntel.

`CALLINTEL_DEPLOYMENT` picks a coherent set of resources (README "Deployment profiles"):

| profile            | blob store              | lakehouse                               | model-stage compute        |
|--------------------|-------------------------|-----------------------------------------|----------------------------|
| `local` (default)  | local folder            | delta-rs, local folder                  | PySpark `local[*]`         |
| `azure`            | Azure Blob / ADLS       | delta-rs on `CALLINTEL_LAKEHOUSE_ROOT`  | PySpark `local[*]`         |
| `azure-databricks` | Azure Blob / ADLS       | delta-rs on `CALLINTEL_LAKEHOUSE_ROOT`  | Databricks GPU job (Pipes) |
| `databricks-uc`    | Azure Blob / ADLS       | Unity Catalog via Spark SQL MERGE       | Databricks GPU job (Pipes) |
| `azurite-local`    | Azure Blob on Azurite   | delta-rs, local folder                  | PySpark `local[*]`         |

The compliance engine is the rules engine unless `CALLINTEL_LLM_BASE_URL` names an endpoint, in
every profile. The resources are built when Dagster loads the code location (`@dg.definitions`),
not when this module is imported, and secrets are `dg.EnvVar`s resolved when a resource starts.
"""

from __future__ import annotations

import os

import dagster as dg

from callintel_dagster.assets.alerts import alerts_sent
from callintel_dagster.assets.bi import fact_call, fact_flag, fact_turn_tone
from callintel_dagster.assets.characteristics import (
    call_categories,
    call_characteristics,
)
from callintel_dagster.assets.compliance import compliance_flags
from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.insights import fused_insights, insights_dashboard
from callintel_dagster.assets.maintenance import forget_agent, forget_call
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.assets.summaries import call_summaries
from callintel_dagster.assets.tone import tone_model, tone_scores
from callintel_dagster.assets.transcripts import transcripts
from callintel_dagster.jobs import (
    PIPELINE_EXECUTOR,
    call_pipeline_job,
    reprocess_malformed_job,
)
from callintel_dagster.resources.alerts import AlertChannels
from callintel_dagster.resources.blob_store import (
    AzureBlobStore,
    BlobStore,
    LocalBlobStore,
)
from callintel_dagster.resources.categories import CategorySettings
from callintel_dagster.resources.compute import CallCompute, LocalSparkCompute
from callintel_dagster.resources.databricks import (
    DatabricksPipesCompute,
    GpuClusterSpec,
)
from callintel_dagster.resources.lakehouse import (
    DeltaLakehouse,
    Lakehouse,
    SparkDeltaLakehouse,
)
from callintel_dagster.resources.llm import (
    ComplianceAssessor,
    OpenAICompatibleAssessor,
    RulesAssessor,
)
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.sensors import new_recordings_sensor

DEPLOYMENTS = ("local", "azure", "azure-databricks", "databricks-uc", "azurite-local")
# The switches this one setting replaced; a leftover one would silently do nothing, so it is an error.
_RETIRED_SWITCHES = ("CALLINTEL_ENV", "CALLINTEL_COMPUTE", "CALLINTEL_LAKEHOUSE")

ASSETS = [
    raw_call_audio, valid_segments, tone_model, tone_scores, transcripts, compliance_flags,
    fused_insights, insights_dashboard, call_characteristics, call_categories, call_summaries, alerts_sent,
    fact_call, fact_flag, fact_turn_tone,
]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _azure_blob_store() -> BlobStore:
    """The account key is the variable adlfs reads on the Spark workers too (no key: managed identity)."""
    return AzureBlobStore(
        account_name=dg.EnvVar("CALLINTEL_AZURE_ACCOUNT"),
        container=dg.EnvVar("CALLINTEL_AZURE_CONTAINER"),
        prefix=_env("CALLINTEL_AZURE_PREFIX", ""),
        account_key=_secret("AZURE_STORAGE_ACCOUNT_KEY"),
    )


def _azurite_blob_store() -> BlobStore:
    """The production Azure store on a local Azurite emulator: its connection string names the
    emulator's endpoint and account, and the local Spark workers read the same variable."""
    return AzureBlobStore(
        container=_env("CALLINTEL_AZURE_CONTAINER", "recordings"),
        prefix=_env("CALLINTEL_AZURE_PREFIX", ""),
        connection_string=dg.EnvVar("AZURE_STORAGE_CONNECTION_STRING"),
    )


def _databricks_compute() -> CallCompute:
    return DatabricksPipesCompute(
        host=dg.EnvVar("DATABRICKS_HOST"),
        token=dg.EnvVar("DATABRICKS_TOKEN"),
        entrypoint_file=dg.EnvVar("CALLINTEL_DATABRICKS_ENTRYPOINT"),
        wheel=dg.EnvVar("CALLINTEL_DATABRICKS_WHEEL"),
        staging_path=dg.EnvVar("CALLINTEL_DATABRICKS_STAGING"),
        cluster=GpuClusterSpec(node_type_id=_env("CALLINTEL_DATABRICKS_NODE_TYPE", "g5.xlarge")),
        secret_env=_cluster_secret_env(),
    )


def _cluster_secret_env() -> dict[str, str]:
    """Cluster variables filled from the Databricks secret scope. The storage credential is
    optional: without `CALLINTEL_DATABRICKS_STORAGE_SECRET` the cluster reaches the container with
    its managed identity (adlfs' `DefaultAzureCredential`)."""
    secret_env = {"HF_TOKEN": "callintel/hf-token", "CALLINTEL_LLM_API_KEY": "callintel/llm-api-key"}
    if storage := os.environ.get("CALLINTEL_DATABRICKS_STORAGE_SECRET"):
        secret_env["AZURE_STORAGE_CONNECTION_STRING"] = storage
    return secret_env


def _assessor() -> ComplianceAssessor:
    if not os.environ.get("CALLINTEL_LLM_BASE_URL"):
        return RulesAssessor()
    return OpenAICompatibleAssessor(
        base_url=dg.EnvVar("CALLINTEL_LLM_BASE_URL"),
        api_key=dg.EnvVar("CALLINTEL_LLM_API_KEY"),
        model=dg.EnvVar("CALLINTEL_LLM_MODEL"),
    )


def _secret(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def _alert_channels(data_root: str) -> AlertChannels:
    """Channels from `CALLINTEL_ALERT_*` (README "Alerts"); none configured means nothing is sent."""
    recipients = [a.strip() for a in os.environ.get("CALLINTEL_ALERT_EMAIL_TO", "").split(",") if a.strip()]
    return AlertChannels(
        teams_webhook_url=_secret("CALLINTEL_ALERT_TEAMS_WEBHOOK_URL"),
        slack_webhook_url=_secret("CALLINTEL_ALERT_SLACK_WEBHOOK_URL"),
        smtp_host=os.environ.get("CALLINTEL_ALERT_SMTP_HOST"),
        smtp_port=int(_env("CALLINTEL_ALERT_SMTP_PORT", "587")),
        smtp_starttls=_env("CALLINTEL_ALERT_SMTP_STARTTLS", "true").lower() != "false",
        smtp_username=os.environ.get("CALLINTEL_ALERT_SMTP_USERNAME"),
        smtp_password=_secret("CALLINTEL_ALERT_SMTP_PASSWORD"),
        email_from=_env("CALLINTEL_ALERT_EMAIL_FROM", "callintel@localhost"),
        email_to=recipients,
        qa_priority_threshold=int(_env("CALLINTEL_ALERT_QA_PRIORITY", "70")),
        dashboard_url=_env("CALLINTEL_DASHBOARD_URL", f"{data_root}/dashboards"),
    )


def build_resources(deployment: str | None = None) -> dict:
    """The resources of one deployment profile (default: `$CALLINTEL_DEPLOYMENT`, else `local`)."""
    retired = [name for name in _RETIRED_SWITCHES if os.environ.get(name)]
    if retired:
        raise ValueError(f"{', '.join(retired)} no longer exist: set CALLINTEL_DEPLOYMENT to one of {DEPLOYMENTS}")
    deployment = deployment or _env("CALLINTEL_DEPLOYMENT", "local")
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"CALLINTEL_DEPLOYMENT must be one of {DEPLOYMENTS}, not {deployment!r}")
    data_root = _env("CALLINTEL_DATA_ROOT", "data")
    blob_store: BlobStore = (
        LocalBlobStore(root=_env("CALLINTEL_BLOB_ROOT", f"{data_root}/blobs")) if deployment == "local"
        else _azurite_blob_store() if deployment == "azurite-local"
        else _azure_blob_store()
    )
    lakehouse: Lakehouse = (
        SparkDeltaLakehouse(catalog=_env("CALLINTEL_UC_CATALOG", "main"), schema_name=_env("CALLINTEL_UC_SCHEMA", "callintel"))
        if deployment == "databricks-uc"
        else DeltaLakehouse(root=_env("CALLINTEL_LAKEHOUSE_ROOT", f"{data_root}/lakehouse"))
    )
    compute: CallCompute = (
        _databricks_compute()
        if deployment in ("azure-databricks", "databricks-uc")
        else LocalSparkCompute(master=_env("CALLINTEL_SPARK_MASTER", "local[*]"),
                               warm_workers=_env("CALLINTEL_WARM_WORKERS", "1") != "0")
    )
    return {
        "blob_store": blob_store,
        "lakehouse": lakehouse,
        "compute": compute,
        "compliance_assessor": _assessor(),
        "audio_settings": AudioSettings(),
        "models": ModelSettings(models_root=f"{data_root}/models"),
        "reports": ReportSettings(root=f"{data_root}/dashboards"),
        "categories": CategorySettings(categories_file=os.environ.get("CALLINTEL_CATEGORIES_FILE")),
        "alert_channels": _alert_channels(data_root),
    }


def build_definitions(deployment: str | None = None, resources: dict | None = None) -> dg.Definitions:
    """The project's definitions bound to a profile's resources, with `resources` replacing some of
    them (tests and the bench bind temporary stores this way)."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[call_pipeline_job, reprocess_malformed_job, forget_call, forget_agent],
        sensors=[new_recordings_sensor],
        resources={**build_resources(deployment), **(resources or {})},
        # Also for the UI's ad-hoc materializations and backfills (the implicit asset job).
        executor=PIPELINE_EXECUTOR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
