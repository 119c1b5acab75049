"""Meta-tests: every hookspec is documented and exercised, and plugins use only the public plugin API."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from lumina_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKSPECS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lumina_")]


def test_there_are_hookspecs() -> None:
    assert "lumina_register_extractors" in HOOKSPECS


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hookspec_is_documented_with_its_signature(name: str) -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    signature = inspect.signature(getattr(hookspecs, name))
    parameters = ", ".join(signature.parameters)
    assert re.search(rf"^## `{name}\({re.escape(parameters)}\)", docs, re.MULTILINE), (
        f"docs/plugins.md needs a section '## `{name}({parameters}) -> …`'"
    )
    assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hookspec_is_implemented_in_a_test(name: str) -> None:
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py"]
    assert any(re.search(rf"\b{name}\b\s*[=(]", source) for source in sources), f"no test implements {name}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_plugins_and_contrib_import_only_the_public_plugin_api() -> None:
    offenders = []
    for folder in (ROOT / "plugins", ROOT / "contrib"):
        for path in folder.rglob("*.py"):
            if "tests" in path.parts:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in _imports(path) if m.startswith("lumina_core.")]
    assert offenders == [], "import the plugin API from lumina_core only"
