"""Lumina's wheel and fresh virtual environments to install it in, as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def build_wheel(out: Path, scratch: Path) -> Path:
    """Lumina's wheel, built from a clean copy: a stale build/ folder in the work tree would hide a missing
    package."""
    source = scratch / "lumina"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("lumina-*.whl")
    return built


def site_packages(python: Path) -> str:
    return subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def fresh_venv(venv: Path, wheel: Path) -> Path:
    """A new virtual environment with Lumina installed from ``wheel``. Its dependencies come from the test
    environment (a ``.pth`` file; no network needed), Lumina itself only from the wheel."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    Path(site_packages(python), "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], check=True, timeout=300)
    return venv
