"""A local server that speaks enough of OpenAI's chat completions API for the official SDK.

Every answer reports 120 prompt tokens (80 of them cached) and 50 completion tokens (20 of them
reasoning), so tests can check each token bucket. Model ``error-429`` answers a rate-limit error.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RESPONSE_MODEL = "gpt-4o-2024-08-06"
RESPONSE_ID = "chatcmpl-abc123"
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 50,
    "total_tokens": 170,
    "prompt_tokens_details": {"cached_tokens": 80, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 0},
}


async def chat_completions(request: Request) -> JSONResponse:
    body = await request.json()
    if body.get("model") == "error-429":
        return JSONResponse(
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            status_code=429,
            headers={"retry-after": "0"},
        )
    return JSONResponse(
        {
            "id": RESPONSE_ID,
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": RESPONSE_MODEL,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


def start_fake_openai() -> tuple[str, Callable[[], None]]:
    """Serve on 127.0.0.1:<free port> in a thread; returns the base URL (``…/v1``) and a stop function."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)

    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", stop
