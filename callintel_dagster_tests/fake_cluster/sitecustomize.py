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
import importlib.abc
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


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed on this cluster)", name=name)
        return None


if _ROOT:
    builtins.open = io.open = _mapped(io.open)
    for _name in ("open", "stat", "lstat", "mkdir", "listdir", "scandir", "remove", "unlink", "rmdir"):
        setattr(os, _name, _mapped(getattr(os, _name)))
if _MISSING:
    import sys

    sys.meta_path.insert(0, _NotInstalled())
