"""Every command-line script runs as users type it (``python training/x.py``), with no sys.path edits:
the packages come from ``make setup``'s install, and a Python without it is told so, naming the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*REPO.glob("training/*.py"), *REPO.glob("benchmarks/**/*.py"), *REPO.glob("evaluation/*.py")])
COMMANDS = [p for p in SCRIPTS if 'if __name__ == "__main__"' in p.read_text()]


# compare_checkouts.py puts *another* checkout first on purpose.
PATH_EDITS_ON_PURPOSE = {"compare_checkouts.py"}


def test_no_script_edits_sys_path() -> None:
    edits = [p.name for p in SCRIPTS if "sys.path.insert" in p.read_text() and p.name not in PATH_EDITS_ON_PURPOSE]
    assert not edits


@pytest.mark.parametrize("script", [p for p in COMMANDS if p.parent.name == "training"], ids=lambda p: p.name)
def test_script_without_the_install_says_how_to_set_up(script: Path, tmp_path: Path) -> None:
    # -S: no site-packages, so neither the project's editable install nor torch is importable
    proc = subprocess.run([sys.executable, "-S", str(script), "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    assert script.name in proc.stderr and "make setup" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", [p for p in COMMANDS if p.parent.name == "training"], ids=lambda p: p.name)
def test_script_help_runs_from_anywhere(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
