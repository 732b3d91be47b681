"""An advisory lock on the lakehouse, so erasure and pipeline writes never overlap.

`forget_call` vacuums with zero retention: it deletes every data file the current table version
does not reference, including the files of a write that has not committed yet. Checking for
running Dagster runs is not enough (a run can start a moment later, and a script or notebook
writing the tables is no Dagster run), so writers hold `shared_lakehouse_lock` for the length of a
write and `forget_call` takes the lock exclusively: it waits for writers to finish, and writers
wait for it.

The lock is `fcntl.flock` on a file: on a local lakehouse root the file `_callintel.lock` in that
folder, for an object-store root (`abfss://`, `s3://`) or a Unity Catalog schema a file under the
temp folder named by the hash of `lock_key(lakehouse)`. flock orders the threads and processes of one host, which is where every lakehouse
write happens (a Databricks model stage only returns rows; the asset on the Dagster host merges
them). A deployment whose runs write from several hosts needs a lock service instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = "_callintel.lock"
_POLL_S = 0.05


class LakehouseLockTimeout(TimeoutError):
    """The lock was not granted within the timeout (someone else holds it)."""


def lock_key(lakehouse: Any) -> str:
    """What names a lakehouse's lock: a delta-rs lakehouse's `root`; for a Spark / Unity Catalog
    one (no root), the catalog and schema its table names carry."""
    root = getattr(lakehouse, "root", None)
    return root if root is not None else f"catalog://{lakehouse.table_uri('')}"


def lock_path(root: str) -> Path:
    """The lock file guarding the lakehouse at `root`."""
    if "://" in root:
        digest = hashlib.sha256(root.rstrip("/").encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "callintel-locks" / f"{digest}.lock"
    return Path(root).resolve() / LOCK_FILE


@contextlib.contextmanager
def lakehouse_lock(root: str, exclusive: bool, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the lakehouse lock: `exclusive` for erasure, shared for writers (any number at once).

    Waits up to `timeout_s` seconds (None: as long as it takes) and raises `LakehouseLockTimeout`
    naming the lock file when it is not granted in time."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    kind = "exclusive" if exclusive else "shared"
                    raise LakehouseLockTimeout(
                        f"could not get the {kind} lakehouse lock {path} within {timeout_s:g} s; another process holds it"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def shared_lakehouse_lock(root: str, timeout_s: float | None = None) -> contextlib.AbstractContextManager[None]:
    """What every lakehouse writer holds while it writes; excludes only `forget_call`."""
    return lakehouse_lock(root, exclusive=False, timeout_s=timeout_s)
