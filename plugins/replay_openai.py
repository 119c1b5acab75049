"""The built-in replay executor: OpenAI's chat completions, or any OpenAI-compatible server (vLLM, Ollama,
LiteLLM …) by ``base_url``, through the official ``openai`` SDK."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lumina_core import ComponentConfig, ComponentFactory, ReplayAnswer, ReplayCall, ReplayRetryable, hookimpl


class OpenAIExecutorConfig(ComponentConfig):
    api_key: str = Field(description="secret: write it as ${env:OPENAI_API_KEY}")
    base_url: str = Field("https://api.openai.com/v1", description="an OpenAI-compatible server's /v1 URL")
    providers: list[str] = Field(default_factory=lambda: ["openai"], description="providers whose calls it runs")
    organization: str | None = None


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIExecutor:
    def __init__(self, config: OpenAIExecutorConfig) -> None:
        import openai  # imported when configured: Lumina starts without paying for it

        self.openai = openai
        self.providers = tuple(config.providers)
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key, base_url=config.base_url, organization=config.organization, max_retries=0
        )

    async def execute(self, call: ReplayCall, timeout: float) -> ReplayAnswer:
        openai = self.openai
        system = [{"role": "system", "content": call.system_prompt}] if call.system_prompt else []
        params: dict[str, Any] = {
            name: value
            for name, value in (
                ("temperature", call.temperature),
                ("max_tokens", call.max_tokens),
                ("top_p", call.top_p),
            )
            if value is not None
        }
        if call.tools:
            params["tools"] = call.tools
        try:
            response = await self.client.chat.completions.create(
                model=call.model, messages=[*system, *call.messages], timeout=timeout, **params, **call.extra
            )
        except openai.RateLimitError as exc:
            raise ReplayRetryable(f"openai: rate limited: {exc.message}", _retry_after(exc.response)) from None
        except openai.InternalServerError as exc:
            raise ReplayRetryable(f"openai: server error {exc.status_code}", _retry_after(exc.response)) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ReplayRetryable(f"openai: {exc.__class__.__name__}") from None
        except openai.APIStatusError as exc:
            raise RuntimeError(f"openai refused the call ({exc.status_code}): {exc.message}") from None
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        return ReplayAnswer(
            output_text=(choice.message.content or "") if choice else "",
            model=response.model,
            input_tokens=usage.prompt_tokens if usage else None,
            cache_read_tokens=getattr(prompt_details, "cached_tokens", None),
            output_tokens=usage.completion_tokens if usage else None,
            reasoning_tokens=getattr(completion_details, "reasoning_tokens", None),
            input_includes_cache=True,
            finish_reason=choice.finish_reason if choice else None,
            response_id=response.id,
        )


@hookimpl
def lumina_register_replay_executors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="openai",
            create=lambda ctx, config: OpenAIExecutor(config),
            config_model=OpenAIExecutorConfig,
            description="OpenAI chat completions, or any OpenAI-compatible server by base_url (official SDK).",
            stability="beta",
        )
    ]
