"""A persistent numba compilation cache that many processes can use at once (pure Python; no Dagster).

librosa (tone features, Resemblyzer's mel spectrogram) is JIT-compiled by numba; compiling it costs
a fresh process about 15 s on a 2-core machine, which every Spark Python worker paid again when each
process got an empty temporary cache. numba's on-disk cache is not safe for concurrent writers: each
file is replaced atomically, but a function's data files are numbered by overload, so two processes
compiling at once can write "number 1" for different code, and an index then points at the other
process's machine code (that segfaulted `librosa.yin` when `pytest -n 2` shared one cache).

So the cache has two parts:

* **published**: `<root>/<key>/`, built once per user and per set of library versions by
  `ensure_published_cache()`: a child process runs the pipeline's JIT code (`warm_jit_code`) with
  numba writing into a staging folder, and the folder is renamed into place under a file lock.
  It is never written after that.
* **per process**: at import of `callintel_dagster.engines` (before numba is imported),
  `configure_process_cache()` gives the process its own folder under `<root>/<key>.proc/`, seeded
  with hard links to the published files. numba reads the warm entries and, if it ever compiles
  something the warm-up did not cover, replaces the link with its own file (numba writes a new file
  and renames it over the old name), so the published copy stays intact. Folders of processes that
  have died (Spark's forked workers exit without running `atexit`) are removed by the next process.

`<root>` is `$CALLINTEL_JIT_CACHE_DIR`, else `$XDG_CACHE_HOME/callintel/numba`, else
`~/.cache/callintel/numba`; `<key>` names the Python, numba, llvmlite, numpy, librosa and Resemblyzer
versions and the CPU architecture, so an upgrade builds a new cache instead of reading a stale one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT_ENV = "CALLINTEL_JIT_CACHE_DIR"
# Set only in the child that builds the published cache: numba writes straight into this folder.
_BUILD_ENV = "CALLINTEL_JIT_CACHE_BUILD"
_COMPLETE = "COMPLETE"
_KEY_PACKAGES = ("numba", "llvmlite", "numpy", "librosa", "Resemblyzer")


def cache_root() -> Path:
    configured = os.environ.get(ROOT_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "callintel" / "numba"


def cache_key() -> str:
    """Versions that change compiled code or its source: a new set builds a new cache."""
    parts = [f"py{sys.version_info.major}{sys.version_info.minor}", platform.machine()]
    for package in _KEY_PACKAGES:
        try:
            parts.append(f"{package.lower()}{importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package.lower()}-none")
    return "-".join(parts)


def published_dir() -> Path:
    return cache_root() / cache_key()


def is_published(path: Path | None = None) -> bool:
    return ((path or published_dir()) / _COMPLETE).is_file()


def configure_process_cache() -> Path:
    """Point numba (`NUMBA_CACHE_DIR`) at this process's own folder, seeded from the published cache
    when there is one. Must run before numba is imported; returns the folder."""
    build = os.environ.get(_BUILD_ENV)
    if build:
        os.environ["NUMBA_CACHE_DIR"] = build
        return Path(build)
    published = published_dir()
    proc_root = published.with_name(published.name + ".proc")
    try:
        proc_root.mkdir(parents=True, exist_ok=True)
        _remove_dead_process_dirs(proc_root)
        private = proc_root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if is_published(published):
            _link_tree(published, private)
        else:
            private.mkdir()
    except OSError:
        # No writable cache root (read-only home): a private temporary folder, compiled cold.
        private = Path(tempfile.mkdtemp(prefix="callintel-numba-"))
    os.environ["NUMBA_CACHE_DIR"] = str(private)
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return private


def _link_tree(source: Path, target: Path) -> None:
    """Hard links (same file system: `target` is a sibling of `source`), copies where links fail."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def _remove_dead_process_dirs(proc_root: Path) -> None:
    for folder in proc_root.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_published_cache(timeout_s: float = 600.0) -> Path:
    """Build the published cache if it is missing (once per user and library versions; a concurrent
    caller waits on the lock and then finds it built). Returns its folder."""
    published = published_dir()
    if is_published(published):
        return published
    published.parent.mkdir(parents=True, exist_ok=True)
    with open(published.with_name(published.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_published(published):
            return published
        # Holding the lock, no other builder runs: staging folders here were left by killed ones.
        for leftover in published.parent.glob(f"{published.name}.staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = published.with_name(f"{published.name}.staging-{os.getpid()}")
        staging.mkdir()
        try:
            build = subprocess.run(
                [sys.executable, "-c", "from callintel_dagster.engines.jit_cache import warm_jit_code; warm_jit_code()"],
                env={**os.environ, _BUILD_ENV: str(staging)}, timeout=timeout_s, capture_output=True, text=True,
            )
            if build.returncode != 0:
                raise RuntimeError(f"building the numba cache failed ({build.returncode}): {build.stderr[-2000:]}")
            (staging / _COMPLETE).write_text(cache_key() + "\n")
            os.rename(staging, published)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return published


def warm_jit_code() -> None:
    """Run every numba-compiled function the pipeline calls, on the dtypes it calls them with
    (float32 16 kHz audio): the embedded tone features and Resemblyzer's mel spectrogram."""
    import numpy as np

    from callintel_dagster.engines.audio import SAMPLE_RATE
    from callintel_dagster.engines.tone_features import tone_features

    rng = np.random.default_rng(0)
    seconds = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    clip = (0.3 * np.sin(2 * np.pi * 180.0 * seconds) + 0.01 * rng.standard_normal(seconds.size)).astype(np.float32)
    tone_features([clip])
    with contextlib.suppress(ImportError):
        from resemblyzer.audio import wav_to_mel_spectrogram

        wav_to_mel_spectrogram(clip)
