"""A fake LLM provider for tests: a real HTTP server on 127.0.0.1 that speaks enough of OpenAI's chat
completions and Anthropic's messages APIs for their official SDKs to work against it.

    with FakeLLM(latency=0.05) as llm:
        client = openai.OpenAI(api_key="sk-test", base_url=llm.openai_base_url)
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        client = anthropic.Anthropic(api_key="sk-ant-test", base_url=llm.anthropic_base_url)
        llm.fail_first = 1                  # the next request is answered 429 with Retry-After: 2
        assert llm.requests[0].body["model"] == "gpt-4o"

Answers are deterministic: the text is ``reply(api, body)`` (by default ``"[model] <last user message>"``)
and token counts come from text lengths (a quarter of the characters, rounded up). Every request is
recorded in :attr:`FakeLLM.requests`. Nothing is streamed: a request with ``"stream": true`` is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeLLM", "FakeRequest", "default_reply", "last_user_text", "text_of", "tokens"]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

Reply = Callable[[str, dict[str, Any]], str]


@dataclass
class FakeRequest:
    """One request the fake server got, recorded on arrival."""

    api: str
    """``"openai"`` (``/v1/chat/completions``), ``"anthropic"`` (``/v1/messages``) or ``"unknown"``."""
    path: str
    headers: dict[str, str]
    """Header names in lowercase."""
    body: Any
    """The parsed JSON body; ``None`` when it was not JSON."""
    at: float
    """``time.monotonic()`` when it arrived."""
    status: int | None = None
    """The status answered; ``None`` while the request is in flight."""
    response: dict[str, Any] | None = None
    """The JSON answered (an answer or an error body)."""


def text_of(content: Any) -> str:
    """The text in a message's ``content``: a string, or the text of a list of parts / content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return str(content["text"])
        if "content" in content:  # an Anthropic tool_result block
            return text_of(content["content"])
        return ""
    return str(content)


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last ``user`` message of a chat completions or messages request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return text_of(message.get("content"))
    return ""


def default_reply(api: str, body: dict[str, Any]) -> str:
    """``"[model] <last user message>"``: what a :class:`FakeLLM` answers unless told otherwise."""
    return f"[{body.get('model')}] {last_user_text(body)}"


def tokens(text: str) -> int:
    """The fake's token count of ``text``: a quarter of its characters, rounded up."""
    return math.ceil(len(text) / 4)


def _prompt_tokens(api: str, body: dict[str, Any]) -> int:
    """Tokens of the system prompt and every message, plus 4 per message (roles and separators)."""
    found = body.get("messages")
    messages: list[Any] = found if isinstance(found, list) else []
    texts = [text_of(m.get("content")) if isinstance(m, dict) else str(m) for m in messages]
    if api == "anthropic":
        texts.append(text_of(body.get("system")))
    texts.extend(json.dumps(tool, sort_keys=True) for tool in body.get("tools") or [])
    return sum(tokens(t) for t in texts) + 4 * len(messages)


def _retry_after_header(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _openai_error(status: int, model: Any, retry_after: float | None) -> dict[str, Any]:
    wait = f" Please try again in {_retry_after_header(retry_after)}s." if retry_after is not None else ""
    kinds: dict[int, tuple[str, str | None, str]] = {
        400: ("invalid_request_error", None, "Invalid request: the fake provider was told to refuse it."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: (
            "invalid_request_error",
            "unsupported_country_region_territory",
            "Country, region, or territory not supported.",
        ),
        404: (
            "invalid_request_error",
            "model_not_found",
            f"The model `{model}` does not exist or you do not have access to it.",
        ),
        429: (
            "requests",
            "rate_limit_exceeded",
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            f"Limit 3, Used 3, Requested 1.{wait}",
        ),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
        503: ("server_error", None, "The engine is currently overloaded, please try again later."),
        529: ("server_error", None, "The engine is currently overloaded, please try again later."),
    }
    default = ("server_error" if status >= 500 else "invalid_request_error", None, f"Request failed ({status}).")
    kind, code, message = kinds.get(status, default)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_error(status: int, model: Any, request_id: str) -> dict[str, Any]:
    kinds: dict[int, tuple[str, str]] = {
        400: ("invalid_request_error", "Invalid request: the fake provider was told to refuse it."),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", f"model: {model}"),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. "
            "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
        ),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }
    default = ("api_error" if status >= 500 else "invalid_request_error", f"Request failed ({status}).")
    kind, message = kinds.get(status, default)
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _cut(text: str, limit: Any, stops: Any) -> tuple[str, str | None, str | None]:
    """``text`` cut at the first stop sequence or at ``limit`` tokens: (text, why, stop sequence)."""
    if isinstance(stops, str):
        stops = [stops]
    found = [(text.find(s), s) for s in stops or [] if isinstance(s, str) and s and s in text]
    if found:
        at, stop = min(found)
        text, why, sequence = text[:at], "stop_sequence", stop
    else:
        why, sequence = None, None
    if isinstance(limit, int) and not isinstance(limit, bool) and tokens(text) > limit:
        return text[: max(limit, 0) * 4], "max_tokens", None
    return text, why, sequence


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeLLM

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a timeout, a stopped test) is not the server's problem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, headers, answer = self.server.fake._handle(self.path, self.headers, body)
        self._send(status, headers, answer)

    def do_GET(self) -> None:
        status, headers, answer = self.server.fake._handle(self.path, self.headers, None, method="GET")
        self._send(status, headers, answer)

    def _send(self, status: int, headers: dict[str, str], answer: dict[str, Any]) -> None:
        payload = json.dumps(answer).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (its timeout) before the answer


