"""What a resumed run does with the debris of a killed one (the fixes behind test_train_kill.py).

A SIGKILL skips every clean-up: inside ``save_atomic`` it leaves a ``.last.pt.xxxx.tmp``; between
an epoch's metrics row / ``best.pt`` and its ``last.pt`` it leaves a row and a best model that
``last.pt`` does not know of. These build exactly that state by hand and check that ``--resume``
cleans it up, instead of relying on a kill landing in the right millisecond.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from segmenter import checkpoint
from tests.training.conftest import TINY_ARGS, make_dataset
from training.run_files import recorded_best, trim_metrics

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "training" / "train.py")]


def test_remove_stale_temps_takes_only_that_checkpoints_files(tmp_path: Path) -> None:
    names = [".last.pt.k2j3.tmp", ".last.pt.x.tmp", ".best.pt.q.tmp", "last.pt", ".last.ptx.a.tmp", "a.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = checkpoint.remove_stale_temps(tmp_path / "last.pt")
    assert sorted(p.name for p in removed) == [".last.pt.k2j3.tmp", ".last.pt.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {".last.pt.k2j3.tmp", ".last.pt.x.tmp"})
    assert checkpoint.remove_stale_temps(tmp_path / "missing" / "last.pt") == []


def test_trim_metrics_keeps_the_checkpointed_epochs(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"epoch": e, "val_iou": 0.1 * e}) for e in (1, 2, 3)]
    path.write_text("\n".join(rows) + '\n{"epoch": 4, "val_i')  # a row cut by the kill
    assert trim_metrics(path, 2) == 2
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    assert trim_metrics(path, 2) == 0 and trim_metrics(tmp_path / "none.jsonl", 5) == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_recorded_best(tmp_path: Path) -> None:
    assert recorded_best(tmp_path / "best.pt", print) == -math.inf
    checkpoint.save_atomic({"model": {}, "config": {}, "best_iou": 0.75}, tmp_path / "best.pt")
    assert recorded_best(tmp_path / "best.pt", print) == 0.75
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    warnings: list[str] = []
    assert recorded_best(tmp_path / "bad.pt", warnings.append) == -math.inf and "bad.pt" in warnings[0]


def test_resume_cleans_up_after_a_kill_between_best_and_last(tmp_path: Path) -> None:
    """The state a kill after epoch 2's row and best.pt, inside its last.pt save, leaves behind."""
    data, out = make_dataset(tmp_path / "data"), tmp_path / "run"
    args = ["--data", str(data), *TINY_ARGS, "--out", str(out), "--no-export"]
    first = subprocess.run([*TRAIN, *args], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr
    last = checkpoint.load(out / "last.pt")
    assert last["epoch"] == 1 and last["best_iou"] < 0.999
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "val_iou": 0.999}) + "\n")
    checkpoint.save_atomic({**last, "epoch": 2, "best_iou": 0.999}, out / "best.pt")
    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")

    resumed = subprocess.run([*TRAIN, "--resume", str(out / "last.pt"), *args, "--epochs", "2"],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "removed" in resumed.stderr and ".last.pt.k1ll3d.tmp" in resumed.stderr
    assert "dropped 1 metrics row(s) past epoch 1" in resumed.stderr
    assert "best IoU so far 0.9990" in resumed.stderr
    assert not (out / ".last.pt.k1ll3d.tmp").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_iou"] != 0.999  # the re-run epoch's own row
    assert checkpoint.load(out / "last.pt")["best_iou"] == 0.999  # carried over from best.pt
    assert checkpoint.load(out / "best.pt")["best_iou"] == 0.999  # not overwritten by a worse epoch 2
