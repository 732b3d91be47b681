"""Loaded by every Python process of the loopback Databricks cluster (`fake_databricks_server.py`):
the driver running the `spark_python_task` and the Spark Python workers it forks.

It gives them the two things a Databricks cluster has and this machine lacks:
- the workspace's FUSE mounts: `/Volumes/...` and `/dbfs/...` are served from the fake workspace's
  storage folder, at the level of Python's file API (what dagster-pipes' volume/DBFS loaders and
  writers and the entrypoint use), so the process reads the context the orchestrator uploaded
  through the Files/DBFS REST API and its messages are read back through that API;
- only the libraries the job spec installs: importing a module of a distribution the cluster would
  not have (Dagster, deltalake, ... outside the `engines` extra) fails as it would there.
Nothing happens unless the cluster set the variables below, so the orchestrator's processes are
never affected even though they share the interpreter.
"""

import builtins
import io
import os

_ROOT = os.environ.get("CALLINTEL_FAKE_CLUSTER_MOUNT_ROOT")
_MISSING = frozenset(filter(None, os.environ.get("CALLINTEL_FAKE_CLUSTER_MISSING_MODULES", "").split(",")))
_MOUNTS = ("/Volumes/", "/dbfs/")


def _on_disk(path):
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if isinstance(text, str) and (text.startswith(_MOUNTS) or text in ("/Volumes", "/dbfs")):
        return _ROOT + text
    return path


def _mapped(function):
    def call(path=".", *args, **kwargs):
        return function(_on_disk(path), *args, **kwargs)

    return call


class _Without:
    """An import finder that does not see the missing modules: `import x` fails and
    `importlib.util.find_spec("x")` is None, as where `x` is not installed (libraries probe that)."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _MISSING:
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attribute):  # find_distributions (importlib.metadata), invalidate_caches, ...
        return getattr(self._finder, attribute)


if _ROOT:
    builtins.open = io.open = _mapped(io.open)
    for _name in ("open", "stat", "lstat", "mkdir", "listdir", "scandir", "remove", "unlink", "rmdir"):
        setattr(os, _name, _mapped(getattr(os, _name)))
if _MISSING:
    import sys

    sys.meta_path[:] = [_Without(finder) for finder in sys.meta_path]
