"""The code location loads offline, without secrets, and the graph is what the README describes."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest


def test_definitions_load_in_a_clean_process_without_network_or_secrets():
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "NO_PROXY": "*"}
    code = "from callintel_dagster.definitions import defs; print(len(defs.resolve_asset_graph().get_all_asset_keys()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == 17


def test_graph_jobs_sensor_and_checks():
    from callintel_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_call_audio", "valid_segments", "speech_activity", "tone_model", "tone_scores", "call_tone",
        "transcripts", "conversation_metrics", "compliance_flags", "malformed_llm_outputs",
        "fused_insights", "insights_dashboard", "redacted_audio", "call_characteristics", "turn_sentiment",
        "call_categories", "call_summaries",
    }
    for key in graph.get_all_asset_keys() - {dg.AssetKey("tone_model")}:
        assert graph.get(key).partitions_def is not None, key
    assert defs.resolve_job_def("call_pipeline_job") is not None
    assert defs.resolve_job_def("reprocess_malformed_job") is not None
    assert defs.resolve_job_def("forget_call") is not None
    assert defs.resolve_sensor_def("new_recordings_sensor") is not None
    check_keys = graph.asset_check_keys
    without_table = {dg.AssetKey("tone_model"), dg.AssetKey("insights_dashboard")}
    assert all(dg.AssetCheckKey(key, "schema_contract") in check_keys for key in graph.get_all_asset_keys() - without_table)


def test_unknown_environment_is_a_clear_error():
    from callintel_dagster.definitions import build_resources

    with pytest.raises(ValueError, match="CALLINTEL_ENV"):
        build_resources("mars")


def test_databricks_resources_bind_from_env_without_touching_the_network(monkeypatch):
    from callintel_dagster.definitions import build_compute, build_lakehouse
    from callintel_dagster.resources.databricks import (
        DatabricksPipesCompute,
        SparkDeltaLakehouse,
    )

    assert isinstance(build_compute("databricks"), DatabricksPipesCompute)
    monkeypatch.setenv("CALLINTEL_LAKEHOUSE", "spark")
    assert isinstance(build_lakehouse("data"), SparkDeltaLakehouse)
    with pytest.raises(ValueError, match="CALLINTEL_COMPUTE"):
        build_compute("mainframe")
