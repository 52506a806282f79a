"""The BatchNorm study: statistics measured again on the photos given, every weight held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from tests.benchmarks.test_seam_head import _encoder_checkpoint
from tests.training.conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]


class _Photos:
    """A stand-in for the training set: (image, mask) items of known values."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((1, 4, 4), self.values[i]), torch.zeros(1, 4, 4)


def test_statistics_become_the_plain_average_of_the_photos_and_weights_stay() -> None:
    from benchmarks.studies.batchnorm_stats import measure

    model = nn.Sequential(nn.BatchNorm2d(1))
    model[0].running_mean.fill_(5.0)
    model[0].weight.data.fill_(2.0)
    n = measure(model, _Photos([1.0, 2.0, 3.0, 6.0]), photos=4, batch=2)
    assert n == 1 and not model.training
    assert model[0].running_mean.item() == 3.0  # the mean of all four photos, not an exponential average
    assert model[0].weight.item() == 2.0


def test_writes_a_checkpoint_with_new_statistics_that_loads(tmp_path: Path) -> None:
    from segmenter import checkpoint

    root = make_dataset(tmp_path / "tiny", count=6, size=(96, 72))
    names = tmp_path / "val.txt"
    names.write_text("s000\n")
    source = _encoder_checkpoint(tmp_path / "enc.pt")
    out = tmp_path / "measured.pt"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/studies/batchnorm_stats.py"), "--data", str(root),
                           "--val-list", str(names), "--checkpoint", str(source), "--to", str(out), "--photos", "4"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BatchNorm layers measured on 4 training photos" in proc.stdout
    before, after = checkpoint.load(source)["model"], checkpoint.load(out)["model"]
    means = [k for k in before if k.endswith("running_mean")]
    assert means and all(not torch.equal(before[k], after[k]) for k in means)
    weights = [k for k in before if k.endswith(".weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights)
    checkpoint.load_model(out)  # the measured checkpoint scores like any other
