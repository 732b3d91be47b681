"""Never lose a result: a missing folder or a listing that lost most of a day changes nothing, and an
empty day runs green end to end with empty, schema-correct tables."""

import shutil

import dagster as dg
import pandas as pd
import pytest

from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.engines.ingest import call_id_for
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.tables import (
    RAW_CALL_AUDIO,
    STAGE_TABLES,
    TABLES,
    TONE_SCORES,
    VALID_SEGMENTS,
)
from callintel_dagster.tools.demo_data import write_sample_call
from callintel_dagster_tests.conftest import (
    DAY_ONE,
    PIPELINE_ASSETS,
    InlineCompute,
    pipeline_resources,
)

INGEST = [raw_call_audio, valid_segments]


def _failure_message(result) -> str:
    return result.get_step_failure_events()[0].step_failure_data.error.message


def test_a_missing_day_folder_fails_the_run_and_leaves_every_table_as_it_was(resources, blob_root):
    write_sample_call(blob_root / DAY_ONE, "agent-1__call.wav")
    assert dg.materialize(INGEST, partition_key=DAY_ONE, resources=resources).success
    lakehouse = resources["lakehouse"]
    before = {t: lakehouse.read(t) for t in (RAW_CALL_AUDIO, VALID_SEGMENTS)}

    shutil.rmtree(blob_root / DAY_ONE)  # an unmounted share looks exactly like this
    result = dg.materialize(INGEST, partition_key=DAY_ONE, resources=resources, raise_on_error=False)
    assert not result.success
    assert f"no folder {blob_root / DAY_ONE}" in _failure_message(result)
    for table, frame in before.items():
        assert lakehouse.read(table).equals(frame), table

    shutil.rmtree(blob_root)
    result = dg.materialize(INGEST, partition_key=DAY_ONE, resources=resources, raise_on_error=False)
    assert "recordings root" in _failure_message(result) and "does not exist" in _failure_message(result)


def test_a_listing_that_lost_most_of_the_day_is_refused_unless_the_run_is_a_purge(resources, blob_root):
    for n in range(3):
        write_sample_call(blob_root / DAY_ONE, f"agent-{n}__call.wav")
    assert dg.materialize([raw_call_audio], partition_key=DAY_ONE, resources=resources).success
    for n in range(2):
        (blob_root / DAY_ONE / f"agent-{n}__call.wav").unlink()

    refused = dg.materialize([raw_call_audio], partition_key=DAY_ONE, resources=resources, raise_on_error=False)
    assert "2 of the 3 recordings known for this day are no longer in" in _failure_message(refused)
    assert len(resources["lakehouse"].read(RAW_CALL_AUDIO)) == 3

    purge = {"ops": {"raw_call_audio": {"config": {"allow_purge": True}}}}
    assert dg.materialize([raw_call_audio], partition_key=DAY_ONE, resources=resources, run_config=purge).success
    assert list(resources["lakehouse"].read(RAW_CALL_AUDIO)["blob_key"]) == [f"{DAY_ONE}/agent-2__call.wav"]


@pytest.mark.slow
def test_an_empty_day_is_green_end_to_end_with_empty_schema_correct_tables(resources, blob_root, tiny_wav2vec2_dir, tmp_path):
    (blob_root / DAY_ONE).mkdir()  # a holiday: the folder exists, no call came in
    resources = pipeline_resources(resources, tmp_path, tiny_wav2vec2_dir, InlineCompute())
    result = dg.materialize(PIPELINE_ASSETS, partition_key=DAY_ONE, resources=resources)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    lakehouse = resources["lakehouse"]
    for name, table in TABLES.items():
        frame = lakehouse.read(table)
        assert frame.empty and list(frame.columns) == table.columns, name
    assert set(lakehouse.tables()) >= set(TABLES) - {t.name for t in STAGE_TABLES}


@pytest.mark.slow
def test_one_new_recording_in_a_day_of_n_calls_recomputes_one_call(resources, blob_root, tiny_wav2vec2_dir, tmp_path):
    from callintel_dagster.assets.tone import tone_scores

    calls_log = tmp_path / "model_calls.log"
    resources |= {
        "compute": InlineCompute(calls_log=str(calls_log)),
        "models": ModelSettings(tone_backend="wav2vec2", tone_model_path=tiny_wav2vec2_dir, models_root=str(tmp_path)),
    }
    stages = [*INGEST, tone_scores]

    def run(**run_config) -> tuple[list[str], dg.ExecuteInProcessResult]:
        before = calls_log.read_text().split() if calls_log.exists() else []
        result = dg.materialize(stages, partition_key=DAY_ONE, resources=resources, run_config=run_config or None)
        assert result.success
        return calls_log.read_text().split()[len(before):], result

    for n in range(3):
        write_sample_call(blob_root / DAY_ONE, f"agent-{n}__call.wav")
    computed, _ = run()
    assert len(computed) == 3
    scores = resources["lakehouse"].read(TONE_SCORES)

    write_sample_call(blob_root / DAY_ONE, "agent-3__call.wav")
    computed, result = run()
    new_call = call_id_for(f"{DAY_ONE}/agent-3__call.wav")
    assert computed == [new_call]
    vad = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("valid_segments"))
    assert vad.materialization.metadata["calls_unchanged"].value == 3
    after = resources["lakehouse"].read(TONE_SCORES)
    old = after[after["call_id"] != new_call].sort_values(["call_id", "segment_index"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(old, scores.sort_values(["call_id", "segment_index"]).reset_index(drop=True))

    replaced = blob_root / DAY_ONE / "agent-0__call.wav"
    replaced.write_bytes(replaced.read_bytes() + b"\0\0")  # a new version of one recording
    computed, _ = run()
    assert computed == [call_id_for(f"{DAY_ONE}/agent-0__call.wav")]

    computed, _ = run(ops={"tone_scores": {"config": {"recompute": True}}})
    assert len(computed) == 4
