"""The model's version: ship.py records it, export.py gives it to the .mar, and the shipped weights carry the
version the model card names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from segmenter import checkpoint
from segmenter.model import build_model
from training import ship

REPO = Path(__file__).resolve().parents[2]
SHIP = [sys.executable, str(REPO / "training" / "ship.py")]
TINY = {"encoder": "none", "base_filters": 4, "image_size": 64}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)


def _training_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = build_model(TINY).state_dict()
    checkpoint.save_atomic({"model": state, "config": dict(TINY), "epoch": 2, "args": {"lr": 1e-3}}, path)
    return state


def _card_version() -> str:
    """The version in docs/MODEL_CARD.md's "Model details" section (the first one written there)."""
    card = (REPO / "docs" / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card.split("## Model details", 1)
    assert len(section) == 2, "docs/MODEL_CARD.md has no '## Model details' section"
    found = re.search(r"person-segmenter (\d+\.\d+\.\d+)", section[1])
    assert found, "the model card's details name no 'person-segmenter X.Y.Z' version"
    return found.group(1)


def test_shipped_weights_carry_the_model_cards_version() -> None:
    shipped = checkpoint.load(checkpoint.SHIPPED_WEIGHTS)
    assert ship.version_of(shipped) == _card_version()


def test_ship_records_the_version_and_says_so(tmp_path: Path) -> None:
    _training_checkpoint(tmp_path / "best.pt")
    proc = _run([*SHIP, str(tmp_path / "best.pt"), "--to", str(tmp_path / "s.pt"), "--version", "2.1.0-rc1"])
    assert proc.returncode == 0, proc.stderr
    assert "version 2.1.0-rc1" in proc.stderr
    shipped = checkpoint.load(tmp_path / "s.pt")
    assert json.loads(shipped["provenance"])["version"] == "2.1.0-rc1"
    assert ship.version_of(shipped) == "2.1.0-rc1"

    unnamed = _run([*SHIP, str(tmp_path / "best.pt"), "--to", str(tmp_path / "u.pt")])
    assert unnamed.returncode == 0, unnamed.stderr
    assert ship.version_of(checkpoint.load(tmp_path / "u.pt")) is None
    assert ship.version_of(checkpoint.load(tmp_path / "best.pt")) is None  # a training checkpoint has none


@pytest.mark.parametrize("bad", ["", "v1", "1.0 beta", "1..0", "latest"])
def test_a_bad_version_is_refused_and_nothing_is_written(tmp_path: Path, bad: str) -> None:
    _training_checkpoint(tmp_path / "best.pt")
    proc = _run([*SHIP, str(tmp_path / "best.pt"), "--to", str(tmp_path / "s.pt"), "--version", bad])
    assert proc.returncode == 2
    assert "--version" in proc.stderr and "numbers and dots" in proc.stderr
    assert not (tmp_path / "s.pt").exists()


def test_provenance_only_changes_the_version_and_nothing_else(tmp_path: Path) -> None:
    _training_checkpoint(tmp_path / "best.pt")
    assert _run([*SHIP, str(tmp_path / "best.pt"), "--to", str(tmp_path / "s.pt"), "--half"]).returncode == 0
    before = checkpoint.load(tmp_path / "s.pt")

    proc = _run([*SHIP, str(tmp_path / "s.pt"), "--version", "1.2.3", "--provenance-only"])
    assert proc.returncode == 0, proc.stderr
    after = checkpoint.load(tmp_path / "s.pt")
    assert after["config"] == before["config"]
    assert after["model"].keys() == before["model"].keys()
    for k, v in before["model"].items():
        assert after["model"][k].dtype == v.dtype and torch.equal(after["model"][k], v), k
    old, new = json.loads(before["provenance"]), json.loads(after["provenance"])
    assert new.pop("version") == "1.2.3"
    assert new == old

    refused = _run([*SHIP, str(tmp_path / "s.pt"), "--version", "one", "--provenance-only"])
    assert refused.returncode == 2
    assert json.loads(checkpoint.load(tmp_path / "s.pt")["provenance"])["version"] == "1.2.3"
    training_ckpt = _run([*SHIP, str(tmp_path / "best.pt"), "--version", "1.0.0", "--provenance-only"])
    assert training_ckpt.returncode == 2 and "no provenance" in training_ckpt.stderr
    assert _run([*SHIP, str(tmp_path / "s.pt"), "--provenance-only"]).returncode == 2  # needs --version


def _mar_version(mar: Path) -> str:
    with zipfile.ZipFile(mar) as z:
        return json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]


def test_export_takes_the_checkpoints_version_unless_told(tmp_path: Path) -> None:
    if shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torch-model-archiver is not installed in this Python's environment (run `make setup`)")
    from training.export import FALLBACK_VERSION, export_archive

    _training_checkpoint(tmp_path / "best.pt")
    shipped = _run([*SHIP, str(tmp_path / "best.pt"), "--to", str(tmp_path / "s.pt"), "--version", "3.0.1"])
    assert shipped.returncode == 0, shipped.stderr
    store = tmp_path / "store"
    assert _mar_version(export_archive(tmp_path / "s.pt", store, name="named")) == "3.0.1"
    assert _mar_version(export_archive(tmp_path / "s.pt", store, name="told", version="9.9")) == "9.9"
    assert _mar_version(export_archive(tmp_path / "best.pt", store, name="run")) == FALLBACK_VERSION
    with pytest.raises(ValueError, match="numbers and dots"):
        export_archive(tmp_path / "s.pt", store, name="bad", version="x y")
    assert not (store / "bad.mar").exists()
