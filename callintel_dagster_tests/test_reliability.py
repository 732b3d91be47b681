"""Reliability and security: erasure (`forget_call`), a run killed mid-partition, re-delivered blobs,
200 corrupt or adversarial recordings in one day, and secrets that must never reach logs or tables.

Only the foundation assets run (blob inventory + silero-vad), so every test stays within seconds of
CPU except the two that start the real `dagster` CLI in a subprocess (definitions import ~8 s each).
"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import soundfile
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from pyarrow.fs import LocalFileSystem, SubTreeFileSystem

from callintel_dagster.assets.ingest import raw_call_audio
from callintel_dagster.assets.maintenance import forget_call, redacted_copy_key
from callintel_dagster.assets.segments import valid_segments
from callintel_dagster.engines.ingest import call_id_for
from callintel_dagster.engines.reference import sample_call_path
from callintel_dagster.resources.blob_store import LocalBlobStore
from callintel_dagster.resources.lakehouse import (
    DEFAULT_LOG_RETENTION,
    LOG_RETENTION_PROPERTY,
    ZERO_LOG_RETENTION,
    DeltaLakehouse,
    SparkDeltaLakehouse,
)
from callintel_dagster.resources.locks import (
    LakehouseLockTimeout,
    lakehouse_lock,
    lock_key,
    lock_path,
    shared_lakehouse_lock,
)
from callintel_dagster.resources.models import ModelSettings
from callintel_dagster.resources.reports import ReportSettings
from callintel_dagster.resources.settings import AudioSettings
from callintel_dagster.tools.demo_data import write_sample_call
from callintel_dagster_tests.conftest import DAY_ONE, DAY_TWO, InlineCompute, pipeline_run

FOUNDATION = [raw_call_audio, valid_segments]
REPO = Path(__file__).resolve().parents[1]
# Columns that differ between two runs over the same input by design.
VOLATILE = ["run_id", "ingested_at", "quarantined_at", "processed_at"]
KEYS = {
    "raw_call_audio": ["call_id"],
    "valid_segments": ["call_id", "segment_index"],
    "speech_activity": ["call_id"],
    "quarantined_calls": ["call_id", "stage"],
    "processed_calls": ["call_id", "stage"],
}


def _materialize(resources: dict, partition: str = DAY_ONE, assets=FOUNDATION) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=partition, resources=resources)


def _stable(lakehouse: DeltaLakehouse, table: str) -> pd.DataFrame:
    """A table's rows without the per-run columns, in key order, for comparing two runs."""
    frame = lakehouse.read(table).drop(columns=VOLATILE, errors="ignore")
    return frame.sort_values(KEYS[table]).reset_index(drop=True)


