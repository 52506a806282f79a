"""Every script that reads --data/--val-list/--limit through evaluation.data_options runs end to end on a
tiny generated data set with a tiny model: the shared loop feeds each of them pairs they can score."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_tiny_checkpoint
from tests.training.conftest import make_dataset

pytestmark = pytest.mark.slow  # eleven script start-ups, about two minutes on two busy cores

REPO = Path(__file__).resolve().parents[2]
MEDIAPIPE = REPO / ".venv-mediapipe" / "bin" / "python"

# script, its own options beyond the shared ones, what its output must hold
RUNS = {
    "training/evaluate.py": ([], "overall"),
    "benchmarks/tuning/refine_quality.py": (["--batch-size", "2"], "guided"),
    "benchmarks/tuning/levels_quality.py": (["--lows", "0,0.25"], "(shipped)"),
    "benchmarks/tuning/matting_quality.py": (["--crop-size", "16"], "edge stage (served)"),
    "benchmarks/studies/canvas_quality.py": ([], "top, 352:256"),
    "benchmarks/studies/tta_quality.py": (["--second-size", "96", "--thresholds", "0.5"], "IoU"),
    "benchmarks/studies/adaptive_window.py": (["--taus", "1e-2", "--qs", "soft"], "narrow 1/64 (served)"),
    "benchmarks/studies/resolution_ceiling.py": (["--sizes", "64"], "IoU@64"),
    "benchmarks/studies/zoom_merge.py": ([], "auto, new 0.1"),
    "benchmarks/quality.py": (["--no-tta"], "MediaPipe"),
    "benchmarks/robustness.py": ([], "MediaPipe"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("data")
    root = make_dataset(tmp / "tiny", count=4, size=(96, 72))
    names = tmp / "val.txt"
    names.write_text("s001\ns002\ns003\n")
    return root, names, build_tiny_checkpoint(tmp / "tiny.pt")


@pytest.mark.parametrize("script", sorted(RUNS))
def test_runs_on_the_shared_options(script: str, inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    if "MediaPipe" in RUNS[script][1] and not MEDIAPIPE.exists():
        pytest.skip(f"{MEDIAPIPE} not found: `make mediapipe-venv` builds it")
    root, names, ckpt = inputs
    options = ["--data", str(root), "--val-list", str(names), "--limit", "2", *RUNS[script][0]]
    if script != "benchmarks/studies/resolution_ceiling.py":
        options += ["--checkpoint", str(ckpt)]
    proc = subprocess.run([sys.executable, str(REPO / script), *options], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert RUNS[script][1] in proc.stdout
