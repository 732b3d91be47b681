"""The whole graph with its recordings in Azure Blob: Azurite (the real emulator, on loopback),
the production `AzureBlobStore` over adlfs, real Spark workers that open the recordings by `abfs://`
URL with the credentials of their own environment, the delta-rs lakehouse, then `forget_call`."""

from __future__ import annotations

import json

import adlfs
import dagster as dg
import numpy as np
import pytest

from callintel_dagster.assets.maintenance import forget_call
from callintel_dagster.definitions import build_resources
from callintel_dagster.engines.audio import SAMPLE_RATE, decode_audio
from callintel_dagster.engines.ingest import call_id_for
from callintel_dagster.engines.reference import sample_call_path
from callintel_dagster.resources.blob_store import redacted_copy_key
from callintel_dagster.resources.compute import LocalSparkCompute
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.sensors import SETTLE_ENV, new_recordings_sensor
from callintel_dagster_tests.conftest import (
    DAY_ONE,
    DAY_TWO,
    PIPELINE_ASSETS,
    pipeline_resources,
)

RECORDING = f"{DAY_TWO}/agent-ana__sample-call.wav"
BROKEN = f"{DAY_TWO}/agent-bo__broken.wav"


@pytest.mark.slow
def test_sensor_pipeline_masked_audio_and_erasure_on_azurite(azure_store, lakehouse, tmp_path, tiny_wav2vec2_dir, monkeypatch):
    monkeypatch.setenv(SETTLE_ENV, "0")
    azure_store.write(RECORDING, sample_call_path().read_bytes())
    azure_store.write(BROKEN, b"RIFF not really a recording")
    resources = pipeline_resources(
        {"blob_store": azure_store, "lakehouse": lakehouse, "audio_settings": AudioSettings()},
        tmp_path, tiny_wav2vec2_dir, LocalSparkCompute(master="local[1]"),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        tick = new_recordings_sensor(dg.build_sensor_context(resources={"blob_store": azure_store}, instance=instance))
        [request] = tick.run_requests
        assert request.partition_key == DAY_TWO and request.tags["callintel/recordings"] == "2"

        result = dg.materialize(
            PIPELINE_ASSETS, partition_key=request.partition_key, resources=resources, instance=instance, tags=request.tags,
        )
        assert result.success
        assert all(check.passed for check in result.get_asset_check_evaluations())

        call_id = call_id_for(RECORDING)
        inventory = lakehouse.read("raw_call_audio").set_index("blob_key")
        assert dict(inventory["status"]) == {RECORDING: "ok", BROKEN: "quarantined"}
        turns = lakehouse.read("transcripts")
        assert set(turns["call_id"]) == {call_id} and turns["text"].str.len().sum() > 100
        assert set(lakehouse.read("tone_scores")["call_id"]) == {call_id}
        assert set(lakehouse.read("compliance_flags")["call_id"]) == {call_id}
        assert set(lakehouse.read("fused_insights")["call_id"]) == {call_id}
        assert lakehouse.read("quarantined_calls").set_index("blob_key").loc[BROKEN, "stage"] == "raw_call_audio"

        # The masked copy was written by the Spark worker into the container, next to the original.
        masked_key = redacted_copy_key(RECORDING, "redacted")
        [row] = lakehouse.read("redacted_audio").to_dict("records")
        assert row["path"] == azure_store.url(masked_key) and row["path"].startswith("abfs://")
        with azure_store.local_copy(masked_key) as masked, azure_store.local_copy(RECORDING) as original:
            masked_audio, original_audio = decode_audio(masked), decode_audio(original)
        assert abs(masked_audio.size - original_audio.size) <= 1
        unmasked = np.ones(masked_audio.size, dtype=bool)
        for start, end in json.loads(row["spans_json"]):
            unmasked[int(start * SAMPLE_RATE) - 1:int(end * SAMPLE_RATE) + 1] = False
        assert np.abs(masked_audio[unmasked] - original_audio[: masked_audio.size][unmasked]).max() < 1e-3
        assert not list(tmp_path.rglob("*.redacted.wav"))  # nothing was staged next to a local path

        # The masked copy lives in a sub-folder, which the listing ignores: no new run for it.
        assert isinstance(
            new_recordings_sensor(dg.build_sensor_context(cursor=tick.cursor, resources={"blob_store": azure_store}, instance=instance)),
            dg.SkipReason,
        )

        forgotten = forget_call.execute_in_process(
            run_config={"ops": {"forget_call_data": {"config": {"call_id": call_id}}}},
            resources={key: resources[key] for key in ("lakehouse", "blob_store", "models", "reports")},
            instance=instance,
        )
        assert forgotten.output_for_node("forget_call_data")["blobs_deleted"] == 2
    assert [blob.key for blob in azure_store.list_recordings(DAY_TWO)] == [BROKEN]
    with pytest.raises(FileNotFoundError), azure_store.local_copy(masked_key):
        pass
    for table in ("raw_call_audio", "transcripts", "redacted_audio", "fused_insights", "compliance_flags"):
        assert call_id not in set(lakehouse.read(table)["call_id"]), table


def test_the_azurite_local_profile_senses_uploads_in_a_long_lived_process(azurite, monkeypatch):
    """`CALLINTEL_DEPLOYMENT=azurite-local` as `make dev` binds it: the connection string comes from
    the environment, the container defaults to `recordings`. A sensor process lives for days, so a
    later upload must show in a later tick (no listing cached by the shared adlfs filesystem)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv(SETTLE_ENV, "0")
    profile = build_resources("azurite-local")
    uploads = adlfs.AzureBlobFileSystem(connection_string=azurite.connection_string)
    uploads.mkdir("recordings")
    uploads.pipe_file(f"recordings/{DAY_ONE}/agent-ana__first.wav", b"RIFF first upload")

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"blob_store": profile["blob_store"]}, instance=instance)
        return new_recordings_sensor(context)

    with dg.DagsterInstance.ephemeral() as instance:
        first = tick(None)
        assert [r.partition_key for r in first.run_requests] == [DAY_ONE]
        assert isinstance(tick(first.cursor), dg.SkipReason)
        uploads.pipe_file(f"recordings/{DAY_TWO}/agent-bo__second.wav", b"RIFF second upload")
        uploads.pipe_file(f"recordings/{DAY_ONE}/agent-bo__third.wav", b"RIFF third upload")
        later = tick(first.cursor)
        assert sorted(r.partition_key for r in later.run_requests) == [DAY_ONE, DAY_TWO]

