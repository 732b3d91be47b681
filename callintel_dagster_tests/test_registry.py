"""The table registry and its one write path: lineage is what the assets read, a missing table reads
as an empty frame with the contract's columns, schemas evolve explicitly, a failed call keeps its
earlier rows, and the package works installed from a wheel."""


import datetime as dt
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow
import pytest

from callintel_dagster import schemas
from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.io import TableReader, table_asset_kwargs, write_table
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.assets.tone import tone_scores
from callintel_dagster.definitions import ASSETS
from callintel_dagster.resources.lakehouse import DeltaLakehouse, SchemaMismatchError
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.tables import (
    CALL_SUMMARIES,
    QUARANTINED_CALLS,
    SPEECH_ACTIVITY,
    STAGE_TABLES,
    TABLES,
    TONE_SCORES,
    TRANSCRIPTS,
)
from callintel_dagster.tools.demo_data import write_sample_call
from callintel_dagster_tests.conftest import DAY_ONE, InlineCompute, as_date

REPO = Path(__file__).resolve().parent.parent


def test_every_contract_has_one_table_and_every_table_is_written_by_one_asset():
    bases = (schemas._Table, schemas._AgentTable)
    models = {obj for obj in vars(schemas).values() if isinstance(obj, type) and issubclass(obj, bases) and obj not in bases}
    assert {table.model for table in TABLES.values()} == models
    owners: dict[str, list[str]] = {}
    for asset in ASSETS:
        for key in asset.keys:
            owners.setdefault(key.to_user_string(), []).append(asset.node_def.name)
    assert set(TABLES) - {t.name for t in STAGE_TABLES} <= set(owners)
    assert all(len(names) == 1 for names in owners.values())


def test_a_missing_table_reads_as_an_empty_frame_with_the_contract_columns(lakehouse):
    frame = lakehouse.read(TRANSCRIPTS, [as_date(DAY_ONE)])
    assert frame.empty and list(frame.columns) == TRANSCRIPTS.columns


