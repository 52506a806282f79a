"""training/soup.py: the mean of several runs' weights, written only when every input fits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from segmenter import checkpoint
from segmenter.model import build_model

REPO = Path(__file__).resolve().parents[2]
SOUP = [sys.executable, str(REPO / "training" / "soup.py")]
SHIP = [sys.executable, str(REPO / "training" / "ship.py")]
TINY = {"encoder": "none", "base_filters": 4, "image_size": 64}


def _save(path: Path, seed: int, config: dict = TINY, half: bool = False, **extra) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():  # distinct running statistics too, so their mean is checked as well
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    checkpoint.save_atomic({"model": state, "config": dict(config), **extra}, path)
    return state


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_soup_is_the_mean_of_the_inputs_and_ships(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", 1, epoch=3, best_iou=0.5)
    b = _save(tmp_path / "b.pt", 2, config={**TINY, "image_size": 96}, half=True)  # a shipped-style float16 file
    proc = _run([*SOUP, str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--to", str(tmp_path / "ab.pt")])
    assert proc.returncode == 0, proc.stderr
    out = checkpoint.load(tmp_path / "ab.pt")
    assert out["config"]["image_size"] == 64  # the first input's size; ship.py --image-size chooses the served one
    for k, v in a.items():
        if v.is_floating_point():
            assert out["model"][k].dtype == torch.float32
            assert torch.allclose(out["model"][k], (v.double() + b[k].double()).float() / 2, atol=1e-6), k
        else:
            assert torch.equal(out["model"][k], v), k
    model, _ = checkpoint.load_model(tmp_path / "ab.pt")
    assert model(torch.rand(1, 3, 64, 48)).shape == (1, 1, 64, 48)

    shipped = _run([*SHIP, str(tmp_path / "ab.pt"), "--to", str(tmp_path / "s.pt"), "--half"])
    assert shipped.returncode == 0, shipped.stderr
    assert "the mean of 2 checkpoints" in shipped.stderr
    provenance = json.loads(checkpoint.load(tmp_path / "s.pt")["provenance"])
    assert provenance["weights"] == "soup"
    assert [i["path"] for i in provenance["soup"]] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert provenance["soup"][0]["epoch"] == 3 and provenance["soup"][1]["image_size"] == 96


def test_a_different_network_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    _save(tmp_path / "a.pt", 1)
    _save(tmp_path / "wide.pt", 2, config={**TINY, "base_filters": 8})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for other, words in (("wide.pt", "a different network"), ("junk.pt", "not a readable checkpoint"),
                         ("missing.pt", "checkpoint not found")):
        proc = _run([*SOUP, str(tmp_path / "a.pt"), str(tmp_path / other), "--to", str(tmp_path / "ab.pt")])
        assert proc.returncode == 2, proc.stderr
        assert str(tmp_path / other) in proc.stderr and words in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "ab.pt").exists()
    one = _run([*SOUP, str(tmp_path / "a.pt"), "--to", str(tmp_path / "ab.pt")])
    assert one.returncode == 2 and "at least two" in one.stderr


def test_same_names_but_other_shapes_are_refused(tmp_path: Path) -> None:
    state = _save(tmp_path / "a.pt", 1)
    key = next(k for k, v in state.items() if v.ndim == 4)
    bad = dict(state, **{key: torch.zeros(1, 1, 1, 1)})
    checkpoint.save_atomic({"model": bad, "config": dict(TINY)}, tmp_path / "b.pt")
    proc = _run([*SOUP, str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--to", str(tmp_path / "ab.pt")])
    assert proc.returncode == 2 and "do not match" in proc.stderr and not (tmp_path / "ab.pt").exists()
