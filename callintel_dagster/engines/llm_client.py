"""A thin, retrying JSON-completion client over the ``openai`` SDK (pure Python; no Dagster).

Any OpenAI-compatible chat-completions endpoint works: OpenAI, Databricks Model Serving, vLLM,
llama.cpp, Ollama. Retries are done here rather than by the SDK (which gets ``max_retries=0``) so the
backoff is configurable — production waits seconds, tests wait milliseconds — and so "the endpoint is
down" surfaces as one exception type the compliance loop can turn into an ``unavailable`` outcome.

Two kinds of failure, because they call for different handling:

- :class:`LLMUnavailableError`: the endpoint cannot be used right now (connection refused, timeouts,
  429/5xx after every retry, or it refuses us outright: 401/403/404). Nothing about the call is at
  fault; the Dagster step fails and retries later.
- :class:`LLMRequestError`: the endpoint works but cannot answer *this* request: the transcript
  overflows the context (HTTP 400 ``context_length_exceeded``), a content filter stopped it (an
  error code or ``finish_reason: content_filter``), or another 400/413/422 about the request. Retrying
  the same request cannot help; callers record it as that call's malformed outcome.

Every error message is built from the HTTP status, the error code and at most ``ERROR_CHARS`` of
the server's message, with PHI patterns redacted: servers echo parts of the prompt back, and these
messages reach the event log and the quarantine table.

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

from .redaction import redact_text

ResponseFormatMode = Literal["auto", "json_schema", "json_object"]
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# How servers word "I don't do structured output" (OpenAI, vLLM, Databricks, llama.cpp); any other 400
# (context too long, bad key) must not silently downgrade the client.
_FORMAT_REJECTED = re.compile(r"response_format|json_schema|schema|guided", re.I)
# Statuses that are about this request (too long, filtered, malformed), not about the endpoint.
_PER_REQUEST_STATUS = frozenset({400, 413, 422})
ERROR_CHARS = 300

T = TypeVar("T")
R = TypeVar("R")


class LLMUnavailableError(RuntimeError):
    """The endpoint failed with transient errors on every try, or refuses this client outright."""


class LLMRequestError(RuntimeError):
    """The endpoint is up but cannot answer this request (context overflow, content filter, a 400)."""


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
                 response_format: ResponseFormatMode = "auto", seed: int | None = None,
                 max_tokens: int | None = None):
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Sent only when set: not every OpenAI-compatible server accepts ``seed``. ``max_tokens`` caps
        # the answer, so a model that rambles cannot hold a worker (and the bill) without bound.
        self._extra = {} if seed is None else {"seed": seed}
        if max_tokens is not None:
            self._extra["max_tokens"] = max_tokens
        self._format = "json_schema" if response_format == "auto" else response_format
        self._may_fall_back = response_format == "auto"
        self._sdk = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @property
    def response_format(self) -> str:
        """The format currently sent: ``json_schema`` until a server rejects it, then ``json_object``."""
        return self._format

    def complete_json(self, messages: Sequence[dict], schema_name: str, schema: dict) -> LLMReply:
        """One chat completion whose answer should be a JSON object; returns its raw text.

        Raises :class:`LLMUnavailableError` once retries are exhausted or when the endpoint refuses
        the client, and :class:`LLMRequestError` when it refuses or filters this request.
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
                raise LLMRequestError(f"request refused: {describe_error(error)}") from error
            except (openai.APIConnectionError, openai.APIStatusError) as error:
                status = getattr(error, "status_code", None)  # None for timeouts/connection errors
                if status in _PER_REQUEST_STATUS:
                    raise LLMRequestError(f"request refused: {describe_error(error)}") from error
                transient = status is None or status in _TRANSIENT_STATUS
                if not transient or http_attempts > self.max_retries:
                    raise LLMUnavailableError(
                        f"giving up after {http_attempts} HTTP attempt(s): {describe_error(error)}") from error
                time.sleep(self._delay(http_attempts, error))
                continue
            choice = completion.choices[0] if completion.choices else None
            if choice is not None and choice.finish_reason == "content_filter":
                raise LLMRequestError("answer withheld by the endpoint's content filter (finish_reason=content_filter)")
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


def describe_error(error: Exception) -> str:
    """``HTTP <status> <code>: <message>`` with the message cut to ``ERROR_CHARS`` and PHI redacted."""
    status = getattr(error, "status_code", None)
    body = getattr(error, "body", None)
    detail = body.get("error", body) if isinstance(body, dict) else None
    code = detail.get("code") if isinstance(detail, dict) else None
    message = detail.get("message") if isinstance(detail, dict) and detail.get("message") else str(error)
    head = " ".join(part for part in (f"HTTP {status}" if status else type(error).__name__, code) if part)
    return scrub(f"{head}: {message}")


def scrub(text: str) -> str:
    """Error text safe for logs: PHI patterns replaced by placeholders, at most ``ERROR_CHARS``."""
    text = redact_text(text)[0]
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " …"


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
