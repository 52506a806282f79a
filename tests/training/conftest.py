"""A tiny generated data set (bright ellipse 'people' on noisy backgrounds) for fast real training runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def make_dataset(root: Path, count: int = 12, size: tuple[int, int] = (72, 56), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Masks").mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(count):
        bg = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(bg)
        mask = Image.new("L", size, 0)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        box = (x0, y0, x0 + int(rng.integers(w // 4, w // 2)), y0 + int(rng.integers(h // 4, h // 2)))
        ImageDraw.Draw(img).ellipse(box, fill=(230, 180, 150))
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        img.save(root / "Images" / f"s{i:03d}.jpg", quality=95)
        mask.save(root / "Masks" / f"s{i:03d}.png")
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


TINY_ARGS = ["--encoder", "none", "--epochs", "1", "--batch-size", "2", "--base-filters", "4", "--image-size", "64",
             "--workers", "0", "--val-fraction", "0.25", "--preview-count", "2"]
