"""The keep and harmonize benchmarks run end to end on a tiny generated data set (a tiny model for keep), and
print their tables: a renamed function or option in segmenter.people or segmenter.harmonize fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_tiny_checkpoint
from tests.training.conftest import make_dataset

pytestmark = pytest.mark.slow  # two script start-ups

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("data")
    return make_dataset(tmp / "tiny", count=4, size=(96, 72)), build_tiny_checkpoint(tmp / "tiny.pt")


@pytest.mark.parametrize(("script", "extra", "printed"), [
    ("benchmarks/tuning/keep_quality.py", ["--checkpoint"], ("| all |", ": alone |")),
    ("benchmarks/tuning/keep_quality.py", ["--no-chooser", "--checkpoint"], "keep by the regions alone"),
    ("benchmarks/tuning/harmonize_quality.py", [], "| all | other scene |"),
])
def test_the_script_prints_its_table(script: str, extra: list[str], printed: str | tuple[str, ...],
                                     data: tuple[Path, Path],
                                     tmp_path: Path) -> None:
    root, ckpt = data
    options = ["--data", str(root), "--limit", "3", "--no-timing", *extra]
    if extra:
        options.append(str(ckpt))
    proc = subprocess.run([sys.executable, str(REPO / script), *options], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in (printed,) if isinstance(printed, str) else printed:
        assert line in proc.stdout, proc.stdout[-2000:]
