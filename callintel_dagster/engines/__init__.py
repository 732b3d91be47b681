"""Pure engines: plain Python/numpy/torch, no Dagster import; they run in Dagster steps, Spark
tasks and tests alike."""

import sys

if "numba" not in sys.modules:
    # librosa's numba code took a fresh process ~20 s to compile (2 cores); each process reads the published,
    # warm cache through its own folder, never writing a folder another process reads
    # (engines/jit_cache.py explains the corruption that concurrent writers caused).
    from callintel_dagster.engines.jit_cache import configure_process_cache

    configure_process_cache()
