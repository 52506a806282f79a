"""segmenter's public API: every name in ``__all__`` resolves, ``import segmenter`` stays cheap (the
plug-in's client and TorchServe's handler import it), and the core imports nothing from the rooms above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import segmenter

CORE = Path(segmenter.__file__).resolve().parent


@pytest.mark.parametrize("name", segmenter.__all__)
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(segmenter, name)
    if isinstance(value, type) or callable(value):  # a function or class: defined in the core, not re-exported
        assert value.__module__.startswith("segmenter."), value.__module__
    assert getattr(segmenter, name) is value


def test_no_public_name_hides_a_submodule() -> None:
    assert not {p.stem for p in CORE.glob("*.py")} & set(segmenter.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = segmenter.no_such_thing


def test_importing_the_package_loads_no_torch() -> None:
    code = "import sys, segmenter, segmenter.imaging; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_core_imports_no_other_room() -> None:
    rooms = {"training", "evaluation", "handler", "benchmarks", "gimp_plugin"}
    found = []
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in rooms]
    assert not found
