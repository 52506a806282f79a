"""The seam-head study trains and scores end to end, and its training photos carry the truth it learns."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]


def _encoder_checkpoint(path: Path) -> Path:
    """A randomly initialised encoder network, the kind the study reads (its decoder levels)."""
    from segmenter import checkpoint
    from segmenter.model import EncoderUNet

    torch.manual_seed(0)
    channels = (16, 16, 16, 16, 8)
    model = EncoderUNet("efficientnet-lite0", channels)
    config = {"encoder": "efficientnet-lite0", "decoder_channels": list(channels), "image_size": 64}
    checkpoint.save_atomic({"model": model.state_dict(), "config": config}, path)
    return path


def test_front_and_behind_photos_mark_the_seam_inside_the_people() -> None:
    from benchmarks.studies import seam_head

    person = np.zeros((150, 300), bool)
    person[30:, 40:100] = True
    data = [(np.full((150, 300, 3), 90, np.uint8), person)]
    canvas, inst = seam_head.compose(data, random.Random(0), [0, 1, 0, 0])  # side by side, apart here
    assert set(np.unique(inst).tolist()) == {0, 1, 2} and not (seam_head.seam_truth(inst) > 0).any()
    for kind, mix in {"front": [0, 0, 1, 0], "behind": [0, 0, 0, 1]}.items():
        met = 0
        for seed in range(10):
            canvas, inst = seam_head.compose(data, random.Random(seed), mix)
            assert canvas.shape == (seam_head.SIZE, seam_head.SIZE, 3)
            seam = seam_head.seam_truth(inst).numpy() > 0
            assert (inst[seam] > 0).all(), kind  # a seam lies on people, never on the background
            if (inst == 1).any() and (inst == 2).any():
                met += seam.any()
        assert met, f"{kind}: no photo where the two people meet"
    canvas, inst = seam_head.compose(data, random.Random(0), [1, 0, 0, 0])
    assert set(np.unique(inst).tolist()) == {0, 1} and not (seam_head.seam_truth(inst) > 0).any()


@pytest.mark.slow
def test_trains_a_head_and_scores_the_keep_cases(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny", count=4, size=(96, 72))
    names = tmp_path / "val.txt"
    names.write_text("s001\ns002\ns003\n")
    ckpt = _encoder_checkpoint(tmp_path / "enc.pt")
    out = tmp_path / "head.pt"
    cmd = [sys.executable, str(REPO / "benchmarks/studies/seam_head.py"), "--data", str(root), "--val-list",
           str(names), "--limit", "2", "--checkpoint", str(ckpt), "--out", str(out), "--steps", "2",
           "--pairs", "4", "--threshold", "0.5", "--share", "0.25", "--strength", "0.5",
           "--picture", str(tmp_path / "seams.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and (tmp_path / "seams.png").is_file()
    for row in ("| no head |", "| 0.5 | 0.25 | - |", "| 0.5 | 0.25 | 0.5 |"):  # every setting asked for
        assert row in proc.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)  # reads the head
    assert again.returncode == 0 and "step 0" not in again.stdout
