"""A real loopback HTTP server speaking the OpenAI chat-completions API, with fault injection.

Tests drive the production code path end to end — the real ``openai`` SDK, real sockets, real
timeouts — against a deterministic "model": by default it answers with the hand-written fixture of
the call in the prompt's data block (:mod:`llm_fixtures`), never with the rules engine's output, so
the LLM path is tested against answers the code under test did not produce.

Faults are scripted per request. A queue can be bound to a *key* (any substring of the request, such
as a phrase from one call's transcript); requests containing the key take faults from that queue,
others from the global queue, and a request with nothing queued gets the default answer. Keyed queues
keep concurrent batch tests deterministic: a call's faults do not depend on thread scheduling.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

from callintel_dagster_tests.llm_fixtures import answer_for

FaultKind = Literal["valid", "answer", "malformed_json", "missing_fields", "wrong_types",
                    "http_429", "http_500", "slow", "context_length", "content_filter", "content_filter_error"]
CREATED = 1_700_000_000  # fixed, so responses are byte-identical across runs


@dataclasses.dataclass(frozen=True)
class Fault:
    """One scripted response. ``answer`` sends ``payload`` (a dict is JSON-encoded, a callable gets
    the default answer dict and returns the one to send); ``slow`` sleeps ``delay_s`` first and then
    sends the default answer. ``context_length`` is OpenAI's HTTP 400 ``context_length_exceeded``
    and, like vLLM's, quotes the start of the prompt back; ``content_filter`` is a 200 whose choice
    ends with ``finish_reason: content_filter`` (OpenAI), ``content_filter_error`` Azure OpenAI's 400
    with error code ``content_filter``."""

    kind: FaultKind
    payload: dict | str | Callable[[dict], dict] | None = None
    delay_s: float = 0.0


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as server: OpenAI(base_url=server.base_url, ...)``."""

    def __init__(self, model: str = "fake-llama-3-70b", supports_json_schema: bool = True):
        self.model = model
        self.supports_json_schema = supports_json_schema
        self.requests: list[dict] = []
        self._queues: dict[str | None, collections.deque[Fault]] = {None: collections.deque()}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def enqueue(self, *faults: Fault | FaultKind, key: str | None = None) -> None:
        """Script the next responses (for requests containing ``key``, or any request)."""
        with self._lock:
            queue = self._queues.setdefault(key, collections.deque())
            queue.extend(f if isinstance(f, Fault) else Fault(f) for f in faults)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()  # wakes handlers sleeping in a "slow" fault
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    # --- request handling ---

    def _next_fault(self, body_text: str) -> Fault:
        with self._lock:
            for key, queue in self._queues.items():
                if key is not None and queue and key in body_text:
                    return queue.popleft()
            return self._queues[None].popleft() if self._queues[None] else Fault("valid")

    def _respond(self, body: dict) -> tuple[int, dict, dict]:
        """(HTTP status, JSON body, extra headers) for one chat-completions request."""
        body_text = json.dumps(body, ensure_ascii=False)
        with self._lock:
            self.requests.append({"body": body})
        if body.get("response_format", {}).get("type") == "json_schema" and not self.supports_json_schema:
            return 400, _error("response_format json_schema is not supported", "invalid_request_error"), {}
        fault = self._next_fault(body_text)
        if fault.kind == "http_429":
            return 429, _error("rate limited", "rate_limit_exceeded"), {"Retry-After": "0"}
        if fault.kind == "http_500":
            return 500, _error("internal error", "server_error"), {}
        if fault.kind == "slow" and self._stopping.wait(fault.delay_s):
            return 503, _error("shutting down", "server_error"), {}
        if fault.kind == "context_length":
            prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
            return 400, _error(
                "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                f"9120 tokens. Prompt starts: {prompt}", "context_length_exceeded"), {}
        if fault.kind == "content_filter_error":
            return 400, _error("The response was filtered due to the prompt triggering content management policy.",
                               "content_filter"), {}
        content = "" if fault.kind == "content_filter" else self._content(fault, body)
        finish_reason = "content_filter" if fault.kind == "content_filter" else "stop"
        return 200, {
            "id": f"chatcmpl-{len(body_text)}", "object": "chat.completion", "created": CREATED,
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(body_text) // 4, "completion_tokens": len(content) // 4,
                      "total_tokens": (len(body_text) + len(content)) // 4},
        }, {}

    def _content(self, fault: Fault, body: dict) -> str:
        answer = self.default_answer(body)
        if fault.kind == "malformed_json":
            return json.dumps(answer)[:-20]
        if fault.kind == "missing_fields":
            return json.dumps({k: v for k, v in answer.items() if k not in ("summary", "hipaa_risk")})
        if fault.kind == "wrong_types":
            return json.dumps({**answer, "issue_resolved": "maybe", "billing_topics": "copay"})
        if fault.kind == "answer":
            payload = fault.payload(answer) if callable(fault.payload) else fault.payload
            return payload if isinstance(payload, str) else json.dumps(payload)
        return json.dumps(answer)

    @staticmethod
    def default_answer(body: dict) -> dict:
        """The fixture answer for the transcript in the (first) user message."""
        return answer_for(next(m["content"] for m in body["messages"] if m["role"] == "user"))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._send(404, _error(f"no route {self.path}", "not_found"), {})
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    return self._send(400, _error("request body is not JSON", "invalid_request_error"), {})
                self._send(*server._respond(body))

            def _send(self, status: int, payload: dict, headers: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: exactly what a "slow" fault provokes

            def log_message(self, *args) -> None:
                pass  # keep pytest output clean

        return Handler


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}
