"""The click-net study: its batches hold each photo once per person, and it trains, scores and reloads."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_seam_head import _encoder_checkpoint
from tests.training.conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]


def test_a_batch_holds_each_photo_once_per_person_clicked_on_them() -> None:
    from benchmarks.studies import click_net, seam_head

    a = np.zeros((seam_head.SIZE, 200), bool)
    a[100:300, 50:150] = True
    photo = np.full((seam_head.SIZE, 200, 3), 90, np.uint8)
    batch, maps, target = click_net.batch_of([(photo, a)], random.Random(3), 6, [0.0, 1.0, 0.0, 0.0])  # side by side
    assert batch.shape[0] == maps.shape[0] == target.shape[0] == 12  # two people on each of six photos
    for k in range(12):
        y, x = np.unravel_index(int(maps[k, 1].argmax()), maps.shape[-2:])
        assert target[k, 0, y, x] == 1  # the click lies on the person the target is
    assert not torch.equal(target[0], target[1])  # the same photo, two answers


@pytest.mark.slow
def test_trains_the_network_and_scores_every_rule(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny", count=4, size=(96, 72))
    names = tmp_path / "val.txt"
    names.write_text("s001\ns002\ns003\n")
    ckpt = _encoder_checkpoint(tmp_path / "enc.pt")
    out = tmp_path / "net.pt"
    cmd = [sys.executable, str(REPO / "benchmarks/studies/click_net.py"), "--data", str(root), "--val-list",
           str(names), "--limit", "2", "--checkpoint", str(ckpt), "--out", str(out), "--steps", "2",
           "--pairs", "4", "--batch", "2", "--threshold", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file()
    from segmenter import chooser

    chooser.load(out)  # written in the form the server reads
    for row in ("| served | - |", "| net | 0.5 |", "| served & net | 0.5 |", "| net, then regions | 0.5 |",
                "| keep_chosen | 0.5 |"):
        assert row in proc.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)  # reads the weights
    assert again.returncode == 0 and "step 0" not in again.stdout
