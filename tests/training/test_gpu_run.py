"""training/gpu_run.sh, run here on the CPU with a tiny model: what comes back from a GPU machine's $OUT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.training.conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "gpu_run.sh"


def _run(tmp_path: Path, data: Path, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    settings = {"OUT": str(out), "PY": sys.executable, "DATA": str(data), "RUN": str(tmp_path / "run"),
                "EPOCHS": "1", "BATCH": "2", "WORKERS": "0", "TRAIN_S": "300", "INIT": "",
                "VAL": "--val-fraction 0.25", "EXTRA": "--threads 1 --image-size 64 --preview-count 1",
                **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **settings))


def test_brings_back_log_metrics_and_half_weights(tmp_path: Path) -> None:
    data = tmp_path / "gpu_data"
    for i, root in enumerate(("ccp", "eg1800", "vikram")):
        make_dataset(data / root, count=4, seed=i)
    proc = _run(tmp_path, data, MODEL="--encoder none --depth 4 --base-filters 4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"train.log", "metrics.jsonl", "gpu.pt"}
    assert "epoch 1/1: loss" in (out / "train.log").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    shipped = torch.load(out / "gpu.pt", weights_only=True)
    assert shipped["config"]["image_size"] == 352  # served at the shipped model's input, whatever it trained at
    weights = shipped["model"]
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "run make gpu-data first" in proc.stderr
