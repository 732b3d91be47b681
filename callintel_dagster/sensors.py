"""`new_recordings_sensor`: start a partition run when recordings land or change in the blob store."""

import hashlib
import json
from collections import defaultdict

import dagster as dg

from callintel_dagster.jobs import call_pipeline_job
from callintel_dagster.partitions import call_date_partitions
from callintel_dagster.resources.blob_store import BlobInfo, BlobStore

SENSOR_INTERVAL_S = 60


def folder_digest(blobs: list[BlobInfo]) -> str:
    """Hash of a date folder's (key, version) pairs: changes when a blob is added, removed or replaced."""
    payload = json.dumps(sorted((blob.key, blob.version) for blob in blobs)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@dg.sensor(
    job=call_pipeline_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Lists the blob store; each date folder with new or replaced recordings gets one partition run.",
)
def new_recordings_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStore):
    """One run per changed date folder. The cursor is `{call_date: folder digest}`: small however
    many recordings a day holds, and a replaced blob (new etag / mtime) changes its folder's digest.
    The run key is `<call_date>:<digest>`, so Dagster never starts the same content twice."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    by_date: dict[str, list[BlobInfo]] = defaultdict(list)
    for blob in blob_store.list_recordings():
        by_date[blob.call_date].append(blob)

    valid_dates = set(call_date_partitions.get_partition_keys())
    requests, cursor = [], dict(seen)
    for call_date, blobs in sorted(by_date.items()):
        if call_date not in valid_dates:
            context.log.warning(f"ignoring blob folder {call_date}: outside the partition range")
            continue
        digest = folder_digest(blobs)
        if seen.get(call_date) == digest:
            continue
        cursor[call_date] = digest
        requests.append(
            dg.RunRequest(
                partition_key=call_date,
                run_key=f"{call_date}:{digest}",
                tags={"callintel/recordings": str(len(blobs))},
            )
        )
    if not requests:
        return dg.SkipReason("no new or changed recordings")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
