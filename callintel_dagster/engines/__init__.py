"""Pure engines: plain Python/numpy/torch, no Dagster import; they run in Dagster steps, Spark
tasks and tests alike."""

import atexit
import os
import shutil
import sys
import tempfile

if "numba" not in sys.modules:
    # librosa JIT-compiles with numba's on-disk cache, and two processes writing that cache at once
    # (pytest -n 2, Spark's Python workers) left a corrupt entry here that segfaulted the next reader
    # inside librosa.yin. Each process gets its own cache directory, removed at exit.
    _numba_cache = tempfile.mkdtemp(prefix="callintel-numba-")
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache
    atexit.register(shutil.rmtree, _numba_cache, ignore_errors=True)
