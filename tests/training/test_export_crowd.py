"""The archive and the crowd network: shipped with the shipped weights, named for one's own, refused when it
would be fed wrongly, left out when asked."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from segmenter import checkpoint, crowd
from tests.conftest import build_tiny_checkpoint


@pytest.fixture(autouse=True)
def _archiver() -> None:
    if shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torch-model-archiver is not installed in this Python's environment (run `make setup`)")


def files(mar: Path) -> set[str]:
    with zipfile.ZipFile(mar) as z:
        return set(z.namelist())


def test_own_weights_carry_a_crowd_network_only_when_one_is_named(tmp_path: Path) -> None:
    from training.export import CROWD_NAME, export_archive

    own = build_tiny_checkpoint(tmp_path / "own.pt")
    store = tmp_path / "store"
    assert CROWD_NAME not in files(export_archive(own, store, name="alone"))
    named = build_tiny_checkpoint(tmp_path / "crowd.pt", seed=1)
    mar = export_archive(own, store, name="with", crowd_net=named)
    assert CROWD_NAME in files(mar)
    with zipfile.ZipFile(mar) as z, z.open(CROWD_NAME) as f:
        (tmp_path / "out.pt").write_bytes(f.read())
    assert checkpoint.load(tmp_path / "out.pt")["config"] == checkpoint.load(named)["config"]


def test_a_crowd_network_of_another_input_size_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    from training.export import export_archive

    own = build_tiny_checkpoint(tmp_path / "own.pt")
    other = checkpoint.load(build_tiny_checkpoint(tmp_path / "other.pt", seed=1))
    checkpoint.save_atomic({**other, "config": {**other["config"], "image_size": 999}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="needs the main network's image_size"):
        export_archive(own, tmp_path / "store", name="bad", crowd_net=tmp_path / "other.pt")
    assert not (tmp_path / "store" / "bad.mar").exists()


@pytest.mark.skipif(not crowd.SHIPPED_CROWD.is_file(), reason="no shipped crowd network in this checkout")
def test_the_shipped_weights_carry_the_shipped_crowd_network_unless_told_not_to(tmp_path: Path) -> None:
    from training.export import CROWD_NAME, export_archive

    store = tmp_path / "store"
    assert CROWD_NAME in files(export_archive(checkpoint.SHIPPED_WEIGHTS, store, name="shipped"))
    assert CROWD_NAME not in files(export_archive(checkpoint.SHIPPED_WEIGHTS, store, name="bare", crowd_net=False))
