"""`new_recordings_sensor`: start a partition run when recordings land or change in the blob store."""

import hashlib
import json
import os
import time
from collections import defaultdict

import dagster as dg

from callintel_dagster.jobs import call_pipeline_job
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobInfo, BlobStore

SENSOR_INTERVAL_S = 60
# A folder whose newest recording was written less than this long ago is still being uploaded: it
# waits for a later tick, so a trickle of uploads becomes one run instead of one run per file.
SETTLE_ENV = "CALLINTEL_SENSOR_SETTLE_S"
DEFAULT_SETTLE_S = 120.0
INGEST_ASSET = dg.AssetKey("raw_call_audio")


def folder_digest(blobs: list[BlobInfo]) -> str:
    """Hash of a date folder's (key, version) pairs: changes when a blob is added, removed or replaced."""
    payload = json.dumps(sorted((blob.key, blob.version) for blob in blobs)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def settle_seconds() -> float:
    """`CALLINTEL_SENSOR_SETTLE_S` (default 120 s), read at every tick."""
    return float(os.environ.get(SETTLE_ENV, DEFAULT_SETTLE_S))


@dg.sensor(
    job=call_pipeline_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Lists the blob store; each date folder with new or replaced recordings gets one partition run "
    "once its uploads have settled. Its first tick adopts the folders that were already ingested.",
)
def new_recordings_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStore):
    """One run per changed date folder. The cursor is `{call_date: folder digest}`: small however
    many recordings a day holds, and a replaced blob (new etag / mtime) changes its folder's digest.
    The run key is `<call_date>:<digest>`, so Dagster never starts the same content twice.

    First tick (no cursor): a folder whose date already has a `raw_call_audio` materialization is
    adopted into the cursor without a run, so turning the sensor on does not re-run history; dates
    never ingested are requested. A folder written to within `settle_seconds()` is left for a later
    tick (and kept out of the cursor until then)."""
    first_tick = not context.cursor
    seen: dict[str, str] = {} if first_tick else json.loads(context.cursor)
    by_date: dict[str, list[BlobInfo]] = defaultdict(list)
    for blob in blob_store.list_recordings():
        by_date[blob.call_date].append(blob)

    valid_dates = set(call_date_partitions.get_partition_keys())
    ingested = context.instance.get_materialized_partitions(INGEST_ASSET) if first_tick and by_date else set()
    settle, now = settle_seconds(), time.time()
    requests, cursor, adopted, settling = [], dict(seen), [], []
    for call_date, blobs in sorted(by_date.items()):
        if call_date not in valid_dates:
            context.log.warning(f"ignoring blob folder {call_date}: outside the partition range")
            continue
        digest = folder_digest(blobs)
        if seen.get(call_date) == digest:
            continue
        if call_date in ingested:
            cursor[call_date] = digest
            adopted.append(call_date)
            continue
        newest = max((blob.modified for blob in blobs if blob.modified is not None), default=None)
        if newest is not None and now - newest < settle:
            settling.append(call_date)
            continue
        cursor[call_date] = digest
        requests.append(
            dg.RunRequest(
                partition_key=call_date,
                run_key=f"{call_date}:{digest}",
                tags={"callintel/recordings": str(len(blobs))},
            )
        )
    if adopted:
        context.log.info(
            f"first tick: adopted {len(adopted)} already-ingested date folder(s) without a run: {', '.join(adopted)}"
        )
    if settling:
        context.log.info(f"waiting for uploads to settle ({settle:g} s) in: {', '.join(settling)}")
    new_cursor = json.dumps(cursor, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)
    reason = dg.SkipReason("uploads still settling" if settling else "no new or changed recordings")
    if new_cursor != (context.cursor or json.dumps({})):
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor)
    return reason
