"""The code location loads offline, without secrets; deployment profiles bind coherent resources;
the package's import graph has no cycle and the product never imports its tooling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from callintel_dagster.definitions import (
    DEPLOYMENTS,
    build_definitions,
    build_resources,
)
from callintel_dagster.resources.blob_store import AzureBlobStore, LocalBlobStore
from callintel_dagster.resources.compute import LocalSparkCompute
from callintel_dagster.resources.databricks import DatabricksPipesCompute
from callintel_dagster.resources.lakehouse import DeltaLakehouse, SparkDeltaLakehouse

PACKAGE = Path(__file__).resolve().parent.parent / "callintel_dagster"


def test_dagster_loads_the_code_location_in_a_clean_process_without_network_or_secrets(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "callintel_dagster.definitions"],
        env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_graph_jobs_sensor_and_checks():
    defs = build_definitions("local")
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_call_audio", "valid_segments", "speech_activity", "tone_model", "tone_scores", "call_tone",
        "transcripts", "conversation_metrics", "compliance_flags", "malformed_llm_outputs",
        "fused_insights", "insights_dashboard", "redacted_audio", "call_characteristics", "turn_sentiment",
        "call_categories", "call_summaries", "alerts_sent",
        "fact_call", "fact_flag", "fact_turn_tone", "agent_voice_samples", "agent_voiceprints",
    }
    for key in graph.get_all_asset_keys() - {dg.AssetKey("tone_model")}:
        assert graph.get(key).partitions_def is not None, key
    assert defs.resolve_job_def("call_pipeline_job") is not None
    assert defs.resolve_job_def("reprocess_malformed_job") is not None
    assert defs.resolve_job_def("forget_call") is not None
    assert defs.resolve_job_def("forget_agent") is not None
    assert defs.resolve_sensor_def("new_recordings_sensor") is not None
    check_keys = graph.asset_check_keys
    without_table = {dg.AssetKey("tone_model"), dg.AssetKey("insights_dashboard")}
    assert all(dg.AssetCheckKey(key, "schema_contract") in check_keys for key in graph.get_all_asset_keys() - without_table)


def test_pipeline_and_ui_materializations_run_in_one_process_so_model_stages_share_one_spark():
    """Under the multiprocess executor every step started its own Spark JVM (README "Benchmarks")."""
    defs = build_definitions("local")
    assert defs.resolve_job_def("call_pipeline_job").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_dashboard_history_is_declared_as_a_partition_mapping():
    graph = build_definitions("local").resolve_asset_graph()
    dashboard = graph.get(dg.AssetKey("insights_dashboard"))
    assert {k.to_user_string() for k in dashboard.parent_keys} == {"fused_insights", "tone_scores", "compliance_flags"}
    upstream = graph.get_parent_partition_keys_for_child("2026-11-22", dg.AssetKey("fused_insights"), dg.AssetKey("insights_dashboard"))
    assert sorted(upstream.partitions_subset.get_partition_keys()) == [f"2026-11-{d}" for d in range(16, 23)]


@pytest.mark.parametrize(
    ("deployment", "blob", "lakehouse", "compute"),
    [
        ("local", LocalBlobStore, DeltaLakehouse, LocalSparkCompute),
        ("azure", AzureBlobStore, DeltaLakehouse, LocalSparkCompute),
        ("azure-databricks", AzureBlobStore, DeltaLakehouse, DatabricksPipesCompute),
        ("databricks-uc", AzureBlobStore, SparkDeltaLakehouse, DatabricksPipesCompute),
        ("azurite-local", AzureBlobStore, DeltaLakehouse, LocalSparkCompute),
    ],
)
def test_each_deployment_profile_binds_a_coherent_set_without_touching_the_network(deployment, blob, lakehouse, compute):
    resources = build_resources(deployment)
    assert (type(resources["blob_store"]), type(resources["lakehouse"]), type(resources["compute"])) == (blob, lakehouse, compute)
    assert set(DEPLOYMENTS) == {"local", "azure", "azure-databricks", "databricks-uc", "azurite-local"}


def test_unknown_profile_and_retired_switches_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="CALLINTEL_DEPLOYMENT must be one of"):
        build_resources("mars")
    monkeypatch.setenv("CALLINTEL_COMPUTE", "databricks")
    with pytest.raises(ValueError, match="CALLINTEL_COMPUTE no longer exist"):
        build_resources("local")


def _imports(path: Path) -> set[str]:
    """Modules of this package that `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("callintel_dagster"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("callintel_dagster"))
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(("callintel_dagster", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_package_import_graph_has_no_cycle():
    graph = _module_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(child):], child]))
            if child not in state:
                visit(child, [*trail, child])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_product_never_imports_tools_and_engines_never_import_dagster():
    graph = _module_graph()
    product = [m for m in graph if not m.startswith("callintel_dagster.tools")]
    assert not {m: graph[m] for m in product if any(i.startswith("callintel_dagster.tools") for i in graph[m])}
    dagster_in_engines = [p.name for p in (PACKAGE / "engines").glob("*.py") if "dagster" in {
        (n.module or "").split(".")[0] for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Import) for a in n.names}]
    assert dagster_in_engines == []
