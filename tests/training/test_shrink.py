"""training/shrink.py: a reduced copy that trains like the original and never touches the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmenter.imaging import load_image, load_mask
from tests.training.conftest import TINY_ARGS, make_dataset
from training import shrink, train
from training.data import find_pairs


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def big_dataset(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "big", count=6, size=(400, 300))
    (root / "split.tsv").write_text("s000\ttest\n")
    return root


def test_copy_is_reduced_binary_and_keeps_names(big_dataset: Path, tmp_path: Path) -> None:
    before = _snapshot(big_dataset)
    out = tmp_path / "small"
    assert shrink.main([str(big_dataset), "--out", str(out), "--long-side", "100"]) == 0
    assert _snapshot(big_dataset) == before, "the source must only be read"
    pairs = find_pairs([out])
    assert sorted(p.name for p in pairs) == [f"s{i:03d}" for i in range(6)]
    assert (out / "split.tsv").read_text() == "s000\ttest\n"
    for pair in pairs:
        photo, mask = load_image(pair.image), load_mask(pair.mask)
        assert photo.size == (100, 75)
        assert mask.shape == (75, 100)
        # The reduced mask covers the same share of the frame as the original (area-averaged, cut at half).
        original = load_mask(big_dataset / "Masks" / pair.mask.name)
        assert abs(mask.mean() - original.mean()) < 0.02
        assert set(np.unique(np.asarray(Image.open(pair.mask)))) <= {0, 255}


def test_small_photos_are_not_enlarged(big_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "same"
    assert shrink.main([str(big_dataset), "--out", str(out), "--long-side", "1000", "--format", "png"]) == 0
    for pair in find_pairs([out]):
        assert pair.image.suffix == ".png"
        assert load_image(pair.image).size == (400, 300)
        assert np.array_equal(load_mask(pair.mask), load_mask(big_dataset / "Masks" / pair.mask.name))


def test_exif_rotated_photo_is_written_upright(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "rot", count=2, size=(120, 80))
    photo = Image.open(root / "Images" / "s000.jpg")
    upright = load_image(root / "Images" / "s000.jpg")
    # Store the pixels turned on their side with orientation 6 (rotate 90 CW to view), mask upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(root / "Images" / "s000.jpg", exif=exif, quality=95)
    out = tmp_path / "rot-small"
    assert shrink.main([str(root), "--out", str(out), "--long-side", "60"]) == 0
    copy = Image.open(out / "Images" / "s000.jpg")
    assert copy.size == (60, 40) and copy.getexif().get(0x0112, 1) == 1
    assert np.abs(np.asarray(copy, np.float32) - np.asarray(upright.resize((60, 40)), np.float32)).mean() < 12


@pytest.mark.parametrize("where", ["inside", "same", "not-empty"])
def test_refuses_an_unsafe_output_folder(big_dataset: Path, tmp_path: Path, where: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = {"inside": big_dataset / "small", "same": big_dataset, "not-empty": tmp_path / "busy"}[where]
    if where == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = _snapshot(big_dataset)
    assert shrink.main([str(big_dataset), "--out", str(out)]) == 2
    assert str(out.resolve()) in capsys.readouterr().err
    assert _snapshot(big_dataset) == before
    if where == "not-empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_photo_broken_mid_copy_leaves_no_half_copy(big_dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = (big_dataset / "Images" / "s004.jpg").read_bytes()
    (big_dataset / "Images" / "s004.jpg").write_bytes(good[: len(good) // 3])  # header fine, data cut
    out = tmp_path / "small"
    assert shrink.main([str(big_dataset), "--out", str(out), "--long-side", "100"]) == 2
    assert "s004.jpg" in capsys.readouterr().err
    assert not out.exists()


def test_training_runs_on_the_copy(big_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    assert shrink.main([str(big_dataset), "--out", str(out), "--long-side", "96"]) == 0
    run = tmp_path / "run"
    assert train.main(["--data", str(out), *TINY_ARGS, "--out", str(run), "--no-export"]) == 0
    assert (run / "best.pt").is_file()
