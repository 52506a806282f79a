"""benchmarks/studies/canvas_quality.py compares three canvases: each must be the one it names."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.studies.canvas_quality import BothCut, SquareCanvas, top_landscape
from segmenter.inference import Segmenter
from segmenter.model import UNet


def _model() -> UNet:
    model = UNet(base_filters=4)
    model.cut_canvas = True  # as EncoderUNet declares
    return model


def test_the_three_canvases() -> None:
    model = _model()
    served, square, both = (cls(model, image_size=64, amp=False) for cls in (Segmenter, SquareCanvas, BothCut))
    portrait, landscape = Image.new("RGB", (100, 400)), Image.new("RGB", (400, 100))
    shape = lambda seg, photo: tuple(seg.model_input([photo])[0].shape[-2:])  # noqa: E731
    assert shape(square, portrait) == shape(square, landscape) == (64, 64)
    assert shape(served, portrait) == shape(both, portrait) == (64, 16)
    assert shape(served, landscape) == (64, 64)  # the band below a landscape stays
    assert shape(both, landscape) == (16, 64)


def test_top_landscape_keeps_photo_and_truth_aligned() -> None:
    truth = np.zeros((400, 300), bool)
    truth[50:400, 80:220] = True
    photo = Image.fromarray(np.where(truth[..., None], 255, 40).astype(np.uint8).repeat(3, 2))
    image, cropped = top_landscape((photo, truth), (photo, truth))
    assert image.size == (300, round(300 * 256 / 352)) and cropped.shape == (image.height, image.width)
    assert ((np.asarray(image.convert("L")) > 147) == cropped).all()
