"""``lumina plugin new``: a ready-to-publish plugin package whose own tests pass out of the box.

A package holds a component skeleton for one kind, a ``pyproject.toml`` with the ``lumina`` entry point
and the ``lumina-plugin`` keyword, tests that run the kind's contract suite (and, for alert sinks, an alert
from real traffic through a real Lumina), and a README.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from lumina_core import __version__

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class Skeleton:
    """One kind's component and tests, as templates over ``$name``, ``$dist``, ``$package``, ``$Class``."""

    summary: str
    dependencies: tuple[str, ...]
    component: str
    tests: str


ALERT_SINK = Skeleton(
    summary="a Lumina alert sink that POSTs each alert as JSON to a URL",
    dependencies=("httpx>=0.27",),
    component='''"""$dist: a Lumina alert sink that POSTs each alert as JSON to a URL."""

from __future__ import annotations

import httpx
from lumina_core import Alert, AlertRejected, ComponentConfig, ComponentFactory, hookimpl
from pydantic import Field


class ${Class}Config(ComponentConfig):
    url: str = Field(description="where alerts are POSTed")
    timeout_seconds: float = Field(10, gt=0, description="how long one request may take")


class ${Class}Sink:
    """Sends each alert once; raises when the receiver does not take it, and Lumina retries from its outbox."""

    def __init__(self, config: ${Class}Config) -> None:
        self.config = config

    async def send(self, alert: Alert) -> None:
        payload = {"text": f"{alert.title()}: {alert.summary}", "alert": alert.to_dict()}
        async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as client:
            response = await client.post(self.config.url, json=payload)
        if response.status_code in (400, 404, 410):  # retrying cannot help
            raise AlertRejected(f"{self.config.url} refused the alert: HTTP {response.status_code}")
        response.raise_for_status()


@hookimpl
def lumina_register_alert_sinks() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="$name",
            create=lambda ctx, config: ${Class}Sink(config),
            config_model=${Class}Config,
            description="POSTs each alert as JSON to a URL.",
            stability="alpha",
        )
    ]
''',
    tests='''"""$dist: Lumina's alert sink contract, and an alert from real traffic through a real Lumina."""

from __future__ import annotations

import httpx
import pytest
from lumina_core.testing import Receiver, export, llm_span, otlp_request
from lumina_core.testing.contracts import AlertSinkContract

import $package
from $package import ${Class}Config, ${Class}Sink


class Test${Class}Contract(AlertSinkContract):
    type_name = "$name"

    @pytest.fixture
    def plugin(self) -> object:
        return $package

    @pytest.fixture
    def sink(self, receiver: Receiver) -> ${Class}Sink:
        return ${Class}Sink(${Class}Config(url=receiver.url))

    @pytest.fixture
    def failing_sink(self, receiver: Receiver) -> ${Class}Sink:
        receiver.status = 503
        return ${Class}Sink(${Class}Config(url=receiver.url))


def test_an_alert_fired_by_real_traffic_arrives(lumina_server, receiver: Receiver) -> None:
    """``lumina_server`` and ``receiver`` are fixtures of Lumina's pytest plugin."""
    budget = {"name": "budget", "kind": "budget", "window": "day", "params": {"limit_usd": 0.001}}
    server = lumina_server(
        plugins=[$package],
        settings={
            "alerts.sinks": ["$name"],
            "alert_sinks": {"$name": {"url": receiver.url}},
            "alerts.rules": [budget],
        },
    )
    export(server, otlp_request([llm_span(input_tokens=10_000)], service="shop"))
    assert httpx.post(f"{server.http_url}/api/v1/alerts/evaluate").status_code == 200
    (received,) = receiver.wait_for(1)
    alert = received.json()["alert"]
    assert (alert["rule"], alert["scope"]) == ("budget", {"service": "shop"})
''',
)

PRICING = Skeleton(
    summary="a Lumina pricing provider with prices from its config",
    dependencies=(),
    component='''"""$dist: a Lumina pricing provider that knows the models its config lists."""

from __future__ import annotations

from datetime import datetime

from lumina_core import ComponentConfig, ComponentFactory, PriceRule, hookimpl
from pydantic import BaseModel, Field


class ModelPrice(BaseModel):
    input: float = Field(ge=0, description="USD per 1,000,000 input tokens")
    output: float = Field(ge=0, description="USD per 1,000,000 output tokens")


class ${Class}Config(ComponentConfig):
    models: dict[str, ModelPrice] = Field(
        default_factory=lambda: {"example-model": ModelPrice(input=1.0, output=2.0)}, description="model -> prices"
    )


class ${Class}Provider:
    """Prices the configured models; anything else is unknown (``None``), never a guess."""

    def __init__(self, config: ${Class}Config) -> None:
        self.rules = {
            model: PriceRule(source="$name", rule=f"$name:{model}", input=p.input, output=p.output)
            for model, p in config.models.items()
        }

    def lookup(self, provider: str | None, model: str, at: datetime) -> PriceRule | None:
        return self.rules.get(model)


@hookimpl
def lumina_register_pricing_providers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="$name",
            create=lambda ctx, config: ${Class}Provider(config),
            config_model=${Class}Config,
            description="Prices the models its config lists.",
            stability="alpha",
        )
    ]
''',
    tests='''"""$dist: Lumina's pricing provider contract."""

from __future__ import annotations

import pytest
from lumina_core.testing.contracts import PricingProviderContract

import $package
from $package import ${Class}Config, ${Class}Provider


class Test${Class}Contract(PricingProviderContract):
    type_name = "$name"

    @pytest.fixture
    def plugin(self) -> object:
        return $package

    @pytest.fixture
    def provider(self) -> ${Class}Provider:
        return ${Class}Provider(${Class}Config())

    @pytest.fixture
    def known(self) -> tuple[str | None, str]:
        return None, "example-model"
''',
)

