"""Per-call tasks as plain JSON, for shipping to a cluster (pure Python; no Dagster).

A task staged for a Databricks job used to be pickled: whoever could write the staging location
could then run code on the cluster when it un-pickled the file, and any secret field of the task
travelled with it. A spec is data only: `{"kind": ..., "fields": {...}}`, where `kind` picks one of
the registered task classes and `fields` may hold exactly that class's dataclass fields (nested
config dataclasses included), each a JSON scalar. Unknown kinds, unknown or missing fields and
field names that look like credentials are refused on both sides, so a spec can neither carry a
secret nor name code to run. Secrets live in the worker's environment (on Databricks, variables
set from `{{secrets/scope/key}}` references in the cluster spec) and the engines read them there.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from callintel_dagster.engines.characteristics import CharacteristicsTask
from callintel_dagster.engines.tone import ToneTask
from callintel_dagster.engines.transcripts import TranscriptTask

TASK_KINDS: dict[str, type] = {
    "transcripts": TranscriptTask,
    "tone": ToneTask,
    "characteristics": CharacteristicsTask,
}
# hf_token, access_token, client_secret, password, api_key …; not max_tokens.
_SECRET_NAME = re.compile(r"(?:^|_)token$|secret|passw(?:or)?d|api_?key|credential", re.IGNORECASE)
_SCALARS = (str, int, float, bool, type(None))


class TaskSpecError(ValueError):
    """A task spec that is not one of the registered kinds with exactly its fields."""


def task_to_spec(task: Any) -> dict[str, Any]:
    """The JSON-able spec of a registered task instance."""
    kinds = {cls: kind for kind, cls in TASK_KINDS.items()}
    kind = kinds.get(type(task))
    if kind is None:
        raise TaskSpecError(f"{type(task).__name__} is not a registered task kind ({', '.join(sorted(TASK_KINDS))})")
    return {"kind": kind, "fields": _encode(task, kind)}


def task_from_spec(spec: dict[str, Any]) -> Any:
    """Rebuild a task from `task_to_spec`'s output, refusing anything outside the allow-list."""
    if not isinstance(spec, dict) or set(spec) != {"kind", "fields"}:
        raise TaskSpecError("a task spec is an object with exactly the keys 'kind' and 'fields'")
    cls = TASK_KINDS.get(spec["kind"])
    if cls is None:
        raise TaskSpecError(f"unknown task kind {spec['kind']!r}; known: {', '.join(sorted(TASK_KINDS))}")
    return _decode(cls, spec["fields"], spec["kind"])


def _allowed_fields(cls: type, where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    secret = sorted(name for name in fields if _SECRET_NAME.search(name))
    if secret:
        raise TaskSpecError(f"{where}: fields {secret} look like credentials; read them from the worker's environment")
    return fields


def _encode(obj: Any, where: str) -> dict[str, Any]:
    fields = _allowed_fields(type(obj), where)
    encoded = {}
    for name in fields:
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            encoded[name] = _encode(value, f"{where}.{name}")
        elif isinstance(value, _SCALARS):
            encoded[name] = value
        else:
            raise TaskSpecError(f"{where}.{name}: {type(value).__name__} is not a JSON scalar")
    return encoded


def _decode(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise TaskSpecError(f"{where}: expected an object of fields, got {type(values).__name__}")
    fields = _allowed_fields(cls, where)
    unknown, missing = sorted(set(values) - set(fields)), sorted(set(fields) - set(values))
    if unknown or missing:
        raise TaskSpecError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    kwargs = {}
    for name, hint in fields.items():
        value = values[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _decode(hint, value, f"{where}.{name}")
        elif isinstance(value, _SCALARS):
            kwargs[name] = value
        else:
            raise TaskSpecError(f"{where}.{name}: {type(value).__name__} is not a JSON scalar")
    return cls(**kwargs)
