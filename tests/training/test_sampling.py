"""``--sample-weights``: photos the model got wrong are drawn more often, reproducibly, across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from segmenter import checkpoint
from tests.training.conftest import TINY_ARGS
from training.data import Pair
from training.sampling import WeightedEpochSampler, pair_weights, read_scores

REPO = Path(__file__).resolve().parents[2]


def _pairs(root: Path, names: list[str]) -> list[Pair]:
    return [Pair(root / "Images" / f"{n}.jpg", root / "Masks" / f"{n}.png", root) for n in names]


def _rows(path: Path, root: Path, ious: dict[str, float]) -> Path:
    path.write_text("".join(json.dumps({"name": n, "root": str(root), "iou": v}) + "\n" for n, v in ious.items()))
    return path


def test_weights_follow_the_error_with_a_cap_and_unnamed_pairs_weigh_as_average(tmp_path: Path) -> None:
    root = tmp_path / "d"
    # errors 0, 0.1, 0.2, 1.0: mean error 0.325
    scores = read_scores(_rows(tmp_path / "rows.jsonl", root, {"a": 1.0, "b": 0.9, "c": 0.8, "d": 0.0}))
    weights, unnamed = pair_weights(_pairs(root, ["a", "b", "c", "d", "zz"]), scores, strength=2.0, cap=5.0)
    assert unnamed == 1
    assert weights[0] == pytest.approx(1.0)  # a perfect photo: once
    assert weights[1] == pytest.approx(1 + 2 * 0.1 / 0.325)
    assert weights[2] == pytest.approx(1 + 2 * 0.2 / 0.325)
    assert weights[3] == pytest.approx(5.0)  # 1 + 2 * 3.08 = 7.2, capped
    assert weights[4] == pytest.approx(3.0)  # not in the file: an average photo
    # a second set with rougher masks: its errors count against its own mean, so it keeps its share
    scores |= read_scores(_rows(tmp_path / "rows2.jsonl", tmp_path / "e", {"x": 0.5, "y": 0.7}))
    rough, _ = pair_weights(_pairs(tmp_path / "e", ["x", "y"]) + _pairs(root, ["b"]), scores, strength=2.0, cap=50)
    assert rough[0] == pytest.approx(1 + 2 * 0.5 / 0.4) and rough[1] == pytest.approx(1 + 2 * 0.3 / 0.4)
    assert rough[2] == pytest.approx(weights[1])
    # the same root spelt another way still matches
    other = root.parent / ".." / root.parent.name / "d"
    assert pair_weights(_pairs(other, ["b"]), scores)[1] == 0


def test_sampler_draws_the_weighted_pairs_more_often_reproducibly_and_splits_across_ranks() -> None:
    weights = torch.tensor([1.0] * 90 + [8.0] * 10, dtype=torch.float64)
    sampler = WeightedEpochSampler(weights, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 100 and first == list(sampler)  # same epoch, same draw
    sampler.set_epoch(1)
    assert list(sampler) != first
    counts = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        counts.update(i >= 90 for i in sampler)
    # the 10 heavy pairs hold 80 / 170 of the weight
    assert 0.40 < counts[True] / sum(counts.values()) < 0.55
    ranks = [WeightedEpochSampler(weights, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(5)
    sampler.set_epoch(5)
    halves = [list(s) for s in ranks]
    assert len(halves[0]) == len(halves[1]) == 50
    assert sorted(halves[0] + halves[1]) == sorted(sampler)  # one draw, shared out


@pytest.mark.parametrize("text, says", [("", "no rows"), ('{"name": "a"}\n', "line 1"), ("not json\n", "line 1")])
def test_bad_rows_file_is_a_clear_error_naming_it(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=says) as err:
        read_scores(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_scores(tmp_path / "missing.jsonl")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_train_draws_by_evaluate_rows_and_resume_keeps_them(tiny_dataset: Path, tmp_path: Path) -> None:
    """The real chain: a model, its per-image rows on the data, a run drawing by them, resumed."""
    first = tmp_path / "first"
    proc = _run(["training/train.py", "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(first), "--no-export"])
    assert proc.returncode == 0, proc.stderr
    rows = tmp_path / "rows.jsonl"
    proc = _run(["training/evaluate.py", "--data", str(tiny_dataset), "--checkpoint", str(first / "best.pt"),
                 "--per-image", str(rows)])
    assert proc.returncode == 0, proc.stderr
    assert len(rows.read_text().splitlines()) == 12

    out = tmp_path / "hard"
    proc = _run(["training/train.py", "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--no-export",
                 "--init", str(first / "best.pt"), "--sample-weights", str(rows), "--sample-strength", "3"])
    assert proc.returncode == 0, proc.stderr
    assert f"drawing pairs by {rows} (strength 3.0, cap 8.0)" in proc.stderr
    assert "not in the file" not in proc.stderr
    proc = _run(["training/train.py", "--resume", str(out / "last.pt"), "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    assert f"drawing pairs by {rows} (strength 3.0" in proc.stderr and "epoch 2/2" in proc.stderr
    assert checkpoint.load(out / "last.pt")["args"]["sample_weights"] == str(rows)


def test_train_with_a_bad_rows_file_stops_before_training_naming_it(tiny_dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "rows.jsonl"
    bad.write_text("[1, 2]\n")
    out = tmp_path / "run"
    proc = _run(["training/train.py", "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--no-export",
                 "--sample-weights", str(bad)])
    assert proc.returncode == 2
    assert f"train.py: error: --sample-weights {bad}, line 1" in proc.stderr
    assert not (out / "last.pt").exists()
