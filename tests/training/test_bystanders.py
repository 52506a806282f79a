"""Marking the people a data set's masks leave out, and training that leaves them out of the loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.training.conftest import TINY_ARGS
from training.bystanders import grow, left_out

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_left_out_marks_far_people_not_the_subjects_edge() -> None:
    truth = np.zeros((100, 100), bool)
    truth[20:80, 10:40] = True
    found = truth.copy()
    found[20:80, 40:42] = True  # the subject's edge, found a little wider: a real error, still taught
    found[30:60, 80:90] = True  # a passer-by the truth calls background
    marked = left_out(found, truth, margin=0.02)  # 3 pixels of a 141-pixel diagonal
    assert not marked[truth].any()
    assert not marked[:, 40:45].any()
    assert marked[30:60, 80:90].all() and marked[27, 85] and not marked[20, 85]
    line = np.eye(5, dtype=bool)
    assert grow(line, 0).sum() == 5 and grow(line, 1)[0, 2] and not grow(line, 1)[0, 3]


def test_bystanders_writes_masks_the_training_run_reads(tiny_dataset: Path, tmp_path: Path) -> None:
    """End to end on real files: the shipped model marks pixels (never the labelled person, the photo's size),
    and a training run given the folder trains on it; a missing root is named."""
    out = tmp_path / "left-out"
    proc = _run(["training/bystanders.py", "--data", str(tiny_dataset), "--zoom", "off", "--margin", "0",
                 "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "photos have people their masks leave out" in proc.stdout
    for png in out.glob("*.png"):
        marked = np.asarray(Image.open(png)) > 0
        truth = np.asarray(Image.open(tiny_dataset / "Masks" / png.name)) > 0
        assert marked.shape == truth.shape and marked.any() and not (marked & truth).any()
    # a run that reads the folder (with one mask at least, made here if the model found no one else)
    if not any(out.glob("*.png")):
        Image.new("L", Image.open(tiny_dataset / "Masks" / "s000.png").size, 255).save(out / "s000.png")
    run = _run(["training/train.py", "--data", str(tiny_dataset), *TINY_ARGS, "--ignore-masks", str(out),
                "--group-prob", "0.5", "--out", str(tmp_path / "run"), "--no-export"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "best.pt").is_file()
    missing = _run(["training/bystanders.py", "--data", str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.returncode != 0 and "nowhere" in missing.stderr
