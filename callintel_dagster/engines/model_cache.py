"""Process-wide, thread-safe lazy model cache.

Spark reuses Python worker processes across tasks and Dagster may run steps in threads, so each model
is built once per process on first use (double-checked locking) and then shared. Engines call
`cached_model(key, factory)` instead of loading at import time or once per row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_models: dict[Hashable, Any] = {}
_lock = threading.Lock()


def cached_model(key: Hashable, factory: Callable[[], T]) -> T:
    """Return the model stored under `key`, building it with `factory()` on first use."""
    model = _models.get(key)
    if model is None:
        with _lock:
            model = _models.get(key)
            if model is None:
                model = factory()
                _models[key] = model
    return model


def loaded_model_keys() -> list[Hashable]:
    """Keys of the models this process has loaded (used by tests and logs)."""
    return list(_models)
