"""Where recordings land: a local folder by default, Azure Blob / ADLS Gen2 in production.

Both implementations share one fsspec-based code path; only the filesystem differs. Layout:
`<root>/<YYYY-MM-DD>/<agent_id>__<anything>.<ext>` — the date folder is the call's partition, the
optional `agent_id__` prefix names the agent who took the call.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import fsspec
from pydantic import Field

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".au", ".aiff", ".wma", ".webm")
_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    """One recording in the store. `key` is relative to the store root (`2026-11-24/a__x.wav`)."""

    key: str
    size: int
    version: str  # etag / mtime+size: changes whenever the content is replaced
    modified: float | None = None  # last write, Unix seconds (None when the store does not say)

    @property
    def call_date(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class MissingLocationError(FileNotFoundError):
    """The store's root or a requested day folder does not exist: an unmounted share, a wrong
    container or expired credentials must fail loudly, never read as "no recordings"."""


class BlobStore(dg.ConfigurableResource, abc.ABC):
    """Where recordings live: listing and reading them (assets, sensor), writing derived audio (the
    PHI-masked copies) and deleting blobs (erasure)."""

    @abc.abstractmethod
    def _filesystem(self) -> fsspec.AbstractFileSystem: ...

    @abc.abstractmethod
    def _root(self) -> str: ...

    def _full(self, key: str) -> str:
        return f"{self._root().rstrip('/')}/{key}"

    def _version(self, entry: dict) -> str:
        for field in ("etag", "ETag", "version_id"):
            if entry.get(field):
                return str(entry[field]).strip('"')
        mtime = entry.get("mtime") or entry.get("last_modified") or entry.get("created") or ""
        if isinstance(mtime, dt.datetime):
            mtime = mtime.timestamp()
        return f"{mtime}-{entry.get('size', 0)}"

    @staticmethod
    def _modified(entry: dict) -> float | None:
        value = entry.get("mtime") or entry.get("last_modified") or entry.get("LastModified")
        if isinstance(value, dt.datetime):
            return value.timestamp()
        return float(value) if isinstance(value, int | float) else None

    def date_folders(self) -> list[str]:
        fs = self._filesystem()
        if not fs.exists(self._root()):
            raise MissingLocationError(
                f"the recordings root {self._root()} does not exist (unmounted folder, wrong container or "
                "expired credentials?); nothing was listed"
            )
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self._root(), detail=False)]
        return sorted(n for n in names if _DATE_FOLDER.match(n))

    def list_recordings(self, call_date: str | None = None) -> list[BlobInfo]:
        """Audio files for one date partition, or for every date folder when `call_date` is None.
        A missing root or day folder raises `MissingLocationError`; an empty folder is an empty day."""
        fs = self._filesystem()
        dates = self.date_folders() if call_date is None else [call_date]
        found: list[BlobInfo] = []
        for date in dates:
            folder = self._full(date)
            if not fs.exists(folder):
                self.date_folders()  # a missing root is the likelier cause: say so
                raise MissingLocationError(
                    f"no folder {folder} for call date {date}; a day without calls needs an empty folder, "
                    "so that a missing or unmounted folder is never taken for one"
                )
            for entry in fs.ls(folder, detail=True):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                if entry.get("type") != "file" or not name.lower().endswith(AUDIO_EXTENSIONS):
                    continue
                found.append(BlobInfo(
                    key=f"{date}/{name}", size=int(entry.get("size") or 0), version=self._version(entry),
                    modified=self._modified(entry),
                ))
        return sorted(found, key=lambda b: b.key)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file path for `key`: the file itself when local, else a temp download."""
        fs = self._filesystem()
        full = self._full(key)
        if "file" in fs.protocol or "local" in fs.protocol:
            yield Path(full)
            return
        suffix = Path(key).suffix
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=True) as handle:
            with fs.open(full, "rb") as remote:
                shutil.copyfileobj(remote, handle, length=1 << 20)
            handle.flush()
            yield Path(handle.name)

    def write(self, key: str, data: bytes) -> None:
        fs = self._filesystem()
        full = self._full(key)
        fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(full, "wb") as handle:
            handle.write(data)

    def delete(self, key: str) -> bool:
        """Delete one blob (erasure requests); False when it is already gone, so forgetting twice is fine."""
        fs = self._filesystem()
        full = self._full(key)
        if not fs.exists(full):
            return False
        fs.rm(full)
        return True

    def uri(self, key: str) -> str:
        return self._full(key)


class LocalBlobStore(BlobStore):
    """Recordings in a local folder (default `data/blobs`)."""

    root: str = Field(default="data/blobs", description="Folder holding YYYY-MM-DD/ sub-folders of recordings.")

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("file")

    def _root(self) -> str:
        return str(Path(self.root).resolve())


class AzureBlobStore(BlobStore):
    """Recordings in an Azure Blob container or ADLS Gen2 filesystem, through adlfs.

    Credentials come from `EnvVar`s; with neither set, adlfs falls back to DefaultAzureCredential
    (managed identity on Databricks).
    """

    account_name: str = Field(description="Storage account name.")
    container: str = Field(description="Container (Blob) or filesystem (ADLS Gen2) name.")
    prefix: str = Field(default="", description="Folder inside the container that holds the date folders.")
    account_key: str | None = Field(default=None, description="Account key; pass dg.EnvVar('AZURE_STORAGE_KEY').")
    sas_token: str | None = Field(default=None, description="SAS token; pass dg.EnvVar('AZURE_STORAGE_SAS_TOKEN').")

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(
            "abfs",
            account_name=self.account_name,
            account_key=self.account_key,
            sas_token=self.sas_token,
            anon=False if (self.account_key or self.sas_token) else None,
        )

    def _root(self) -> str:
        return "/".join(p for p in (self.container, self.prefix.strip("/")) if p)
