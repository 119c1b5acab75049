"""The exact-match quality detector: SHA-256 of the normalised response, compared with the baselines'.

Normalising forgives what does not change meaning: surrounding and repeated whitespace, and for JSON the
order of object keys and the formatting. Anything else (one word) is a change. Cheap enough to run inline.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from lumina_core import ComponentConfig, ComponentFactory, hookimpl

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """JSON canonicalised (sorted keys, no spacing); other text with whitespace runs collapsed."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(stripped), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser takes
            pass
    return _SPACE.sub(" ", stripped)


def fingerprint(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()


class ExactMatch:
    mode = "inline"

    def __init__(self) -> None:
        self._hashes: dict[str, str] = {}  # baseline outputs recur: hash each once (bounded)

    def _hash(self, text: str) -> str:
        digest = self._hashes.get(text)
        if digest is None:
            if len(self._hashes) > 10_000:
                self._hashes.clear()
            digest = self._hashes[text] = fingerprint(text)
        return digest

    async def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        return [
            1.0 if fingerprint(output) in {self._hash(b) for b in baselines} else 0.0 for output, baselines in pairs
        ]


def _create(ctx: Any, config: ComponentConfig) -> ExactMatch:
    return ExactMatch()


@hookimpl
def lumina_register_detectors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="exact_match",
            create=_create,
            config_model=ComponentConfig,
            description="SHA-256 of the normalised response (whitespace; JSON key order) against the baselines.",
        )
    ]
