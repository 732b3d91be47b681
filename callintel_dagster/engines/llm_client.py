"""A thin, retrying JSON-completion client over the ``openai`` SDK (pure Python; no Dagster).

Any OpenAI-compatible chat-completions endpoint works: OpenAI, Databricks Model Serving, vLLM,
llama.cpp, Ollama. Retries are done here rather than by the SDK (which gets ``max_retries=0``) so the
backoff is configurable — production waits seconds, tests wait milliseconds — and so "the endpoint is
down" surfaces as one exception type the compliance loop can turn into an ``unavailable`` outcome.

``response_format`` prefers strict ``json_schema`` (the server then enforces our schema); servers
that reject it with HTTP 400/422 get ``json_object`` instead, remembered for the client's lifetime.
The schema is in the system prompt too, so JSON mode loses nothing but server-side enforcement —
and our own validation runs on every answer either way.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import openai

ResponseFormatMode = Literal["auto", "json_schema", "json_object"]
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# How servers word "I don't do structured output" (OpenAI, vLLM, Databricks, llama.cpp); any other 400
# (context too long, bad key) must not silently downgrade the client.
_FORMAT_REJECTED = re.compile(r"response_format|json_schema|schema|guided", re.I)

T = TypeVar("T")
R = TypeVar("R")


class LLMUnavailableError(RuntimeError):
    """The endpoint failed with transient errors on every try, or refused the request outright."""


@dataclasses.dataclass(frozen=True)
class LLMReply:
    content: str
    model: str


class LLMClient:
    """Chat-completions at temperature 0 with bounded, exponential-backoff retries.

    ``max_retries`` counts retries after the first try of one request; a try that exceeds
    ``timeout_s`` counts like a 5xx, since a stalled server is the same transient failure.
    """

    def __init__(self, base_url: str, api_key: str, model: str, *, timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 response_format: ResponseFormatMode = "auto", seed: int | None = None):
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Sent only when set: not every OpenAI-compatible server accepts ``seed``.
        self._extra = {} if seed is None else {"seed": seed}
        self._format = "json_schema" if response_format == "auto" else response_format
        self._may_fall_back = response_format == "auto"
        self._sdk = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @property
    def response_format(self) -> str:
        """The format currently sent: ``json_schema`` until a server rejects it, then ``json_object``."""
        return self._format

    def complete_json(self, messages: Sequence[dict], schema_name: str, schema: dict) -> LLMReply:
        """One chat completion whose answer should be a JSON object; returns its raw text.

        Raises :class:`LLMUnavailableError` once retries are exhausted or on a non-transient error.
        """
        http_attempts = 0
        while True:
            http_attempts += 1
            fmt = self._format
            try:
                completion = self._sdk.chat.completions.create(
                    model=self.model, messages=list(messages), temperature=0,
                    response_format=_response_format(fmt, schema_name, schema), **self._extra)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
                if fmt == "json_schema" and self._may_fall_back and _FORMAT_REJECTED.search(str(error)):
                    self._format = "json_object"
                    continue
                raise LLMUnavailableError(f"request rejected: {error}") from error
            except (openai.APIConnectionError, openai.APIStatusError) as error:
                status = getattr(error, "status_code", None)  # None for timeouts/connection errors
                transient = status is None or status in _TRANSIENT_STATUS
                if not transient or http_attempts > self.max_retries:
                    raise LLMUnavailableError(
                        f"giving up after {http_attempts} HTTP attempt(s): {error}") from error
                time.sleep(self._delay(http_attempts, error))
                continue
            choice = completion.choices[0] if completion.choices else None
            content = choice.message.content if choice and choice.message else None
            return LLMReply(content=content or "", model=completion.model or self.model)

    def _delay(self, attempt: int, error: Exception) -> float:
        """Exponential backoff, or the server's ``Retry-After`` when it sends one (both capped)."""
        delay = self.backoff_s * 2 ** (attempt - 1)
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():  # seconds, not an HTTP date
            delay = float(retry_after)
        return min(delay, self.max_backoff_s)


def _response_format(fmt: str, schema_name: str, schema: dict) -> dict:
    if fmt == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
    return {"type": "json_object"}


def run_bounded(fn: Callable[[T], R], items: Iterable[T], max_workers: int) -> list[R]:
    """``[fn(item) for item in items]`` with at most ``max_workers`` running at once, order kept.

    Threads suit this work: each call waits on HTTP, and the ``openai`` client is thread-safe.
    """
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(fn, items))
