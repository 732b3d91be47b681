"""Reading and writing blobs by fsspec URL (pure Python; no Dagster).

The model-stage tasks run where the recordings are not local files (a Spark worker, a Databricks
GPU cluster), so they receive a URL — `file:///…` for the local store, `abfs://<container>@<account>
.dfs.core.windows.net/…` for Azure Blob — and open it here. A URL names no credential: on the
worker, adlfs reads them from the environment variables in `STORAGE_CREDENTIAL_ENV` (or, with none
set, `DefaultAzureCredential`: the cluster's managed identity). The blob store resource uses the
same helpers with the filesystem it configured, so the orchestrator and the workers share one code
path for downloads and writes.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import fsspec

# What adlfs reads from a worker's environment when a URL names only the account; local Spark
# forwards these from the orchestrator (`LocalSparkCompute`), Databricks sets them from its secret scope.
STORAGE_CREDENTIAL_ENV = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_STORAGE_ANON",
)
_COPY_CHUNK = 1 << 20


class BlobTooLargeError(ValueError):
    """A download grew past the size the caller allowed (a blob replaced since it was inventoried)."""


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


def filesystem_for(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of one URL; a plain path is a local file. Unlike `fsspec.url_to_fs`,
    `::` in a file name is never read as URL chaining (recording names are untrusted)."""
    protocol = fsspec.utils.get_protocol(url)
    cls = fsspec.get_filesystem_class(protocol)
    return cls(use_listings_cache=False, **cls._get_kwargs_from_urls(url)), cls._strip_protocol(url)


@contextlib.contextmanager
def local_file(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int | None = None) -> Iterator[Path]:
    """A local path for `path` on `fs`: the file itself on a local filesystem, else a temp download
    that is deleted on exit. A download stops with `BlobTooLargeError` past `max_bytes`, so a blob
    replaced by a bigger one never fills the worker's disk."""
    if is_local(fs):
        yield Path(path)
        return
    with tempfile.NamedTemporaryFile(suffix=Path(path).suffix, delete=True) as handle:
        copied = 0
        with fs.open(path, "rb") as remote:
            while chunk := remote.read(_COPY_CHUNK):
                copied += len(chunk)
                if max_bytes is not None and copied > max_bytes:
                    raise BlobTooLargeError(f"{Path(path).name}: larger than the {max_bytes} bytes expected; download stopped")
                handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def local_file_of_url(url: str, max_bytes: int | None = None) -> contextlib.AbstractContextManager[Path]:
    """`local_file` for a URL (credentials from the worker's environment)."""
    fs, path = filesystem_for(url)
    return local_file(fs, path, max_bytes)


def open_for_write(fs: fsspec.AbstractFileSystem, path: str) -> BinaryIO:
    """A binary handle that writes `path`, its folder created where the filesystem has folders."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return fs.open(path, "wb")


def write_file(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    with open_for_write(fs, path) as handle:
        handle.write(data)


def open_url_for_write(url: str) -> BinaryIO:
    """`open_for_write` for a URL (credentials from the worker's environment)."""
    fs, path = filesystem_for(url)
    return open_for_write(fs, path)


def remove_url(url: str) -> None:
    """Delete the file at `url`, if there is one."""
    fs, path = filesystem_for(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
