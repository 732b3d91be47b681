"""The persistent numba cache: built once under a lock, read by concurrent processes through their
own folders, never written after it is published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from callintel_dagster.engines import jit_cache

pytestmark = pytest.mark.slow

# A fresh process that runs the pipeline's JIT code and reports which cache files it wrote itself
# (an inode the published cache does not have), then exits normally.
_WORKER = """
import json, os, sys
from pathlib import Path
from callintel_dagster.engines import jit_cache
from callintel_dagster.engines.jit_cache import published_dir, warm_jit_code
private = Path(os.environ["NUMBA_CACHE_DIR"])
published = {p.stat().st_ino for p in published_dir().rglob("*") if p.is_file()}
warm_jit_code()
written = sorted(str(p.relative_to(private)) for p in private.rglob("*") if p.is_file() and p.stat().st_ino not in published)
print(json.dumps({"private": str(private), "written": written}))
"""


def _snapshot(folder: Path) -> dict[str, tuple[int, int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*") if p.is_file()}


def test_published_once_then_concurrent_processes_read_it_without_writing(tmp_path, monkeypatch):
    monkeypatch.setenv(jit_cache.ROOT_ENV, str(tmp_path / "cache"))
    results: list[Path] = []
    # Two builders at once: the second waits on the lock and finds the cache built (building it a
    # second time would fail: the published folder already exists).
    builders = [threading.Thread(target=lambda: results.append(jit_cache.ensure_published_cache())) for _ in range(2)]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join()
    published = jit_cache.published_dir()
    assert results == [published, published] and jit_cache.is_published(published)
    assert not list(published.parent.glob("*.staging-*"))
    before = _snapshot(published)
    assert any(name.endswith(".nbc") for name in before) and any(name.endswith(".nbi") for name in before)

    env = {**os.environ, jit_cache.ROOT_ENV: str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    reports = [json.loads(worker.communicate(timeout=300)[0].strip().splitlines()[-1]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    privates = [Path(report["private"]) for report in reports]
    assert privates[0] != privates[1] and all(p.parent == published.with_name(published.name + ".proc") for p in privates)
    # The warm-up covers what the workers run: nothing compiled, nothing written.
    assert [report["written"] for report in reports] == [[], []]
    assert _snapshot(published) == before
    assert not any(p.exists() for p in privates)  # removed at exit


def test_folders_of_dead_processes_are_removed_and_a_missing_cache_means_a_cold_private_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(jit_cache.ROOT_ENV, str(tmp_path))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    proc_root = jit_cache.published_dir().with_name(jit_cache.published_dir().name + ".proc")
    dead = proc_root / f"{finished.stdout.strip()}-deadbeef"
    alive = proc_root / f"{os.getpid()}-cafecafe"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "entry.nbi").write_bytes(b"x")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    private = jit_cache.configure_process_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(private)
    assert private.parent == proc_root and private.is_dir() and not list(private.iterdir())
    assert not dead.exists() and alive.exists()