def _files_mentioning(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` (data files, checkpoints, JSON log) that contains one of `needles`.
    Parquet is read with pyarrow, since compressed pages hide strings from a byte scan."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else path.read_bytes().decode("latin-1")
        hits += [f"{path.relative_to(root)}: {n}" for n in needles if n in text]
    return hits


def _put_sample(blob_root: Path, key: str) -> Path:
    target = blob_root / key
    return write_sample_call(target.parent, target.name)


def _forget_config(call_id: str, delete_recording: bool = True, **config) -> dict:
    return {"ops": {"forget_call_data": {"config": {"call_id": call_id, "delete_recording": delete_recording, **config}}}}


def _forget_resources(resources: dict) -> dict:
    dashboards = Path(resources["lakehouse"].root).parent / "dashboards"
    return {**resources, "models": ModelSettings(), "reports": ReportSettings(root=str(dashboards))}


# --- forget_call ---------------------------------------------------------------------------------


def test_forget_call_erases_rows_old_versions_and_blobs(blob_root, resources):
    folder = blob_root / DAY_ONE
    keep_key, forget_key = f"{DAY_ONE}/agent-1__keep.wav", f"{DAY_ONE}/agent-2__forget.wav"
    for key in (keep_key, forget_key):
        _put_sample(blob_root, key)
        _put_sample(blob_root, redacted_copy_key(key, "redacted"))  # as `transcripts` would have written it
    (folder / "agent-3__broken.wav").write_bytes(b"RIFF not really")  # so `quarantined_calls` exists too
    write_sample_call(blob_root / DAY_TWO, "agent-2__other-day.wav")
    _materialize(resources)
    _materialize(resources)  # the re-run rewrites the files: older table versions hold the call as well
    _materialize(resources, DAY_TWO)
    lakehouse = resources["lakehouse"]
    forget_id, keep_id = call_id_for(forget_key), call_id_for(keep_key)
    tables = lakehouse.tables()
    assert tables == sorted(KEYS)
    before = {table: _stable(lakehouse, table) for table in tables}
    assert all(forget_id in set(before[t]["call_id"]) for t in ("raw_call_audio", "valid_segments", "speech_activity"))

    result = forget_call.execute_in_process(run_config=_forget_config(forget_id), resources=_forget_resources(resources))
    summary = result.output_for_node("forget_call_data")
    assert summary["rows_deleted"]["raw_call_audio"] == 1 and summary["rows_deleted"]["valid_segments"] > 1
    assert summary["blobs_deleted"] == 2

    for table in tables:
        after = _stable(lakehouse, table)
        expected = before[table][before[table]["call_id"] != forget_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(after, expected)  # the call is gone, every other row untouched
    assert keep_id in set(lakehouse.read("valid_segments")["call_id"])

    lakehouse_root = Path(lakehouse.root)
    assert _files_mentioning(lakehouse_root, [forget_id, "agent-2__forget"]) == []
    assert _files_mentioning(lakehouse_root, [keep_id]) != []  # the scan does see what is still there
    for table in tables:
        uri = lakehouse.table_uri(table)
        local = SubTreeFileSystem(uri, LocalFileSystem())  # as DeltaLakehouse.read does, see there
        try:
            old = DeltaTable(uri, version=0).to_pyarrow_table(filesystem=local)
        except (DeltaError, OSError):
            continue  # time travel to before the erasure no longer exists
        assert forget_id not in old.column("call_id").to_pylist()

    assert not (blob_root / forget_key).exists()
    assert not (blob_root / redacted_copy_key(forget_key, "redacted")).exists()
    assert (blob_root / keep_key).exists() and (blob_root / redacted_copy_key(keep_key, "redacted")).exists()

    # Forgetting it again finds nothing: an unknown id fails unless told to finish an earlier erasure.
    again = forget_call.execute_in_process(
        run_config=_forget_config(forget_id), resources=_forget_resources(resources), raise_on_error=False
    )
    assert not again.success and "unknown" in str(again.failure_data_for_node("forget_call_data").error)
    finished = forget_call.execute_in_process(
        run_config=_forget_config(forget_id, allow_unknown=True), resources=_forget_resources(resources)
    )
    summary = finished.output_for_node("forget_call_data")
    assert sum(summary["rows_deleted"].values()) == 0 and summary["blobs_deleted"] == 0
    assert all(forget_id not in set(lakehouse.read(table)["call_id"]) for table in tables)


def test_forget_call_keeps_the_recording_on_request_and_refuses_unsafe_input(blob_root, resources):
    key = f"{DAY_ONE}/agent-1__kept.wav"
    _put_sample(blob_root, key)
    masked = _put_sample(blob_root, redacted_copy_key(key, "redacted"))
    _materialize(resources, assets=[raw_call_audio])
    lakehouse, call_id = resources["lakehouse"], call_id_for(key)
    run_resources = _forget_resources(resources)

    # A pipeline run still writing, or queued to: zero-retention VACUUM would delete its uncommitted files.
    for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
        instance = dg.DagsterInstance.ephemeral()
        instance.add_run(pipeline_run(status))
        blocked = forget_call.execute_in_process(
            run_config=_forget_config(call_id), resources=run_resources, instance=instance, raise_on_error=False
        )
        assert not blocked.success and "queued or in progress" in str(blocked.failure_data_for_node("forget_call_data").error)

    # Anything but a call id never reaches the DELETE predicate.
    injected = forget_call.execute_in_process(
        run_config=_forget_config("' OR call_id IS NOT NULL OR '"), resources=run_resources, raise_on_error=False
    )
    assert "string_pattern_mismatch" in injected.failure_data_for_node("forget_call_data").error.cause.message
    assert len(lakehouse.read("raw_call_audio")) == 1 and masked.exists()

    forget_call.execute_in_process(run_config=_forget_config(call_id, delete_recording=False), resources=run_resources)
    assert lakehouse.read("raw_call_audio").empty
    assert (blob_root / key).exists() and not masked.exists()


def test_forget_call_fails_on_an_unknown_call_id_and_changes_nothing(blob_root, resources):
    _put_sample(blob_root, f"{DAY_ONE}/agent-1__known.wav")
    _materialize(resources, assets=[raw_call_audio])
    lakehouse = resources["lakehouse"]
    version = DeltaTable(lakehouse.table_uri("raw_call_audio")).version()

    result = forget_call.execute_in_process(
        run_config=_forget_config("0123456789abcdef"), resources=_forget_resources(resources), raise_on_error=False
    )
    error = str(result.failure_data_for_node("forget_call_data").error)
    assert not result.success and "call 0123456789abcdef: unknown: not in raw_call_audio nor in any of 2 table(s)" in error
    assert len(lakehouse.read("raw_call_audio")) == 1
    assert DeltaTable(lakehouse.table_uri("raw_call_audio")).history()[0]["version"] == version  # no VACUUM, no commit


_HOLD_LOCK = """
import sys
from callintel_dagster.resources.locks import shared_lakehouse_lock
with shared_lakehouse_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_forget_call_waits_for_writers_holding_the_lakehouse_lock(blob_root, resources):
    """A writer in another process holds the shared lock (as the write path does while it writes):
    forget_call cannot get it exclusively, fails with a clear message and erases nothing; once the
    writer is done it goes through."""
    key = f"{DAY_ONE}/agent-1__locked.wav"
    _put_sample(blob_root, key)
    _materialize(resources, assets=[raw_call_audio])
    lakehouse, call_id = resources["lakehouse"], call_id_for(key)
    writer = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, lakehouse.root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
    )
    try:
        assert writer.stdout.readline().strip() == "held"
        blocked = forget_call.execute_in_process(
            run_config=_forget_config(call_id, lock_timeout_s=0.5), resources=_forget_resources(resources),
            raise_on_error=False,
        )
        error = str(blocked.failure_data_for_node("forget_call_data").error)
        assert not blocked.success and f"call {call_id}: not erased" in error and str(lock_path(lakehouse.root)) in error
        assert len(lakehouse.read("raw_call_audio")) == 1 and (blob_root / key).exists()
    finally:
        writer.communicate("")
    forget_call.execute_in_process(run_config=_forget_config(call_id), resources=_forget_resources(resources))
    assert lakehouse.read("raw_call_audio").empty and not (blob_root / key).exists()


def test_writers_share_the_lakehouse_lock_and_erasure_excludes_them(tmp_path):
    root = str(tmp_path / "lakehouse")
    with shared_lakehouse_lock(root), shared_lakehouse_lock(root, timeout_s=0.1):
        with pytest.raises(LakehouseLockTimeout, match="exclusive lakehouse lock"):
            with lakehouse_lock(root, exclusive=True, timeout_s=0.1):
                pass
    with lakehouse_lock(root, exclusive=True, timeout_s=0.1):
        with pytest.raises(LakehouseLockTimeout, match="shared lakehouse lock"):
            with shared_lakehouse_lock(root, timeout_s=0.1):
                pass
    assert lock_path(root) == Path(root).resolve() / "_callintel.lock"
    assert lock_path("abfss://lake@acct.dfs.core.windows.net/callintel") != lock_path("abfss://lake@acct.dfs.core.windows.net/x")
    spark_key = lock_key(SparkDeltaLakehouse(catalog="main", schema_name="callintel"))
    assert spark_key == "catalog://`main`.`callintel`.``" and lock_path(spark_key).parent.name == "callintel-locks"


def test_forget_call_removes_the_dashboards_that_show_the_call(blob_root, resources):
    key = f"{DAY_ONE}/agent-1__shown.wav"
    _put_sample(blob_root, key)
    _materialize(resources, assets=[raw_call_audio])
    call_id = call_id_for(key)
    run_resources = _forget_resources(resources)
    dashboards = Path(run_resources["reports"].root)
    dashboards.mkdir()
    (dashboards / f"callintel_{DAY_ONE}_{DAY_ONE}.html").write_text(f'<tr id="call-{call_id}"><td>{call_id}</td></tr>')
    (dashboards / "latest.html").write_text(f'<tr id="call-{call_id}"></tr>')
    (dashboards / f"callintel_{DAY_TWO}_{DAY_TWO}.html").write_text('<tr id="call-ffffffffffffffff"></tr>')

    result = forget_call.execute_in_process(run_config=_forget_config(call_id), resources=run_resources)
    summary = result.output_for_node("forget_call_data")
    assert summary["dashboards_deleted"] == [f"callintel_{DAY_ONE}_{DAY_ONE}.html", "latest.html"]
    assert [p.name for p in dashboards.iterdir()] == [f"callintel_{DAY_TWO}_{DAY_TWO}.html"]


def _log_retention(lakehouse: DeltaLakehouse, table: str) -> str | None:
    return DeltaTable(lakehouse.table_uri(table)).metadata().configuration.get(LOG_RETENTION_PROPERTY)


def test_purge_history_never_leaves_zero_log_retention_behind(blob_root, resources, monkeypatch):
    _put_sample(blob_root, f"{DAY_ONE}/agent-1__a.wav")
    _materialize(resources, assets=[raw_call_audio])
    lakehouse = resources["lakehouse"]

    # A purge killed between its two property changes left zero retention: the next purge restores
    # the default instead of "restoring" zero.
    DeltaTable(lakehouse.table_uri("raw_call_audio")).alter.set_table_properties({LOG_RETENTION_PROPERTY: ZERO_LOG_RETENTION})
    lakehouse.purge_history("raw_call_audio")
    assert _log_retention(lakehouse, "raw_call_audio") == DEFAULT_LOG_RETENTION

    # A purge that fails half-way restores the table's own setting on the way out.
    DeltaTable(lakehouse.table_uri("raw_call_audio")).alter.set_table_properties({LOG_RETENTION_PROPERTY: "interval 7 days"})

    def disk_full(self):
        raise OSError("No space left on device")

    monkeypatch.setattr(DeltaTable, "cleanup_metadata", disk_full)
    with pytest.raises(OSError, match="No space left"):
        lakehouse.purge_history("raw_call_audio")
    assert _log_retention(lakehouse, "raw_call_audio") == "interval 7 days"


# --- a run killed mid-partition ------------------------------------------------------------------

CLI = [
    sys.executable, "-m", "dagster", "asset", "materialize", "-m", "callintel_dagster.definitions",
    # One process for the whole run is the project's default executor (jobs.PIPELINE_EXECUTOR).
    "--select", "raw_call_audio,valid_segments,speech_activity", "--partition", DAY_ONE,
]  # fmt: skip


def _cli_env(data_root: Path, blob_root: Path, dagster_home: Path, **extra: str) -> dict[str, str]:
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLINTEL_", "DATABRICKS_"))}
    env.update(CALLINTEL_DATA_ROOT=str(data_root), CALLINTEL_BLOB_ROOT=str(blob_root), DAGSTER_HOME=str(dagster_home))
    return {**env, **extra}


def _run_cli(env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(CLI, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_run_killed_mid_partition_reruns_to_the_clean_result(tmp_path):
    blobs = tmp_path / "blobs"
    for number in range(6):  # six 30 s calls: VAD takes long enough to be interrupted
        write_sample_call(blobs / DAY_ONE, f"agent-{number}__copy.wav")
    (blobs / DAY_ONE / "agent-9__truncated.wav").write_bytes(sample_call_path().read_bytes()[:40])
    killed_root = tmp_path / "killed"
    env = _cli_env(killed_root, blobs, tmp_path / "dagster_home")

    committed = killed_root / "lakehouse" / "raw_call_audio" / "_delta_log" / f"{0:020d}.json"
    run = subprocess.Popen(CLI, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not committed.exists():
            assert run.poll() is None, "the run ended before raw_call_audio was committed"
            assert time.monotonic() < deadline, "raw_call_audio was never committed"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the run and anything it started
        run.wait()
    assert not (killed_root / "lakehouse" / "speech_activity").exists(), "the kill did not land mid-partition"

    _run_cli(env)

    clean = DeltaLakehouse(root=str(tmp_path / "clean" / "lakehouse"))
    _materialize({"blob_store": LocalBlobStore(root=str(blobs)), "lakehouse": clean, "audio_settings": AudioSettings(),
                  "compute": InlineCompute(), "models": ModelSettings()})
    rerun = DeltaLakehouse(root=str(killed_root / "lakehouse"))
    assert rerun.tables() == clean.tables() == sorted(KEYS)
    for table in KEYS:
        pd.testing.assert_frame_equal(_stable(rerun, table), _stable(clean, table))
    assert len(_stable(rerun, "speech_activity")) == 6


# --- the same blob delivered twice, then replaced ------------------------------------------------


def test_a_redelivered_blob_stays_one_call_and_new_bytes_are_reprocessed(blob_root, resources):
    key = f"{DAY_ONE}/agent-1__call.wav"
    target = write_sample_call(blob_root / DAY_ONE, "agent-1__call.wav")
    lakehouse = resources["lakehouse"]
    _materialize(resources)
    first = lakehouse.read("raw_call_audio")
    first_segments = _stable(lakehouse, "valid_segments")

    target.write_bytes(target.read_bytes())  # re-delivered: same key, same bytes, new mtime
    os.utime(target, (time.time() + 10, time.time() + 10))
    _materialize(resources)
    second = lakehouse.read("raw_call_audio")
    assert len(second) == 1 and second.loc[0, "call_id"] == first.loc[0, "call_id"] == call_id_for(key)
    assert second.loc[0, "checksum_sha256"] == first.loc[0, "checksum_sha256"]
    assert second.loc[0, "blob_version"] != first.loc[0, "blob_version"]
    pd.testing.assert_frame_equal(_stable(lakehouse, "valid_segments"), first_segments)

    audio, rate = soundfile.read(sample_call_path(), dtype="int16")
    soundfile.write(target, audio[: 15 * rate], rate, subtype="PCM_16")  # replaced: the first 15 s only
    os.utime(target, (time.time() + 20, time.time() + 20))
    _materialize(resources)
    third = lakehouse.read("raw_call_audio")
    assert len(third) == 1 and third.loc[0, "call_id"] == call_id_for(key)
    assert third.loc[0, "checksum_sha256"] != first.loc[0, "checksum_sha256"]
    assert third.loc[0, "blob_version"] != second.loc[0, "blob_version"]
    assert third.loc[0, "duration_s"] == pytest.approx(15.0)
    assert lakehouse.read("valid_segments")["end_s"].max() == pytest.approx(15.0, abs=0.05)
    assert lakehouse.read("speech_activity").loc[0, "duration_s"] == pytest.approx(15.0, abs=0.05)


# --- 200 corrupt or adversarial recordings -------------------------------------------------------

MAX_DURATION_S = 60.0
CORPUS_SIZE = 200


def _u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def _wav_header(sample_rate: int, channels: int, bits: int, data_len: int, fmt_tag: int = 1) -> bytes:
    """A 44-byte RIFF/WAVE header that says whatever it is told (values wrap like the real fields)."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHI", fmt_tag, channels & 0xFFFF, sample_rate & 0xFFFFFFFF)
    fmt += _u32(sample_rate * block_align) + struct.pack("<HH", block_align & 0xFFFF, bits & 0xFFFF)
    return b"RIFF" + _u32(36 + data_len) + b"WAVE" + b"fmt " + _u32(16) + fmt + b"data" + _u32(data_len)


def _ffmpeg(work: Path, name: str, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(work / name)], check=True)
    return (work / name).read_bytes()


def _adversarial_corpus(work: Path) -> dict[str, bytes]:
    """{file name: bytes}: a few good calls, then every way an upload can be broken or hostile.
    `good__` and `wrongext__` files must be processed; the rest may go either way."""
    audio, rate = soundfile.read(sample_call_path(), dtype="int16")
    clip = audio[10 * rate : 13 * rate]  # 3 s of continuous speech: cheap to decode and VAD 200 times
    soundfile.write(work / "clip.wav", clip, rate, subtype="PCM_16")
    src = ["-i", str(work / "clip.wav")]
    wav, pcm = (work / "clip.wav").read_bytes(), clip.tobytes()
    mp3, flac = _ffmpeg(work, "clip.mp3", *src), _ffmpeg(work, "clip.flac", *src)
    ogg = _ffmpeg(work, "clip.ogg", *src, "-c:a", "libvorbis")
    mulaw = _ffmpeg(work, "mulaw.wav", *src, "-ar", "8000", "-ac", "2", "-c:a", "pcm_mulaw")
    # 4 h of digital silence in ~100 KB (FLAC stores each 16384-sample frame as one constant).
    four_hours = _ffmpeg(
        work, "4h.flac", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:n=16384", "-t", "14400",
        "-c:a", "flac", "-compression_level", "0", "-frame_size", "16384",
    )
    # Same 4 h with STREAMINFO's 36-bit total-samples field zeroed: the probe learns no duration,
    # so only the streaming limit in decode_audio stops it (a decompression bomb).
    bomb = bytearray(four_hours)
    bomb[18:26] = (int.from_bytes(bomb[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    silent = io.BytesIO()
    soundfile.write(silent, np.zeros(8000 * 90, np.int16), 8000, format="WAV")

    files = {
        "good__full-call.wav": sample_call_path().read_bytes(),
        "good__o'brien ümlaut; DROP TABLE.WAV": wav,
        "good__clip.flac": flac, "good__clip.mp3": mp3, "good__clip.ogg": ogg,
        "good__mulaw-8k-stereo.wav": mulaw,
        "wrongext__wav-bytes.mp3": wav, "wrongext__mp3-bytes.wav": mp3,
        "wrongext__flac-bytes.wav": flac, "wrongext__ogg-bytes.flac": ogg,
        "zero__pcm.wav": _wav_header(16000, 1, 16, 0),
        "zero__mulaw.wav": _wav_header(8000, 2, 8, 0, fmt_tag=7),
        "zero__empty.flac": _ffmpeg(work, "zero.flac", *src, "-t", "0"),
        "zero__empty.mp3": _ffmpeg(work, "zero.mp3", *src, "-t", "0"),
        "long__silent-90s.wav": silent.getvalue(),
        "long__silent-4h.flac": four_hours,
        "long__bomb-4h-no-length.flac": bytes(bomb),
        "magic__id3-only.mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
        "magic__flac-only.flac": b"fLaC",
        "magic__oggs-only.ogg": b"OggS\x00\x02" + bytes(20),
        "magic__ftyp-only.m4a": struct.pack(">I", 24) + b"ftypM4A \x00\x00\x00\x00M4A mp42",
    }  # fmt: skip
    sources = [("wav", wav, "wav"), ("mp3", mp3, "mp3"), ("flac", flac, "flac"), ("mulaw", mulaw, "wav"), ("ogg", ogg, "ogg")]
    for label, data, ext in sources:
        for cut in (1, 4, 8, 12, 16, 24, 36, 40, 44, 46, 100, 600, 4096):
            files[f"trunc__{label}-{cut}.{ext}"] = data[:cut]
    for sample_rate in (0, 1, 7, 768_000, 4_000_000_000, 0xFFFFFFFF):
        files[f"header__rate-{sample_rate}.wav"] = _wav_header(sample_rate, 1, 16, len(pcm)) + pcm
    for channels in (0, 3, 255, 65535):
        files[f"header__channels-{channels}.wav"] = _wav_header(16000, channels, 16, len(pcm)) + pcm
    for bits in (0, 1, 7, 12, 64, 65535):
        files[f"header__bits-{bits}.wav"] = _wav_header(16000, 1, bits, len(pcm)) + pcm
    for tag in (0, 2, 3, 6, 7, 0x55, 0xFFFE, 0x1234):
        files[f"header__format-{tag}.wav"] = _wav_header(16000, 1, 16, len(pcm), fmt_tag=tag) + pcm
    for data_len in (1, 2**31, 0xFFFFFFFF):
        files[f"header__data-length-{data_len}.wav"] = _wav_header(16000, 1, 16, data_len) + pcm
    rng = random.Random(20261123)
    for number in range(20):
        files[f"riff__random-{number}.wav"] = b"RIFF" + rng.randbytes(4) + b"WAVE" + rng.randbytes(rng.randrange(8, 60_000))
    for ext in ("wav", "mp3", "flac", "ogg", "m4a", "opus", "aac", "au", "aiff", "webm"):
        files[f"random__bytes.{ext}"] = rng.randbytes(rng.randrange(1, 50_000))
    texts = {
        "wav": b"hello, this is not audio\n" * 40, "mp3": "\ufeffUTF-16 text".encode("utf-16"),
        "flac": b"<html><body>404</body></html>", "m4a": b'{"call": "json"}', "ogg": b"PK\x03\x04 a zip",
    }  # fmt: skip
    files.update({f"text__file.{ext}": text for ext, text in texts.items()})
    number = 0
    while len(files) < CORPUS_SIZE:  # byte-flipped real encodings, header-only or anywhere
        label, data, ext = sources[number % len(sources)]
        mutated, span = bytearray(data), (256 if number % 2 == 0 else len(data))
        for _ in range(rng.randrange(1, 24)):
            mutated[rng.randrange(min(span, len(data)))] = rng.randrange(256)
        files[f"fuzz__{label}-{number}.{ext}"] = bytes(mutated)
        number += 1
    return files


class _PeakRss:
    """Samples this process's RSS every 10 ms while the block runs (psutil)."""

    def __enter__(self):
        self._process, self._stop = psutil.Process(), threading.Event()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# 4 h of audio at 16 kHz float32 is 922 MB; a run that decoded the 4 h file or the bomb whole would
# exceed this. Measured alone: 340 -> 657 MiB, 317 MiB of growth, most of it silero-vad and torch loading.
RSS_GROWTH_LIMIT = 600 * 1024**2


def test_two_hundred_hostile_files_are_each_processed_or_quarantined(tmp_path, blob_root, lakehouse):
    work = tmp_path / "work"
    work.mkdir()
    files = _adversarial_corpus(work)
    assert len(files) == CORPUS_SIZE
    for name, data in files.items():
        (blob_root / DAY_ONE).mkdir(exist_ok=True)
        (blob_root / DAY_ONE / name).write_bytes(data)
    resources = {
        "blob_store": LocalBlobStore(root=str(blob_root)),
        "lakehouse": lakehouse,
        "audio_settings": AudioSettings(max_duration_s=MAX_DURATION_S),
        "compute": InlineCompute(),
        "models": ModelSettings(),
    }
    started = time.perf_counter()
    with _PeakRss() as rss:
        result = _materialize(resources)
    elapsed = time.perf_counter() - started
    assert result.success

    raw = lakehouse.read("raw_call_audio")
    assert len(raw) == CORPUS_SIZE  # every file inventoried
    processed = set(lakehouse.read("speech_activity")["call_id"])
    assert processed == set(lakehouse.read("valid_segments")["call_id"])
    quarantine = lakehouse.read("quarantined_calls")
    assert not quarantine.duplicated("call_id").any()
    reasons = dict(zip(quarantine["call_id"], zip(quarantine["stage"], quarantine["reason"])))
    assert not processed & set(reasons)
    for name in files:
        call_id = call_id_for(f"{DAY_ONE}/{name}")
        assert (call_id in processed) != (call_id in reasons), f"{name} is neither processed nor quarantined"
        if name.startswith(("good__", "wrongext__")):
            assert call_id in processed, f"{name}: {reasons.get(call_id)}"
        if call_id in reasons:
            assert name in reasons[call_id][1], f"reason does not name the file: {reasons[call_id]}"
    four_hours = reasons[call_id_for(f"{DAY_ONE}/long__silent-4h.flac")]
    assert four_hours == ("raw_call_audio", "long__silent-4h.flac: 14400 s exceeds the 60-second limit")  # probe only
    bomb = reasons[call_id_for(f"{DAY_ONE}/long__bomb-4h-no-length.flac")]
    assert bomb[0] == "valid_segments" and "longer than the configured maximum of 60 s" in bomb[1]

    growth = rss.peak - rss.baseline
    print(f"200 files in {elapsed:.1f} s; RSS {rss.baseline / 2**20:.0f} MiB -> peak {rss.peak / 2**20:.0f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.0f} MiB"


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_read_through_envvar_never_reach_logs_or_tables(tmp_path):
    canary = f"canary-secret-{uuid.uuid4().hex}"
    blobs = tmp_path / "blobs"
    write_sample_call(blobs / DAY_ONE)
    (blobs / DAY_ONE / "agent-9__broken.wav").write_bytes(b"RIFF not really")  # warnings are logged too
    dagster_home, data_root = tmp_path / "dagster_home", tmp_path / "data"
    secrets = {name: canary for name in ("CALLINTEL_LLM_API_KEY", "DATABRICKS_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "HF_TOKEN")}
    # The run binds the LLM assessor, which reads its key; the cloud profile binds every other secret.
    env = _cli_env(
        data_root, blobs, dagster_home, **secrets,
        CALLINTEL_LLM_BASE_URL="http://127.0.0.1:9/v1", CALLINTEL_LLM_MODEL="llama",
    )  # fmt: skip
    done = _run_cli(env)
    cloud = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "callintel_dagster.definitions"],
        env={
            **env, "CALLINTEL_DEPLOYMENT": "azure-databricks", "CALLINTEL_AZURE_ACCOUNT": "acct",
            "CALLINTEL_AZURE_CONTAINER": "calls", "DATABRICKS_HOST": "https://adb-1.invalid",
            "CALLINTEL_DATABRICKS_ENTRYPOINT": "/Volumes/x/entry.py", "CALLINTEL_DATABRICKS_WHEEL": "/Volumes/x/w.whl",
            "CALLINTEL_DATABRICKS_STAGING": "/Volumes/x/staging",
        },
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert cloud.returncode == 0, cloud.stderr[-3000:]
    assert canary not in cloud.stdout + cloud.stderr

    assert (data_root / "lakehouse" / "speech_activity").is_dir()
    assert any(dagster_home.rglob("*.db")) and any(dagster_home.rglob("compute_logs/*"))
    assert _files_mentioning(dagster_home, ["agent-9__broken.wav"]) != []  # the scan reads the event log
    assert canary not in done.stdout + done.stderr
    assert _files_mentioning(dagster_home, [canary]) == []
    assert _files_mentioning(data_root, [canary]) == []
