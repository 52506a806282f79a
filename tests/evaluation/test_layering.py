"""evaluation/ sits between the core and its users: it imports segmenter and nothing from training/,
handler/ or benchmarks/, so training and the benchmarks can both import it without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import evaluation

HOME = Path(evaluation.__file__).resolve().parent


def test_imports_no_room_above_it() -> None:
    found = []
    for path in HOME.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in {"training", "handler", "benchmarks"}]
    assert not found


def test_every_public_name_resolves() -> None:
    assert all(getattr(evaluation, name) is not None for name in evaluation.__all__)
