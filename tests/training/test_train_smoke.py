"""Real (tiny) training runs: checkpoints, preview, metrics, resume, Ctrl-C, evaluate, torchrun, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from segmenter import checkpoint
from tests.training.conftest import TINY_ARGS

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "training" / "train.py")]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600, **kw)


def test_one_epoch_writes_everything_then_resume_continues(tiny_dataset: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "run", tmp_path / "store"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--model-store", str(store)])
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stderr and "val IoU" in proc.stderr
    for name in ("last.pt", "best.pt", "metrics.jsonl", "preview_001.png"):
        assert (out / name).is_file(), name
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["epoch"] == 1 and 0.0 <= row["val_iou"] <= 1.0 and row["train_loss"] > 0
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    assert (store / "person_segmenter.mar").is_file()

    proc = _run([*TRAIN, "--resume", str(out / "last.pt"), "--data", str(tiny_dataset), *TINY_ARGS,
                 "--epochs", "2", "--no-export"])
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr and "epoch 2/2" in proc.stderr
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert checkpoint.load(out / "last.pt")["epoch"] == 2


def test_resume_alone_continues_the_same_run(tiny_dataset: Path, tmp_path: Path) -> None:
    """``--resume last.pt`` with nothing else (what Ctrl-C prints) keeps the run's data and options."""
    out, store = tmp_path / "run", tmp_path / "store"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--model-store", str(store)])
    assert proc.returncode == 0, proc.stderr
    (store / "person_segmenter.mar").unlink()

    proc = _run([*TRAIN, "--resume", str(out / "last.pt"), "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    assert f"9 training / 3 validation pairs from {tiny_dataset}" in proc.stderr
    assert "U-Net 4 base filters, depth 4, from scratch, input 64px" in proc.stderr and "batch 2 x" in proc.stderr
    assert "epoch 2/2" in proc.stderr
    assert (store / "person_segmenter.mar").is_file()  # --model-store kept too
    args = checkpoint.load(out / "last.pt")["args"]
    assert args["epochs"] == 2 and args["data"] == [str(tiny_dataset)] and args["preview_count"] == 2


def test_ema_run_saves_and_scores_the_average_and_resumes_it(tiny_dataset: Path, tmp_path: Path) -> None:
    """``--ema``: the averaged weights are the checkpoint's ``model`` (what ship.py and evaluate.py read),
    the raw ones travel as ``train_model``, and a resume carries the average on instead of restarting it."""
    out = tmp_path / "run"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--ema", "0.5", "--loss", "bce_lovasz",
                 "--out", str(out), "--no-export"])
    assert proc.returncode == 0, proc.stderr
    first = checkpoint.load(out / "last.pt")
    steps = first["ema_steps"]
    assert steps == 4  # 9 training pairs, batch 2, last partial batch dropped
    name = "inc.0.weight"
    assert not first["model"][name].equal(first["train_model"][name])
    ship = [sys.executable, str(REPO / "training" / "ship.py"), str(out / "last.pt")]
    for flag, key, kind in (([], "model", "average"), (["--raw"], "train_model", "raw")):
        assert _run([*ship, "--to", str(tmp_path / f"{kind}.pt"), *flag]).returncode == 0
        slim = checkpoint.load(tmp_path / f"{kind}.pt")
        assert slim["model"][name].equal(first[key][name]) and json.loads(slim["provenance"])["weights"] == kind

    proc = _run([*TRAIN, "--resume", str(out / "last.pt"), "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    second = checkpoint.load(out / "last.pt")
    assert second["ema_steps"] == 2 * steps and second["args"]["ema"] == 0.5
    # the average after epoch 2 is a blend of epoch 1's average and the new weights, not a fresh copy
    assert not second["model"][name].equal(second["train_model"][name])


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tiny_dataset: Path, tmp_path: Path) -> None:
    """Not appending a second epoch 1 to metrics.jsonl, not replacing an earlier run's best.pt."""
    out = tmp_path / "run"
    args = [*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--no-export"]
    assert _run(args).returncode == 0
    before = {name: (out / name).read_bytes() for name in ("metrics.jsonl", "best.pt")}
    proc = _run(args)
    assert proc.returncode == 2
    assert f"{out} already holds a run" in proc.stderr and f"--resume {out / 'last.pt'}" in proc.stderr
    assert {name: (out / name).read_bytes() for name in before} == before


def test_bad_dataset_is_a_clear_cli_error(tmp_path: Path) -> None:
    proc = _run([*TRAIN, "--data", str(tmp_path / "missing"), *TINY_ARGS])
    assert proc.returncode == 2
    assert "missing" in proc.stderr and "Images/" in proc.stderr and "Traceback" not in proc.stderr


def _default_sigint() -> None:
    """Start the run with Ctrl-C's default disposition, as from a terminal. A shell that starts the test
    suite in the background (``bash .ci/run &``) makes its children ignore SIGINT, and Python keeps an
    ignored SIGINT ignored: without this the Ctrl-C tests would test nothing there and fail."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum,code,group", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
                                               (signal.SIGTERM, 143, True)], ids=["ctrl-c", "sigterm", "sigterm-group"])
def test_stop_signal_leaves_a_resumable_checkpoint(tiny_dataset: Path, tmp_path: Path, signum: int,
                                                   code: int, group: bool) -> None:
    """Ctrl-C, and SIGTERM (``kill PID``: the way to stop a run started in the background by a script).

    ``group``: the signal reaches the data worker too (``pkill -f train.py``, a scheduler); the worker
    used to die first, and the run ended with DataLoader's "worker killed by signal" and no checkpoint.
    """
    from tests.training.conftest import make_dataset

    data = make_dataset(tmp_path / "big", count=200, size=(96, 80))
    out = tmp_path / "run"
    args = [*TRAIN, "--data", str(data), *TINY_ARGS, "--epochs", "50", "--batch-size", "1", "--out", str(out),
            "--no-export", *(["--workers", "1"] if group else [])]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint,
                            start_new_session=group)
    try:
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        for line in proc.stderr:
            if "epoch 1/50" in line or time.monotonic() > deadline:
                break
        time.sleep(0.5)
        os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "--resume" in err and "Traceback" not in err and "worker" not in err
    state = checkpoint.load(out / "last.pt")
    assert state["interrupted"] is True and state["epoch"] == 0
    proc2 = _run([*TRAIN, "--resume", str(out / "last.pt"), "--data", str(tiny_dataset), *TINY_ARGS, "--no-export"])
    assert proc2.returncode == 0, proc2.stderr
    assert checkpoint.load(out / "last.pt")["epoch"] == 1


def test_ctrl_c_during_validation_also_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C after the training steps, while the (slow, full-resolution) validation runs: no traceback."""
    from tests.training.conftest import make_dataset

    data = make_dataset(tmp_path / "data", count=16, size=(96, 80))
    val = make_dataset(tmp_path / "val", count=150, size=(1200, 1000), seed=1)
    out = tmp_path / "run"
    args = [*TRAIN, "--data", str(data), "--val-data", str(val), *TINY_ARGS, "--epochs", "3", "--out", str(out),
            "--no-export"]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_default_sigint)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "epoch 1/3 100.0%" in line:  # the last training step is done; validation starts
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Continue with: python training/train.py --resume" in err
    assert "epoch 1/3: loss" not in err  # it was stopped inside validation, before the epoch's end
    state = checkpoint.load(out / "last.pt")
    assert state["interrupted"] is True and state["epoch"] == 0


@pytest.fixture
def trained(tiny_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--out", str(out), "--no-export"])
    assert proc.returncode == 0, proc.stderr
    return out / "best.pt"


def test_evaluate_json(trained: Path, tiny_dataset: Path) -> None:
    proc = _run([sys.executable, str(REPO / "training" / "evaluate.py"), "--data", str(tiny_dataset),
                 "--checkpoint", str(trained), "--json"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert 0.0 <= result["mean_iou"] <= 1.0
    assert result["count"] == 12
    assert result["per_dataset"][str(tiny_dataset)]["count"] == 12
    assert str(trained) in proc.stderr  # says which model it used


def test_predict_writes_mask_and_composite(trained: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    photo = tiny_dataset / "Images" / "s000.jpg"
    out = tmp_path / "pred"
    cmd = [sys.executable, str(REPO / "training" / "predict.py"), str(photo), "--out", str(out),
           "--checkpoint", str(trained), "--background", "#00ff00"]
    assert _run(cmd).returncode == 0
    from PIL import Image

    with Image.open(out / "s000_mask.png") as mask, Image.open(out / "s000_composite.png") as comp:
        assert mask.mode == "L" and mask.size == comp.size == (72, 56)
    again = _run(cmd)
    assert again.returncode == 1 and "--overwrite" in again.stderr  # never overwrites silently


def test_export_archive_contains_model_and_handler(trained: Path, tmp_path: Path) -> None:
    proc = _run([sys.executable, str(REPO / "training" / "export.py"), "--checkpoint", str(trained),
                 "--model-store", str(tmp_path), "--name", "tiny"])
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "tiny.mar") as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        weights = mar.read("weights.pt")
    assert {"weights.pt", "person_handler.py", "model-config.yaml", "segmenter/model.py",
            "segmenter/inference.py"} <= names
    assert manifest["model"]["handler"] == "person_handler.py"
    assert manifest["model"]["modelName"] == "tiny"
    assert b"optimizer" not in weights  # only weights and config travel
    assert (REPO / "segmenter" / "model.py").read_bytes() == zipfile.ZipFile(tmp_path / "tiny.mar").read(
        "segmenter/model.py")


@pytest.mark.parametrize("encoder", ["none", "efficientnet-lite0"])
def test_torchrun_two_processes(tiny_dataset: Path, tmp_path: Path, encoder: str) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    out = tmp_path / "ddp"
    proc = _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(REPO / "training" / "train.py"),
                 "--data", str(tiny_dataset), *TINY_ARGS, "--encoder", encoder, "--out", str(out), "--no-export"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 process(es)" in proc.stderr
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # only rank 0 writes


def test_init_grows_a_trained_model_deeper_or_wider(trained: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "deeper"
    proc = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--init", str(trained), "--depth", "5",
                 "--out", str(out), "--no-export"])
    assert proc.returncode == 0, proc.stderr
    assert "carried" in proc.stderr and "depth-4, 4-filter model" in proc.stderr and "depth 5" in proc.stderr
    model, config = checkpoint.load_model(out / "best.pt")
    assert config["depth"] == 5 and model.depth == 5
    proc = _run([*TRAIN, "--resume", str(out / "last.pt"), "--epochs", "2"])  # depth comes back on resume
    assert proc.returncode == 0, proc.stderr
    assert "depth 5" in proc.stderr and checkpoint.load(out / "last.pt")["config"]["depth"] == 5
    wider = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--init", str(trained),
                  "--base-filters", "6", "--out", str(tmp_path / "wider"), "--no-export"])
    assert wider.returncode == 0, wider.stderr
    assert "4-filter model" in wider.stderr and "beyond 4 filters" in wider.stderr
    assert checkpoint.load_model(tmp_path / "wider" / "best.pt")[0].base_filters == 6
    narrower = _run([*TRAIN, "--data", str(tiny_dataset), *TINY_ARGS, "--init", str(trained),
                     "--base-filters", "2", "--out", str(tmp_path / "narrower"), "--no-export"])
    assert narrower.returncode == 2 and "--base-filters" in narrower.stderr and "Traceback" not in narrower.stderr
    assert not (tmp_path / "narrower" / "last.pt").exists()
    raw = _run([sys.executable, str(REPO / "training" / "ship.py"), str(trained), "--raw", "--to",
                str(tmp_path / "raw.pt")])
    assert raw.returncode == 2 and "not trained with --ema" in raw.stderr and not (tmp_path / "raw.pt").exists()


def test_ship_writes_slim_weights_with_provenance(trained: Path, tmp_path: Path) -> None:
    dst = tmp_path / "shipped.pt"
    proc = _run([sys.executable, str(REPO / "training" / "ship.py"), str(trained), "--to", str(dst)])
    assert proc.returncode == 0, proc.stderr
    slim = checkpoint.load(dst)
    assert "optimizer" not in slim and slim["config"]["base_filters"] == 4
    assert json.loads(slim["provenance"])["epoch"] == 1
    assert dst.stat().st_size < trained.stat().st_size
    model, _ = checkpoint.load_model(dst)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_ship_image_size_serves_the_weights_at_another_input(trained: Path, tmp_path: Path) -> None:
    """The shipped model may read photos at a measured size other than its training size (MODEL_CARD)."""
    dst = tmp_path / "wide.pt"
    proc = _run([sys.executable, str(REPO / "training" / "ship.py"), str(trained), "--to", str(dst),
                 "--image-size", "96"])
    assert proc.returncode == 0, proc.stderr
    slim, source = checkpoint.load(dst), checkpoint.load(trained)
    assert slim["config"]["image_size"] == 96
    assert json.loads(slim["provenance"])["trained_image_size"] == source["config"]["image_size"]
    assert all(torch.equal(slim["model"][k], v) for k, v in source["model"].items())  # the weights are untouched
    bad = _run([sys.executable, str(REPO / "training" / "ship.py"), str(trained), "--to", str(tmp_path / "bad.pt"),
                "--image-size", "100"])
    assert bad.returncode == 2 and "multiple of 32" in bad.stderr and not (tmp_path / "bad.pt").exists()


def test_ship_half_stores_float16_that_load_as_the_same_model(trained: Path, tmp_path: Path) -> None:
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    for dst, extra in ((full, []), (half, ["--half"])):
        proc = _run([sys.executable, str(REPO / "training" / "ship.py"), str(trained), "--to", str(dst), *extra])
        assert proc.returncode == 0, proc.stderr
    stored = checkpoint.load(half)["model"]
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert json.loads(checkpoint.load(half)["provenance"])["stored"] == "float16"
    assert half.stat().st_size < 0.7 * full.stat().st_size
    (a, _), (b, _) = checkpoint.load_model(full), checkpoint.load_model(half)
    assert next(b.parameters()).dtype == torch.float32  # loading casts back: the code path is unchanged
    x = torch.rand(1, 3, 64, 48)
    with torch.inference_mode():
        assert torch.allclose(torch.sigmoid(a(x)), torch.sigmoid(b(x)), atol=5e-3)


def test_stop_signal_during_a_checkpoint_write_is_taken_after_it(tiny_dataset: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM while torch.save writes (``timeout -s TERM`` in training/gpu_run.sh hit one): no traceback.

    Raised inside the writer, the stop either came out as the zip writer's own RuntimeError (a
    traceback, seen there) or, as here, threw away the epoch just trained (last.pt rolled back to
    "interrupted in epoch 1"). Now it waits for the write, and the trained epoch is kept.
    """
    from training import train

    real_save = torch.save
    sent: list[int] = []

    class StopMidWrite:
        def __init__(self, f) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGTERM)
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, StopMidWrite(f), *a, **k))
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    try:
        code = train.main(["--data", str(tiny_dataset), *TINY_ARGS, "--epochs", "3", "--out", str(out),
                           "--no-export"])
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert sent and code == 143, err
    assert "terminated after epoch 1" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.setattr(torch, "save", real_save)
    state = checkpoint.load(out / "last.pt")
    assert state["epoch"] == 1 and not state.get("interrupted")
    assert checkpoint.load(out / "best.pt")["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