EXTRACTOR = Skeleton(
    summary="a Lumina extractor for the $name.* span attributes",
    dependencies=(),
    component='''"""$dist: a Lumina extractor that reads LLM calls from ``$name.*`` span attributes."""

from __future__ import annotations

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class ${Class}Extractor:
    """Recognises spans with a ``$name.model`` attribute; cheap for every other span."""

    def extract(self, span: SpanRecord) -> LLMFields | None:
        model = span.attributes.get("$name.model")
        if not isinstance(model, str) or not model:
            return None
        return LLMFields(
            response_model=model,
            input_tokens=_int(span.attributes.get("$name.input_tokens")),
            output_tokens=_int(span.attributes.get("$name.output_tokens")),
        )


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="$name",
            create=lambda ctx, config: ${Class}Extractor(),
            config_model=ComponentConfig,
            description="Reads $name.* span attributes.",
            stability="alpha",
        )
    ]
''',
    tests='''"""$dist: Lumina's extractor contract."""

from __future__ import annotations

import pytest
from lumina_core.testing.contracts import ExtractorContract, make_span

import $package
from $package import ${Class}Extractor


class Test${Class}Contract(ExtractorContract):
    type_name = "$name"

    @pytest.fixture
    def plugin(self) -> object:
        return $package

    @pytest.fixture
    def extractor(self) -> ${Class}Extractor:
        return ${Class}Extractor()

    @pytest.fixture
    def span(self):
        attributes = {
            "$name.model": "example-model",
            "$name.input_tokens": 10,
            "$name.output_tokens": 5,
        }
        return make_span(attributes)
''',
)

DETECTOR = Skeleton(
    summary="a Lumina quality detector",
    dependencies=(),
    component='''"""$dist: a Lumina quality detector that compares responses case- and space-insensitively."""

from __future__ import annotations

from collections.abc import Sequence

from lumina_core import ComponentConfig, ComponentFactory, hookimpl


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


class ${Class}Detector:
    """1 when a response equals one of its baselines (ignoring case and spacing), else 0; cheap: inline."""

    mode = "inline"

    async def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        return [1.0 if _normal(output) in {_normal(b) for b in baselines} else 0.0 for output, baselines in pairs]


@hookimpl
def lumina_register_detectors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="$name",
            create=lambda ctx, config: ${Class}Detector(),
            config_model=ComponentConfig,
            description="Equal responses, ignoring case and spacing.",
            stability="alpha",
        )
    ]
''',
    tests='''"""$dist: Lumina's detector contract."""

from __future__ import annotations

import pytest
from lumina_core.testing.contracts import DetectorContract

import $package
from $package import ${Class}Detector


class Test${Class}Contract(DetectorContract):
    type_name = "$name"

    @pytest.fixture
    def plugin(self) -> object:
        return $package

    @pytest.fixture
    def detector(self) -> ${Class}Detector:
        return ${Class}Detector()
''',
)

SKELETONS = {"alert-sink": ALERT_SINK, "pricing": PRICING, "extractor": EXTRACTOR, "detector": DETECTOR}

PYPROJECT = """[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$summary"
readme = "README.md"
requires-python = ">=3.11"
keywords = ["lumina-plugin"]
dependencies = [$dependencies]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=0.24"]

[project.entry-points.lumina]
$name = "$package"

[tool.setuptools]
packages = ["$package"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""

README = """# $dist

$summary.

## Install

    pip install $dist

Lumina discovers it through its `lumina` entry point (`lumina plugins` lists it). Enable it in
`lumina.toml`; see the Lumina plugin guide (docs/plugins.md) for the `$kind` configuration.

## Develop

    pip install -e '.[test]'
    pytest

The tests run Lumina's contract suite for this kind of component (`lumina_core.testing.contracts`).
"""


def new_plugin(name: str, kind: str, parent: Path) -> Path:
    """Write the package ``lumina-<name>`` for ``kind`` under ``parent``; returns its folder."""
    if not NAME.fullmatch(name):
        raise ValueError("the name must be lowercase letters, digits and underscores, starting with a letter")
    skeleton = SKELETONS[kind]
    dist = f"lumina-{name.replace('_', '-')}"
    folder = parent / dist
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    values = {
        "name": name,
        "dist": dist,
        "package": f"lumina_{name}",
        "Class": "".join(part.capitalize() for part in name.split("_")),
        "kind": kind,
        "summary": Template(skeleton.summary).substitute(name=name),
        "dependencies": ", ".join(f'"{d}"' for d in (f"lumina>={__version__}", *skeleton.dependencies)),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"lumina_{name}/__init__.py": skeleton.component,
        f"tests/test_{name}.py": skeleton.tests,
    }
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values))
    return folder
