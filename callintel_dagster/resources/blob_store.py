"""Where recordings land: a local folder by default, Azure Blob / ADLS Gen2 in production.

Both implementations share one fsspec-based code path (`engines/blob_files.py`, which the model
tasks use too); only the filesystem differs. Layout: `<root>/<YYYY-MM-DD>/<agent_id>__<anything>.<ext>`
— the date folder is the call's partition, the optional `agent_id__` prefix names the agent who took
the call — and `<root>/<YYYY-MM-DD>/<redacted folder>/<name>.redacted.wav` for the PHI-masked copies.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import re
from pathlib import Path, PurePosixPath

import dagster as dg
import fsspec
from pydantic import Field

from callintel_dagster.engines.blob_files import local_file, write_file

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".au", ".aiff", ".wma", ".webm")
_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Zero-byte blob that keeps a day folder in existence on a flat namespace (Azure Blob without
# hierarchical namespace has no folders, only key prefixes); not audio, so no listing returns it.
FOLDER_MARKER = ".keep"


def redacted_copy_key(blob_key: str, redacted_folder: str) -> str:
    """Blob key of the PHI-masked copy of a recording: `<date>/<redacted_folder>/<stem>.redacted.wav`
    (the listing ignores sub-folders, so masked copies are never ingested as calls)."""
    key = PurePosixPath(blob_key)
    return str(key.parent / redacted_folder / f"{key.stem}.redacted.wav")


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
                    f"no folder {folder} for call date {date}; a day without calls needs an empty folder "
                    f"(on a flat blob namespace, a '{FOLDER_MARKER}' blob in it), so that a missing or unmounted "
                    "folder is never taken for one"
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

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local file path for `key`: the file itself when local, else a temp download."""
        return local_file(self._filesystem(), self._full(key))

    def write(self, key: str, data: bytes) -> None:
        write_file(self._filesystem(), self._full(key), data)

    def delete(self, key: str) -> bool:
        """Delete one blob (erasure requests); False when it is already gone, so forgetting twice is fine.
        Deleting a day's last recording keeps its date folder (`FOLDER_MARKER` where the namespace is
        flat): the day then reads as a day without calls, not as a missing, unmounted folder."""
        fs = self._filesystem()
        full = self._full(key)
        if not fs.exists(full):
            return False
        fs.rm(full)
        date = key.split("/", 1)[0]
        if _DATE_FOLDER.match(date) and not fs.exists(self._full(date)):
            write_file(fs, self._full(f"{date}/{FOLDER_MARKER}"), b"")
        return True

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The fsspec URL of `key`, as a model task opens it (`engines/blob_files.py`). It names no
        credential: the worker reads its own."""


class LocalBlobStore(BlobStore):
    """Recordings in a local folder (default `data/blobs`)."""

    root: str = Field(default="data/blobs", description="Folder holding YYYY-MM-DD/ sub-folders of recordings.")

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("file")

    def _root(self) -> str:
        return str(Path(self.root).resolve())

    def url(self, key: str) -> str:
        return f"file://{self._full(key)}"


class AzureBlobStore(BlobStore):
    """Recordings in an Azure Blob container or ADLS Gen2 filesystem, through adlfs.

    Credentials come from `EnvVar`s: a connection string (Azurite, or any account), or the account
    name with a key or SAS token; with none set, adlfs falls back to DefaultAzureCredential (managed
    identity on Databricks). The model tasks get `abfs://` URLs and read the same credentials from
    the worker's environment (`engines.blob_files.STORAGE_CREDENTIAL_ENV`).
    """

    account_name: str | None = Field(
        default=None, description="Storage account name; may be left out when the connection string names it."
    )
    container: str = Field(description="Container (Blob) or filesystem (ADLS Gen2) name.")
    prefix: str = Field(default="", description="Folder inside the container that holds the date folders.")
    account_key: str | None = Field(default=None, description="Account key; pass dg.EnvVar('AZURE_STORAGE_ACCOUNT_KEY').")
    sas_token: str | None = Field(default=None, description="SAS token; pass dg.EnvVar('AZURE_STORAGE_SAS_TOKEN').")
    connection_string: str | None = Field(
        default=None, description="Connection string (it names the account and its endpoint, e.g. Azurite's); "
        "pass dg.EnvVar('AZURE_STORAGE_CONNECTION_STRING').",
    )

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        # fsspec shares one instance per settings in a process; with its listings cache on, a
        # long-lived sensor process would never see a blob uploaded after its first listing.
        return fsspec.filesystem(
            "abfs",
            use_listings_cache=False,
            account_name=self.account_name,
            account_key=self.account_key,
            sas_token=self.sas_token,
            connection_string=self.connection_string,
            anon=False if (self.account_key or self.sas_token or self.connection_string) else None,
        )

    def _root(self) -> str:
        return "/".join(p for p in (self.container, self.prefix.strip("/")) if p)

    def _account(self) -> str:
        if self.account_name:
            return self.account_name
        fields = dict(part.split("=", 1) for part in (self.connection_string or "").split(";") if "=" in part)
        if not fields.get("AccountName"):
            raise ValueError("AzureBlobStore needs account_name, or a connection string that names AccountName")
        return fields["AccountName"]

    def url(self, key: str) -> str:
        path = "/".join(p for p in (self.prefix.strip("/"), key) if p)
        return f"abfs://{self.container}@{self._account()}.dfs.core.windows.net/{path}"