def test_an_asset_that_reads_an_undeclared_table_fails_and_names_it(lakehouse):
    @dg.asset(**table_asset_kwargs(CALL_SUMMARIES, reads=[TRANSCRIPTS]))
    def sneaky(context: dg.AssetExecutionContext, lakehouse: DeltaLakehouse):
        read = TableReader(context, lakehouse)
        read(TRANSCRIPTS, None)
        read(SPEECH_ACTIVITY, None)

    result = dg.materialize([sneaky], partition_key=DAY_ONE, resources={"lakehouse": lakehouse}, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "reads table 'speech_activity' without declaring it" in failure


def _summaries(call_ids: list[str], day: dt.date) -> pd.DataFrame:
    return pd.DataFrame([
        {"call_id": c, "call_date": day, "run_id": "r", "issues": "[]", "outcomes": "[]", "action_items": "[]",
         "source": "extractive", "model_id": "extractive", "llm_error": None}
        for c in call_ids
    ])


def test_a_table_missing_a_new_column_is_migrated_and_a_changed_type_is_refused(lakehouse, caplog):
    day = as_date(DAY_ONE)
    old = CALL_SUMMARIES.arrow_schema()
    old = old.remove(old.get_field_index("llm_error"))  # a table written before that column existed
    rows = _summaries(["call-a-000000001"], day).drop(columns=["llm_error"])
    lakehouse.merge_partition(CALL_SUMMARIES.name, pyarrow.Table.from_pandas(rows, schema=old, preserve_index=False), ["call_id"], day)

    with caplog.at_level(logging.WARNING):
        outcome = lakehouse.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001", "call-b-000000002"], day), [day])
    assert outcome.written and outcome.rows == 2
    assert "added column(s) llm_error" in caplog.text
    stored = lakehouse.read(CALL_SUMMARIES)
    assert list(stored.columns) == CALL_SUMMARIES.columns and len(stored) == 2

    wrong = pyarrow.table({"call_id": ["call-a-000000001"], "call_date": [day], "issues": [3]})
    with pytest.raises(SchemaMismatchError, match="issues: stored string, written int64"):
        lakehouse.merge_partition(CALL_SUMMARIES.name, wrong, ["call_id"], day)


def test_a_frame_that_breaks_its_contract_is_not_written_and_the_check_says_why(lakehouse):
    day = as_date(DAY_ONE)
    bad = _summaries(["short"], day)  # call ids are at least 8 characters

    @dg.asset(**table_asset_kwargs(CALL_SUMMARIES, reads=[]))
    def summaries(context: dg.AssetExecutionContext, lakehouse: DeltaLakehouse):
        check, written = write_table(context, lakehouse, CALL_SUMMARIES, bad.drop(columns=["call_date", "run_id"]), [day])
        return dg.MaterializeResult(metadata=written, check_results=[check])

    result = dg.materialize([summaries], partition_key=DAY_ONE, resources={"lakehouse": lakehouse}, raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "nothing was written" in check.description
    assert lakehouse.read(CALL_SUMMARIES).empty


@pytest.mark.slow
def test_a_call_that_fails_a_rerun_keeps_its_earlier_rows(resources, blob_root, tiny_wav2vec2_dir, tmp_path):
    for agent in ("agent-1", "agent-2"):
        write_sample_call(blob_root / DAY_ONE, f"{agent}__call.wav")
    assert dg.materialize([raw_call_audio, valid_segments], partition_key=DAY_ONE, resources=resources).success
    lakehouse = resources["lakehouse"]
    keep, fail = sorted(lakehouse.read(SPEECH_ACTIVITY)["call_id"])
    models = ModelSettings(tone_backend="wav2vec2", tone_model_path=tiny_wav2vec2_dir, models_root=str(tmp_path))

    first = dg.materialize([tone_scores], partition_key=DAY_ONE, resources={**resources, "models": models, "compute": InlineCompute()})
    assert first.success
    before = lakehouse.read(TONE_SCORES).set_index(["call_id", "segment_index"]).sort_index()

    recompute = {"ops": {"tone_scores": {"config": {"recompute": True}}}}
    second = dg.materialize(
        [tone_scores], partition_key=DAY_ONE, run_config=recompute,
        resources={**resources, "models": models, "compute": InlineCompute(fail_call_ids=[fail])},
    )
    assert second.success
    after = lakehouse.read(TONE_SCORES).set_index(["call_id", "segment_index"]).sort_index()
    pd.testing.assert_frame_equal(after.loc[fail], before.loc[fail])  # same rows, same run_id
    assert set(after.loc[keep, "run_id"]) == {second.run_id}
    quarantined = lakehouse.read(QUARANTINED_CALLS).set_index("call_id")
    assert list(quarantined.index) == [fail]
    assert "worker killed" in quarantined.loc[fail, "reason"] and "kept (stale)" in quarantined.loc[fail, "reason"]

    third = dg.materialize(
        [tone_scores], partition_key=DAY_ONE, run_config=recompute, resources={**resources, "models": models, "compute": InlineCompute()}
    )
    assert third.success
    assert lakehouse.read(QUARANTINED_CALLS).empty
    assert set(lakehouse.read(TONE_SCORES)["run_id"]) == {third.run_id}


def test_the_wheel_carries_its_data_and_the_cli_works_installed_outside_the_repository(tmp_path):
    source, wheel_dir = tmp_path / "source", tmp_path / "wheel"
    # Build from a clean copy: an in-place build would reuse a stale build/ folder.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "data", "build", "bench", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheel_dir.glob("callintel_dagster-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    names = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert "callintel_dagster/dagster.yaml" in names
    assert "callintel_dagster/categories/healthcare.yaml" in names
    assert any(n.startswith("callintel_dagster/tools/demo_scripts/") for n in names)
    assert not any(n.startswith("callintel_dagster_tests/") for n in names)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import callintel_dagster, sys; assert callintel_dagster.__file__.startswith(sys.argv[1]), callintel_dagster.__file__;"
        "from callintel_dagster.tools.cli import main; sys.exit(main(['--data-dir', 'data', 'prepare-home']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=elsewhere, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "run_coordinator" in (elsewhere / "data" / "dagster_home" / "dagster.yaml").read_text()


def test_a_write_waits_for_erasure_holding_the_lakehouse_lock(lakehouse):
    from callintel_dagster.resources.locks import (
        LakehouseLockTimeout,
        lakehouse_lock,
        lock_key,
    )

    day = as_date(DAY_ONE)
    impatient = lakehouse.model_copy(update={"write_lock_timeout_s": 0.3})
    with lakehouse_lock(lock_key(lakehouse), exclusive=True):  # what forget_call holds while it vacuums
        with pytest.raises(LakehouseLockTimeout, match="shared lakehouse lock"):
            impatient.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001"], day), [day])
    assert impatient.write_validated(CALL_SUMMARIES, _summaries(["call-a-000000001"], day), [day]).written
