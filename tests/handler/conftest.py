"""In-process handler fixtures shared by the handler tests (test_handler.py, test_corpus.py, ...).

``handler`` serves a tiny random U-Net (fast; its masks mean nothing); ``stub_handler`` swaps in
``BrightnessModel``, whose "person" is whatever is bright, so a test knows where the mask must be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from handler.person_handler import PersonSegmenterHandler
from segmenter.inference import Segmenter
from segmenter.preprocess import MEAN, STD
from tests.conftest import build_tiny_checkpoint
from tests.handler.fakes import worker_context


class BrightnessModel(nn.Module):
    """A stand-in 'network' whose person is whatever is bright: makes the expected mask known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1] * STD[0] + MEAN[0]  # undo the normalisation: [0, 1] brightness
        return (red - 0.5) * 40.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model_dir")
    build_tiny_checkpoint(d / "weights.pt")
    return d


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> PersonSegmenterHandler:
    h = PersonSegmenterHandler()
    h.initialize(worker_context(model_dir))
    return h


@pytest.fixture(scope="module")
def stub_handler(model_dir: Path) -> PersonSegmenterHandler:
    h = PersonSegmenterHandler()
    h.initialize(worker_context(model_dir))
    h.segmenter = Segmenter(BrightnessModel(), 96, "cpu", amp=False)
    return h
