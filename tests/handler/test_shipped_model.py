"""The archive built from the shipped weights serves the masks ``evaluate.py`` scores.

The session server (tests/conftest.py) serves ``segmenter/weights/person_unet.pt`` through an
archive made by ``training/export.py``. Here ``training/evaluate.py`` runs as users run it, on a
small generated data set, and writes its per-image scores; the same photos go through
TorchServe, and the served masks, scored with the same metric code, must give the same figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.photos import figure_mask, jpeg_bytes, synthetic_photo
from evaluation.metrics import image_metrics
from segmenter.checkpoint import SHIPPED_WEIGHTS
from segmenter.preprocess import THRESHOLD
from tests.conftest import REPO
from tests.handler.served import as_image, post
from training.ship import MAX_COMMITTED_MB

pytestmark = pytest.mark.serve

SIZES_MP = (0.3, 1.0, 2.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shipped-eval")
    (root / "Images").mkdir()
    (root / "Masks").mkdir()
    for i, mp in enumerate(SIZES_MP):
        photo = synthetic_photo(mp, seed=10 + i)
        (root / "Images" / f"p{i}.jpg").write_bytes(jpeg_bytes(photo))
        figure_mask(photo.size).save(root / "Masks" / f"p{i}.png")
    return root


def test_served_masks_score_as_evaluate_py_scores_them(torchserve_server, serving_checkpoint: Path,
                                                        dataset: Path, tmp_path: Path) -> None:
    if serving_checkpoint != SHIPPED_WEIGHTS:
        pytest.skip(f"{SHIPPED_WEIGHTS} is missing: the server runs a stand-in model")
    rows_file = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "training/evaluate.py", "--data", str(dataset), "--json",
                           "--per-image", str(rows_file)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["name"]: r for r in map(json.loads, rows_file.read_text().splitlines())}
    assert sorted(rows) == [f"p{i}" for i in range(len(SIZES_MP))]
    for name, row in rows.items():
        photo = (dataset / "Images" / f"{name}.jpg").read_bytes()
        served = np.asarray(as_image(post(torchserve_server, photo, headers={"Content-Type": "image/jpeg"})))
        truth = np.asarray(figure_mask((served.shape[1], served.shape[0]))) > 0
        got = image_metrics(torch.from_numpy(served >= round(THRESHOLD * 255)), torch.from_numpy(truth))
        # Served and in-process masks may differ by one level (tests/handler/test_serving.py), which can
        # flip a pixel sitting exactly on the threshold: a few pixels out of a million at most.
        assert got["iou"] == pytest.approx(row["iou"], abs=1e-3), name
        assert got["boundary_f"] == pytest.approx(row["boundary_f"], abs=1e-2), name


def test_shipped_weights_fit_the_repository_cap() -> None:
    """Committed weights, the segmenter's and the click network's together, stay under 40 MB; a wider model
    must ship in half precision (``ship.py --half``, ``click_net.py --ship``)."""
    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip(f"{SHIPPED_WEIGHTS} is missing")
    files = sorted(SHIPPED_WEIGHTS.parent.glob("*.pt"))
    assert sum(f.stat().st_size for f in files) / 1e6 <= MAX_COMMITTED_MB, [f.name for f in files]
