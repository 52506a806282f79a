"""Every benchmark, tuning sweep and study still runs as users type it (``python benchmarks/x.py --help``),
from any folder: a moved script whose imports or options broke fails here rather than on its next real run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# mediapipe_worker.py runs in MediaPipe's own venv and reads requests on stdin: it has no --help.
SCRIPTS = sorted(p for p in REPO.glob("benchmarks/**/*.py")
                 if 'if __name__ == "__main__"' in p.read_text() and p.name != "mediapipe_worker.py")


def test_the_top_level_keeps_at_most_ten_scripts() -> None:
    top = [p.name for p in REPO.glob("benchmarks/*.py") if p.name != "__init__.py"]
    assert len(top) <= 10, sorted(top)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO / "benchmarks")))
def test_help_runs_from_anywhere(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