class FakeLLM:
    """A fake OpenAI + Anthropic API on 127.0.0.1 (a free port), serving requests concurrently.

    - ``POST /v1/chat/completions`` (OpenAI SDK ``base_url``: :attr:`openai_base_url`) needs an
      ``Authorization: Bearer …`` header and answers a ``chat.completion``.
    - ``POST /v1/messages`` (Anthropic SDK ``base_url``: :attr:`anthropic_base_url`) needs the key (as
      ``x-api-key``, or ``Authorization: Bearer …`` as newer SDKs send it), an ``anthropic-version`` header
      and ``max_tokens``, and answers a ``message``.

    Knobs, as constructor arguments or attributes to set at any time:

    - ``reply(api, body) -> str``: the answer's text (``api`` is ``"openai"`` or ``"anthropic"``).
    - ``latency``: seconds each request waits before it is answered.
    - ``fail_first``: the next that many requests fail (it counts down as they do); ``fail_every``: every
      n-th request fails (the n-th, 2n-th … since the start, counting those that pass authentication and
      validation). A failure is answered ``fail_status`` (429 by
      default; 500, 503 and 529 are realistic too; 400 for a refusal) with the API's own error body, or
      ``error_body`` when set, and a ``Retry-After: retry_after`` header when ``retry_after`` is not
      ``None`` and the status is 429 or 5xx.
    - ``api_key``: when set, the only key accepted (401 otherwise); by default any non-empty key is.
    - ``cache_read_tokens``, ``cache_write_tokens``, ``reasoning_tokens``: reported in usage as each API
      does (OpenAI's ``prompt_tokens`` include cached tokens; Anthropic's ``input_tokens`` exclude cache
      reads and writes; reasoning tokens are part of the output tokens).

    Authentication and validation (bad JSON, no model or messages, Anthropic without ``max_tokens``,
    ``stream: true``) come before injected failures and do not use them up.
    """

    def __init__(
        self,
        *,
        reply: Reply = default_reply,
        latency: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 429,
        retry_after: float | None = 2,
        fail_every: int = 0,
        error_body: dict[str, Any] | None = None,
        api_key: str | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        self.reply = reply
        self.latency = latency
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.fail_every = fail_every
        self.error_body = error_body
        self.api_key = api_key
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens
        self.reasoning_tokens = reasoning_tokens
        self.peak_concurrency = 0
        """The most requests that were in flight at once."""
        self._lock = threading.Lock()
        self._requests: list[FakeRequest] = []
        self._served = 0  # requests past authentication and validation: what fail_every counts
        self._in_flight = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        """Listen on 127.0.0.1 (a free port) and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections (keep-alive ones too): the URL no longer answers."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI``: ``{url}/v1``."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic``: ``{url}``."""
        return self.url

    # -- what it got ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request so far, in order of arrival (a copy: safe to read while requests arrive)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the requests so far (``fail_every`` counts on from where it was)."""
        with self._lock:
            self._requests.clear()

    def wait_for(self, count: int, timeout: float = 15) -> list[FakeRequest]:
        """The requests, once at least ``count`` have been answered."""
        deadline = time.monotonic() + timeout
        while True:
            answered = [r for r in self.requests if r.status is not None]
            if len(answered) >= count:
                return self.requests
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(answered)} of {count} requests were answered")
            time.sleep(0.01)

    # -- serving --------------------------------------------------------------------------------

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _handle(
        self, path: str, raw_headers: Any, body: Any, method: str = "POST"
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {name.lower(): value for name, value in raw_headers.items()}
        route = path.split("?", 1)[0].rstrip("/")
        api = {OPENAI_PATH: "openai", ANTHROPIC_PATH: "anthropic"}.get(route, "unknown")
        record = FakeRequest(api, path, headers, body, time.monotonic())
        with self._lock:
            self._requests.append(record)
            self._in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
        try:
            status, out_headers, answer = self._answer(api, method, path, headers, body)
            record.response = answer
            record.status = status
            return status, out_headers, answer
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(
        self, api: str, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        out = {"request-id": request_id} if api == "anthropic" else {"x-request-id": request_id}
        model = body.get("model") if isinstance(body, dict) else None

        def error(
            status: int, message: str | None = None, kind: str | None = None
        ) -> tuple[int, dict[str, str], dict[str, Any]]:
            if api == "anthropic":
                answer = _anthropic_error(status, model, request_id)
                if message:
                    answer["error"] = {"type": kind or answer["error"]["type"], "message": message}
            else:
                answer = _openai_error(status, model, self.retry_after)
                if message:
                    answer["error"].update(message=message, code=None, type=kind or answer["error"]["type"])
            return status, out, answer

        if api == "unknown":
            return error(404, f"Unknown request URL: {method} {path}.", "invalid_request_error")
        if method != "POST":
            return error(405, f"Method {method} is not allowed here; use POST.")
        refusal = self._check_auth(api, headers)
        if refusal is not None:
            return error(*refusal)
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        for required in ("model", "messages", *(["max_tokens"] if api == "anthropic" else [])):
            if required not in body:
                return error(400, f"{required}: Field required", "invalid_request_error")
        if not isinstance(body["messages"], list):
            return error(400, "messages: Input should be a valid list", "invalid_request_error")
        if body.get("stream"):
            return error(400, "stream: the fake LLM does not stream; send stream=false", "invalid_request_error")

        with self._lock:
            self._served += 1
            failing = self.fail_first > 0 or (self.fail_every > 0 and self._served % self.fail_every == 0)
            if self.fail_first > 0:
                self.fail_first -= 1
            status = self.fail_status
            retry_after = self.retry_after
            latency = self.latency
        if latency > 0:
            self._stopping.wait(latency)
        if failing:
            code, out_headers, answer = error(status)
            if self.error_body is not None:
                answer = json.loads(json.dumps(self.error_body))
            if retry_after is not None and (status == 429 or status >= 500):
                out_headers = {**out_headers, "retry-after": _retry_after_header(retry_after)}
            return code, out_headers, answer
        try:
            text = self.reply(api, body)
        except Exception as exc:  # a test's reply function failed: say so, as a server error
            return error(
                500, f"reply() raised {type(exc).__name__}: {exc}", "api_error" if api == "anthropic" else None
            )
        if api == "anthropic":
            return 200, out, self._message(body, text)
        return 200, out, self._completion(body, text)

    def _check_auth(self, api: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        if api == "anthropic":
            # the Anthropic SDK sends its key as ``x-api-key`` (an auth token, and the key in newer SDKs, as
            # ``Authorization: Bearer``): either will do
            key = headers.get("x-api-key", "") or bearer
            if not key:
                return 401, "x-api-key header is required", "authentication_error"
            if self.api_key is not None and key != self.api_key:
                return 401, "invalid x-api-key", "authentication_error"
            if not headers.get("anthropic-version"):
                return 400, "anthropic-version: header is required", "invalid_request_error"
            return None
        if not bearer:
            return (
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        if self.api_key is not None and bearer != self.api_key:
            return 401, "Incorrect API key provided.", "invalid_request_error"
        return None

    def _completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        text, why, _ = _cut(text, limit, body.get("stop"))
        prompt = _prompt_tokens("openai", body)
        completion = tokens(text) + self.reasoning_tokens
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "length" if why == "max_tokens" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": min(self.cache_read_tokens, prompt), "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": self.reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fakellm",
        }

    def _message(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        text, why, sequence = _cut(text, body.get("max_tokens"), body.get("stop_sequences"))
        prompt = _prompt_tokens("anthropic", body)
        read = min(self.cache_read_tokens, prompt)
        written = min(self.cache_write_tokens, prompt - read)
        usage: dict[str, Any] = {
            "input_tokens": prompt - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": tokens(text) + self.reasoning_tokens,
            "service_tier": "standard",
        }
        if self.reasoning_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": self.reasoning_tokens}
        return {
            "id": f"msg_01{uuid.uuid4().hex[:22]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": why or "end_turn",
            "stop_sequence": sequence,
            "usage": usage,
        }
