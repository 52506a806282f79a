"""Finding TorchServe's commands and checking what it needs before anything starts."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from handler.serve.errors import ServeError


def find_tool(name: str) -> str | None:
    """A command installed beside the running Python (the project's .venv) or else on PATH.

    The venv's own copy first: ``make serve`` must run the pinned TorchServe even when another one
    is on PATH, and a venv that is not activated has its commands only beside its python.
    """
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def torchserve() -> str:
    """The ``torchserve`` command, or ``ServeError`` saying how to install it."""
    found = find_tool("torchserve")
    if not found:
        raise ServeError("torchserve not found; run `make setup` (installs requirements.txt into .venv)")
    return found


def check_prerequisites() -> None:
    """Java and torchserve must be there; raise ``ServeError`` naming what is missing."""
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise ServeError("java not found: TorchServe's frontend needs a Java 11+ runtime "
                         "(e.g. `apt-get install openjdk-17-jre-headless`)")
    torchserve()
    try:
        import yaml  # noqa: F401  (undeclared torchserve dependency: workers die without it)
    except ImportError:
        raise ServeError("PyYAML is missing: TorchServe workers import it; run `make setup`") from None
