"""A replay executor that sends replayed LLM calls to Anthropic's Messages API through the official SDK."""

from __future__ import annotations

import inspect
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import Field, SecretStr

from lumina_core import (
    ComponentConfig,
    ComponentContext,
    ComponentFactory,
    ReplayAnswer,
    ReplayCall,
    ReplayRetryable,
    hookimpl,
)

__all__ = ["AnthropicExecutor", "AnthropicExecutorConfig", "AnthropicRefused", "to_messages", "to_tools"]

# Statuses trying again may help with, as the SDK's own retry policy has them (5xx includes 529 overloaded).
RETRYABLE_STATUSES = {408, 409, 429}


class AnthropicExecutorConfig(ComponentConfig):
    api_key: SecretStr = Field(description="secret: write it as ${env:ANTHROPIC_API_KEY}")
    base_url: str = Field("https://api.anthropic.com", description="the Messages API's base URL (no /v1)")
    providers: list[str] = Field(default_factory=lambda: ["anthropic"], description="providers whose calls it runs")
    default_max_tokens: int = Field(
        1024, gt=0, description="max_tokens when the captured call has none (Anthropic requires one)"
    )


class AnthropicRefused(RuntimeError):
    """Anthropic refused the call for good (a bad request, a bad key, an unknown model): ``status`` is the
    HTTP status, ``error_type`` Anthropic's error type (``invalid_request_error`` …)."""

    def __init__(self, message: str, status: int, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


# ------------------------------------------------------------------------------------------------
# ReplayCall -> Messages API request
# ------------------------------------------------------------------------------------------------

ANTHROPIC_BLOCKS = {
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "search_result",
}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _image(url: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` as an Anthropic image block: a data URL inline, any other URL by reference."""
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[len("data:") :].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """A captured message's content as Anthropic content blocks; empty texts are dropped (Anthropic refuses
    them). Anthropic's own blocks pass as they are; OpenAI's parts are converted; anything else is text."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return [{"type": "text", "text": _text(content)}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            blocks += _blocks(part)
        elif not isinstance(part, dict):
            blocks += _blocks(_text(part))
        elif part.get("type") == "text" or (part.get("type") is None and isinstance(part.get("text"), str)):
            blocks += _blocks(part.get("text"))
        elif part.get("type") in ANTHROPIC_BLOCKS:
            blocks.append(part)
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks += [_image(url)] if isinstance(url, str) else _blocks(_text(part))
        elif isinstance(part.get("content"), str):  # OTel-style {"type": …, "content": "…"} parts
            blocks += _blocks(part["content"])
        else:
            blocks += _blocks(_text(part))
    return blocks


def _tool_uses(calls: Any) -> list[dict[str, Any]]:
    """OpenAI-style ``tool_calls`` (``{"id", "function": {"name", "arguments"}}``, or flat, as OTel has them)
    as ``tool_use`` blocks."""
    blocks: list[dict[str, Any]] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        nested = call.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else call
        name, arguments = function.get("name"), function.get("arguments", function.get("input"))
        if not name:
            continue
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                arguments = {"arguments": arguments}
        if not isinstance(arguments, dict):
            arguments = {} if arguments is None else {"arguments": arguments}
        call_id = str(call.get("id") or call.get("tool_call_id") or f"toolu_replay_{len(blocks)}")
        blocks.append({"type": "tool_use", "id": call_id, "name": str(name), "input": arguments})
    return blocks


def _as_text(block: dict[str, Any]) -> dict[str, Any]:
    """A ``tool_use`` or ``tool_result`` block whose partner is missing, as text (Anthropic refuses the
    request otherwise)."""
    if block["type"] == "tool_use":
        return {"type": "text", "text": f"[tool call {block.get('name')}: {_text(block.get('input'))}]"}
    content = block.get("content")
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in _blocks(content))
    return {"type": "text", "text": f"[tool result: {text}]"}


def to_messages(messages: list[dict[str, Any]], system_prompt: str | None) -> tuple[str | None, list[dict[str, Any]]]:
    """The system prompt and the messages of a Messages API request for a captured conversation.

    ``system`` (and ``developer``) messages join the system prompt; ``user`` and ``assistant`` keep their
    role; ``tool`` messages become ``tool_result`` blocks of a user turn (text, when they name no tool call);
    an assistant's ``tool_calls`` become ``tool_use`` blocks; any other role is a user turn. Consecutive
    turns of one role are merged, empty ones dropped, and a tool call and its result that lack their
    partner become text.
    """
    system = [system_prompt] if system_prompt else []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        if not isinstance(message, dict):
            message = {"role": "user", "content": message}
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = "".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")
            system += [text] if text else []
            continue
        if role == "assistant":
            blocks = _blocks(content) + _tool_uses(message.get("tool_calls"))
        elif role in ("tool", "function", "ipython"):
            tool_call_id = message.get("tool_call_id") or message.get("id")
            result = _blocks(content)
            if tool_call_id and role == "tool":
                result_content: Any = [b for b in result if b["type"] in ("text", "image")] or _text(content)
                blocks = [{"type": "tool_result", "tool_use_id": str(tool_call_id), "content": result_content}]
            else:
                blocks = [_as_text({"type": "tool_result", "content": result})] if result else []
            role = "user"
        else:
            blocks, role = _blocks(content), "user"
        if not blocks:
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    # A tool_use must be answered by a tool_result in the next turn, and a tool_result must answer one.
    for i, (role, blocks) in enumerate(turns):
        if role == "assistant":
            answered = {b.get("tool_use_id") for b in turns[i + 1][1]} if i + 1 < len(turns) else set()
            turns[i] = (
                role,
                [_as_text(b) if b["type"] == "tool_use" and b["id"] not in answered else b for b in blocks],
            )
        else:
            asked = {b.get("id") for b in turns[i - 1][1] if b["type"] == "tool_use"} if i > 0 else set()
            turns[i] = (
                role,
                [_as_text(b) if b["type"] == "tool_result" and b["tool_use_id"] not in asked else b for b in blocks],
            )
    out = []
    for role, blocks in turns:
        if all(b["type"] == "text" for b in blocks) and len(blocks) == 1:
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            # tool results come first in a user turn, as Anthropic requires
            ordered = sorted(blocks, key=lambda b: b["type"] != "tool_result") if role == "user" else blocks
            out.append({"role": role, "content": ordered})
    return ("\n\n".join(system) or None), out


def to_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool definitions for Anthropic: OpenAI's ``{"type": "function", "function": {…}}`` are converted;
    Anthropic's own (``input_schema``, or a server tool's ``type``) pass as they are."""
    converted = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool.get("function"), dict) else None
        if function is None and "parameters" in tool and "input_schema" not in tool:
            function = tool  # a flat {"name", "description", "parameters"} definition
        if function is None:
            converted.append(tool)
            continue
        definition = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            definition["description"] = function["description"]
        converted.append(definition)
    return converted


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------


def _retry_after(response: Any) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``retry-after`` header (seconds or an HTTP date), if any."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def _error_detail(exc: Any) -> tuple[str | None, str]:
    """Anthropic's error type and message from an error response's body (``{"type": "error", "error": {…}}``)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return error.get("type"), str(error["message"])
    response = getattr(exc, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    return None, (text or "").strip()[:300] or type(exc).__name__


class AnthropicExecutor:
    """Runs replayed calls with ``messages.create``, one attempt each (``max_retries=0``): the replay engine
    paces requests and retries the ones that raised :class:`ReplayRetryable`."""

    def __init__(self, config: AnthropicExecutorConfig) -> None:
        import anthropic  # imported when configured: Lumina starts without paying for it

        self.anthropic = anthropic
        self.config = config
        self.providers = tuple(config.providers)
        self._secret = config.api_key.get_secret_value()
        self.client = anthropic.AsyncAnthropic(
            api_key=self._secret, base_url=config.base_url, max_retries=0, timeout=60.0
        )
        # SDK versions differ in which request parameters are keyword arguments (newer ones dropped
        # ``temperature`` and ``top_p``); the others go in the request body as they are.
        self._create_params = set(inspect.signature(self.client.messages.create).parameters)

    def __repr__(self) -> str:
        return f"AnthropicExecutor(base_url={self.config.base_url!r}, providers={self.providers!r})"

    def request(self, call: ReplayCall) -> dict[str, Any]:
        """The ``messages.create`` keyword arguments for ``call`` (``extra_body`` holds what the installed
        SDK has no argument for)."""
        system, messages = to_messages(call.messages, call.system_prompt)
        params: dict[str, Any] = {
            "model": call.model,
            "messages": messages,
            "max_tokens": call.max_tokens if call.max_tokens is not None else self.config.default_max_tokens,
        }
        optional: dict[str, Any] = {"system": system, "temperature": call.temperature, "top_p": call.top_p}
        optional["tools"] = to_tools(call.tools) if call.tools else None
        params.update({name: value for name, value in optional.items() if value is not None})
        params.update({name: value for name, value in call.extra.items() if name != "stream"})
        kwargs: dict[str, Any] = {}
        extra_body: dict[str, Any] = {}
        for name, value in params.items():
            if name in self._create_params and name not in ("extra_body", "extra_headers", "extra_query", "timeout"):
                kwargs[name] = value
            else:
                extra_body[name] = value
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    async def execute(self, call: ReplayCall, timeout: float) -> ReplayAnswer:
        anthropic = self.anthropic
        try:
            response = await self.client.messages.create(**self.request(call), timeout=timeout)
        except anthropic.APIConnectionError as exc:  # timeouts too (APITimeoutError is one)
            what = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "could not connect"
            raise ReplayRetryable(f"anthropic: {what} ({type(exc).__name__})") from None
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            error_type, message = _error_detail(exc)
            reason = self._scrub(f"{status} {error_type or 'error'}: {message}")
            if status in RETRYABLE_STATUSES or status >= 500:
                raise ReplayRetryable(f"anthropic: {reason}", _retry_after(exc.response)) from None
            raise AnthropicRefused(f"anthropic refused the call ({reason})", status, error_type) from None
        except anthropic.APIError as exc:  # an answer the SDK could not read
            raise AnthropicRefused(self._scrub(f"anthropic: {type(exc).__name__}: {exc}"), 200) from None
        usage = response.usage
        details = getattr(usage, "output_tokens_details", None)
        return ReplayAnswer(
            output_text="".join(block.text for block in response.content if getattr(block, "type", "") == "text"),
            model=response.model,
            input_tokens=usage.input_tokens,
            cache_read_tokens=getattr(usage, "cache_read_input_tokens", None),
            cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None),
            output_tokens=usage.output_tokens,
            reasoning_tokens=getattr(details, "thinking_tokens", None),
            input_includes_cache=False,
            finish_reason=response.stop_reason,
            response_id=response.id,
        )


def _create(ctx: ComponentContext, config: AnthropicExecutorConfig) -> AnthropicExecutor:
    return AnthropicExecutor(config)


@hookimpl
def lumina_register_replay_executors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="anthropic",
            create=_create,
            config_model=AnthropicExecutorConfig,
            description="Anthropic's Messages API (official SDK): replays calls to Claude models.",
            stability="beta",
        )
    ]
