"""``kill -9`` training at bad moments; ``--resume`` must always find a whole checkpoint and finish.

A real training run on the tiny generated data set (tests/training/conftest.py), killed with
SIGKILL (no handler runs, unlike Ctrl-C):

1. in the middle of epoch 2 (epoch 1's checkpoint written);
2. while ``best.pt`` and then ``last.pt`` are being written (the test watches the run folder for
   ``save_atomic``'s temporary file and kills the moment it appears);
3. after random short delays (seeded, printed), which land in start-up, training or saving.

After every kill ``last.pt`` must load with ``segmenter.checkpoint.load`` and never go back in
epochs. A last ``--resume`` must finish the run with one metrics row per epoch (none lost, none
twice), a ``best.pt`` that holds the best score the run recorded, and no temporary files left.
The U-Net has 16 base filters so that a checkpoint (weights and Adam state, ~23 MB) takes long
enough to write for the kill to land inside the save.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segmenter import checkpoint
from tests.training.conftest import TINY_ARGS, make_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 12
SAVE_ATTEMPTS = 4  # tries to catch each kind of save in the act


class Training:
    """One ``train.py`` process whose stderr is collected line by line in the background."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "training" / "train.py"), *args], cwd=REPO,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.lines)):
            assert self.proc.poll() is None, f"training ended (rc {self.proc.returncode}):\n" + self.log()
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n" + self.log()
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(60) == -signal.SIGKILL, self.log()
        self.reader.join(10)

    def finish(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(10)
        return rc

    def log(self) -> str:
        return "\n".join(self.lines[-30:])


def temp_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.endswith(".tmp")}


def kill_during_save(run: Training, out: Path, name: str, timeout: float = 120) -> bool:
    """SIGKILL ``run`` the moment a new temporary file of ``name`` appears; True if one was left behind."""
    before = temp_files(out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.proc.poll() is None:
        with os.scandir(out) as entries:
            if any(e.name.startswith(f".{name}.") and e.name.endswith(".tmp") and e.name not in before
                   for e in entries):
                run.kill()
                return bool(temp_files(out) - before)
        time.sleep(0.0005)
    raise AssertionError(f"no {name} save seen within {timeout} s (rc {run.proc.poll()}):\n{run.log()}")


def check_last(out: Path, previous: int) -> int:
    """``last.pt`` loads, is a complete end-of-epoch checkpoint, and did not go back; return its epoch."""
    state = checkpoint.load(out / "last.pt")
    assert not state.get("interrupted") and state["optimizer"]["state"], "not a full training state"
    assert previous <= state["epoch"] <= EPOCHS, (previous, state["epoch"])
    return int(state["epoch"])


@pytest.mark.timeout(600)
def test_sigkill_at_any_moment_leaves_a_resumable_run(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", count=40)
    out = tmp_path / "run"
    common = ["--data", str(data), *TINY_ARGS, "--epochs", str(EPOCHS), "--base-filters", "16", "--threads", "1",
              "--out", str(out), "--no-export"]
    resume = ["--resume", str(out / "last.pt"), *common]
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    print(f"\nkill delays seeded with KILL_SEED={seed}")
    kills = []

    # 1. mid-epoch: epoch 1 saved, epoch 2 under way
    run = Training(common)
    run.wait_for(rf"^epoch 2/{EPOCHS} +\d")
    run.kill()
    epoch = check_last(out, 1)
    assert epoch == 1
    kills.append(("epoch 2 training", epoch, False))

    # 2. in the middle of writing best.pt (early on, while validation still improves every epoch),
    #    then last.pt (written every epoch)
    for name in ("best.pt", "last.pt"):
        for _ in range(SAVE_ATTEMPTS):
            caught = kill_during_save(Training(resume), out, name)
            epoch = check_last(out, epoch)
            kills.append((f"saving {name}", epoch, caught))
            if caught:
                break

    # 3. random moments: start-up, training, validation or saving
    for _ in range(3):
        run = Training(resume)
        delay = rng.uniform(0.5, 6.0)
        time.sleep(delay)
        if run.proc.poll() is None:
            run.kill()
        epoch = check_last(out, epoch)
        kills.append((f"after {delay:.1f} s", epoch, False))

    for what, at, caught in kills:
        print(f"  killed {what:<18} -> last.pt at epoch {at}" + ("  (temporary file left behind)" if caught else ""))
    assert any(caught for what, _, caught in kills if "last.pt" in what), "never killed inside a save of last.pt"

    # the last resume finishes the run, whatever the kills left behind
    final = Training(resume)
    assert final.finish() == 0, final.log()
    assert check_last(out, epoch) == EPOCHS
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), "metrics rows lost or repeated"
    last, best = checkpoint.load(out / "last.pt"), checkpoint.load(out / "best.pt")
    assert best["best_iou"] == last["best_iou"], "best.pt does not hold the best score the run recorded"
    assert best["best_iou"] >= max(r["val_iou"] for r in rows) - 1e-9
    assert best["epoch"] <= EPOCHS
    assert not temp_files(out), f"temporary files left in the run folder: {sorted(temp_files(out))}"
    print(f"  {sum(c for _, _, c in kills)} kill(s) left a temporary file; none left after the final resume")
