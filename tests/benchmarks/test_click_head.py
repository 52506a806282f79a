"""The click-head study: its click maps point where the user clicked, and it trains and scores end to end."""

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


def test_click_maps_peak_at_the_point_and_the_head_keeps_the_size() -> None:
    from benchmarks.studies import click_head
    from segmenter.chooser import click_maps

    maps = click_maps([(40.0, 20.0), (0.0, 63.0)], (64, 96), step=2)
    assert maps.shape == (2, 2, 32, 48)
    disc, spread = maps[0]
    y, x = np.unravel_index(int(spread.argmax()), spread.shape)
    assert (x, y) == (20, 10) and disc[10, 20] == 1 and disc.sum() > 1 and disc[10, 30] == 0
    assert maps[1, 0, 31, 0] == 1  # a point on the photo's corner is on the map's corner
    head = click_head.ClickHead(5)
    out = head(torch.zeros(2, 5, 32, 48), maps)
    assert out.shape == (2, 1, 32, 48)


def test_a_click_lands_on_the_person() -> None:
    from benchmarks.studies import click_head

    person = np.zeros((40, 50), bool)
    person[10:30, 5:15] = True
    person[35:38, 40:45] = True  # a loose piece
    r = random.Random(0)
    clicks = [click_head.pick_click(person, r) for _ in range(40)]
    assert all(person[y, x] for x, y in clicks)
    assert len(set(clicks)) > 2  # not only the centroid


@pytest.mark.slow
def test_trains_a_head_and_scores_every_rule(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny", count=4, size=(96, 72))
    names = tmp_path / "val.txt"
    names.write_text("s001\ns002\ns003\n")
    ckpt = _encoder_checkpoint(tmp_path / "enc.pt")
    out = tmp_path / "head.pt"
    cmd = [sys.executable, str(REPO / "benchmarks/studies/click_head.py"), "--data", str(root), "--val-list",
           str(names), "--limit", "2", "--checkpoint", str(ckpt), "--out", str(out), "--steps", "2",
           "--pairs", "4", "--batch", "2", "--threshold", "0.5", "--picture", str(tmp_path / "clicks.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and (tmp_path / "clicks.png").is_file()
    for row in ("| served | - |", "| head | 0.5 |", "| served & head | 0.5 |", "| head, then regions | 0.5 |",
                "| keep_chosen | 0.5 |"):
        assert row in proc.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)  # reads the head
    assert again.returncode == 0 and "step 0" not in again.stdout
