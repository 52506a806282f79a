"""Full-resolution masks: aligned with the photo, and edges that follow the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmenter import refine
from segmenter.inference import Segmenter
from segmenter.model import EncoderUNet, UNet
from segmenter.preprocess import canvas_size, letterbox, normalize
from segmenter.refine import bilinear_upsample, guided_upsample


def _photo_with_square(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    arr = np.full((h, w, 3), 30, dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 220
    return Image.fromarray(arr)


def test_guided_edge_snaps_to_photo_edge() -> None:
    w, h = 800, 600
    box = (301, 151, 553, 437)  # edges not on the low-res grid
    photo = _photo_with_square(w, h, box)
    truth = np.zeros((h, w), bool)
    truth[box[1]:box[3], box[0]:box[2]] = True
    low = torch.from_numpy(np.asarray(photo.convert("L").resize((64, 48), Image.Resampling.BOX)) > 125).float()
    errors = {}
    for name, fn in (("guided", guided_upsample), ("bilinear", bilinear_upsample)):
        full = fn(low, photo) >= 128
        assert full.shape == (h, w)
        errors[name] = int((full != truth).sum())
    assert errors["guided"] < errors["bilinear"] / 2, errors


def test_letterbox_keeps_aspect_and_top_left() -> None:
    tensor, (cw, ch) = letterbox(Image.new("RGB", (400, 100), (255, 0, 0)), 64)
    assert tensor.shape == (3, 64, 64) and (cw, ch) == (64, 16)
    assert tensor[0, :16].float().mean() > 250 and tensor[:, 16:].max() == 0


def test_canvas_cuts_only_the_band_right_of_a_portrait() -> None:
    assert canvas_size(264, 352, 32) == (352, 288)  # a 3:4 portrait at 352 px: (height, width)
    assert canvas_size(235, 352, 32) == (352, 256)  # 2:3
    assert canvas_size(352, 352, 32) == (352, 352)  # a landscape keeps the black band below it
    assert canvas_size(340, 352, 32) == (352, 352)  # never wider than the square


def _cut_canvas_unet() -> UNet:
    model = UNet(base_filters=4)
    model.cut_canvas = True  # as EncoderUNet declares
    return model


def test_model_input_cuts_the_canvas_for_networks_that_declare_it() -> None:
    """A portrait runs on a narrow canvas, not the full square: the padding beside it is work saved.
    Networks that do not declare ``cut_canvas`` (the from-scratch U-Net) keep the square."""
    assert EncoderUNet.cut_canvas and not getattr(UNet(base_filters=4), "cut_canvas", False)
    seg = Segmenter(_cut_canvas_unet(), image_size=64, amp=False)
    batch, sizes = seg.model_input([Image.new("RGB", (100, 400), (255, 0, 0))])
    assert sizes == [(16, 64)]
    assert tuple(batch.shape) == (1, 3, 64, 16)  # UNet(depth 4) steps by 16
    batch, _ = seg.model_input([Image.new("RGB", (110, 400))])
    assert tuple(batch.shape) == (1, 3, 64, 32)  # 18 columns of photo: rounded up, black beside
    batch, _ = seg.model_input([Image.new("RGB", (400, 100))])
    assert tuple(batch.shape) == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="different sizes"):
        seg.model_input([Image.new("RGB", (100, 400)), Image.new("RGB", (400, 100))])
    square = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    assert tuple(square.model_input([Image.new("RGB", (100, 400))])[0].shape) == (1, 3, 64, 64)


def test_mixed_canvases_in_one_batch_equal_one_at_a_time() -> None:
    """A portrait and a landscape in one call take separate forward passes: each mask is exactly
    what the photo gets alone, so a served mask never depends on the requests batched with it."""
    torch.manual_seed(1)
    seg = Segmenter(_cut_canvas_unet(), image_size=64, amp=False)
    rng = np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in ((40, 70), (90, 60))]
    for photo, prob in zip(photos, seg.predict_lowres(photos), strict=True):
        torch.testing.assert_close(prob, seg.predict_lowres([photo])[0], atol=0, rtol=0)


def test_square_and_cut_down_canvas_agree_for_a_trained_model() -> None:
    """The cut-down canvas only removes black padding the shipped network ignores: its masks match the
    full square's (the validation IoU is the same to 4 decimals, docs/BENCHMARKS.md)."""
    seg = Segmenter.from_checkpoint(device="cpu", amp=False)
    photo = Image.open(Path(__file__).parents[1] / "gimp" / "data" / "astronaut.jpg").convert("RGB")
    photo = photo.crop((64, 0, 448, 512))  # a 3:4 portrait of a real person
    (cut,) = seg.predict_lowres([photo])
    tensor, (w, h) = letterbox(photo, seg.image_size)
    assert (h, w) != (seg.image_size, seg.image_size) and seg.model_input([photo])[0].shape[-2:] != tensor.shape[-2:]
    with torch.inference_mode():
        square = torch.sigmoid(seg.model(normalize(tensor[None]).contiguous(memory_format=torch.channels_last)))
    square = square[0, 0, :h, :w]
    assert ((cut >= 0.5) != (square >= 0.5)).float().mean() < 0.002
    assert (cut - square).abs().mean() < 0.005


def test_predict_returns_one_mask_per_photo_at_full_size() -> None:
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    photos = [Image.new("RGB", (123, 77)), Image.new("RGB", (50, 90))]
    masks = seg.predict(photos)
    assert [m.shape for m in masks] == [(77, 123), (90, 50)]
    assert all(m.dtype == np.uint8 for m in masks)


def test_batched_equals_single() -> None:
    torch.manual_seed(0)
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in ((90, 60), (40, 70))]
    batched = seg.predict(photos)
    for photo, mask in zip(photos, batched, strict=True):
        assert np.abs(seg.predict_one(photo).astype(int) - mask.astype(int)).max() <= 1


def _mirror(photo: Image.Image) -> Image.Image:
    return photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@pytest.mark.parametrize("size", [(90, 60), (40, 70)])
def test_flip_tta_averages_the_photo_and_its_mirror(size: tuple[int, int]) -> None:
    """``tta="flip"`` is the mean of the plain pass and the mirrored pass mirrored back, for a
    network that is not mirror-symmetric; so it is also symmetric itself. Padding on the right
    (wide photos) or bottom (tall ones) must stay where it is: mirroring the whole square would
    break the second equality."""
    torch.manual_seed(3)
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    (plain,) = seg.predict_lowres([photo])
    (mirrored,) = seg.predict_lowres([_mirror(photo)])
    (both,) = seg.predict_lowres([photo], tta="flip")
    assert not torch.allclose(plain, mirrored.flip(-1), atol=1e-3)  # the network alone is not symmetric
    torch.testing.assert_close(both, (plain + mirrored.flip(-1)) / 2, atol=1e-5, rtol=0)
    (both_of_mirror,) = seg.predict_lowres([_mirror(photo)], tta="flip")
    torch.testing.assert_close(both_of_mirror, both.flip(-1), atol=1e-5, rtol=0)


def test_flip_tta_in_a_batch_equals_one_at_a_time() -> None:
    torch.manual_seed(4)
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    rng = np.random.default_rng(5)
    photos = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in ((90, 60), (40, 70))]
    batched = seg.predict(photos, tta="flip")
    for photo, mask in zip(photos, batched, strict=True):
        assert np.abs(seg.predict_one(photo, tta="flip").astype(int) - mask.astype(int)).max() <= 1


def test_unknown_tta_is_a_clear_error() -> None:
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    with pytest.raises(ValueError, match="unknown tta 'rotate'; expected one of: none, flip"):
        seg.predict_lowres([Image.new("RGB", (20, 20))], tta="rotate")


def _whole_frame_guided(prob: torch.Tensor, photo: Image.Image) -> np.ndarray:
    """Reference: the same coefficients upsampled to full size at once by F.interpolate, then applied."""
    coeffs = refine.with_levels(refine.fit(prob, photo))
    full = torch.nn.functional.interpolate(coeffs[None], size=(photo.height, photo.width), mode="bilinear",
                                           align_corners=False)[0]
    guide = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
    return refine.to_uint8((full[:3] * guide).sum(0) + full[3])


@pytest.mark.parametrize("size", [(517, 389), (64, 1000), (1000, 17)])
def test_banded_application_equals_whole_frame(size: tuple[int, int]) -> None:
    """Band edges, odd sizes and extreme aspect ratios must not show in the mask."""
    rng = np.random.default_rng(1)
    w, h = size
    photo = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).resize((w, h))
    prob = torch.from_numpy(rng.random((max(1, h // 8), max(1, w // 8)), dtype=np.float32))
    banded = refine.guided_upsample(prob, photo)
    assert banded.shape == (h, w) and banded.dtype == np.uint8
    assert np.abs(banded.astype(int) - _whole_frame_guided(prob, photo).astype(int)).max() <= 1


@pytest.mark.parametrize("r", [1, 4, 15, 30])
def test_box_filter_is_the_clipped_window_mean(r: int) -> None:
    """Windows clipped at both ends, and windows wider than the whole image (r >= side)."""
    rng = np.random.default_rng(2)
    x = rng.random((1, 2, 23, 31)).astype(np.float32)
    got = refine._box(torch.from_numpy(x), r).numpy()
    for y, xx in ((0, 0), (11, 15), (22, 30), (3, 29), (0, 30), (22, 0)):
        window = x[0, :, max(0, y - r):y + r + 1, max(0, xx - r):xx + r + 1]
        np.testing.assert_allclose(got[0, :, y, xx], window.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["guided", "bilinear"])
def test_levels_clear_the_haze_and_keep_the_threshold(method: str) -> None:
    """Unsure background (p < 0.25) becomes 0, sure person (p > 0.75) 255, and p = 0.5 stays the cut."""
    photo = Image.new("RGB", (200, 100), (90, 120, 60))  # flat guide: the guided filter reproduces p
    for p, expected in ((0.1, 0), (0.24, 0), (0.76, 255), (0.9, 255), (0.5, 128), (0.375, 64)):
        mask = refine.upsample(torch.full((10, 20), p), photo, method)
        assert np.abs(mask.astype(int) - expected).max() <= 1, (p, np.unique(mask))
    # on a varied map (a left-to-right ramp with noise), the person/background decision at 0.5 is
    # the one without levels, and more pixels are decided outright (0 or 255)
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, 50, dtype=np.float32)[None].repeat(25, 0)
    prob = torch.from_numpy(np.clip(ramp + rng.normal(0, 0.1, ramp.shape).astype(np.float32), 0, 1))
    photo = Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
    if method == "guided":
        with_levels, plain = guided_upsample(prob, photo), guided_upsample(prob, photo, levels=(0.0, 1.0))
    else:
        with_levels, plain = bilinear_upsample(prob, photo), bilinear_upsample(prob, photo, levels=(0.0, 1.0))
    disagree = (with_levels >= 128) != (plain >= 128)
    assert disagree.mean() < 0.002  # only rounding at exactly 127.5 may differ
    assert ((with_levels == 0) | (with_levels == 255)).mean() > ((plain == 0) | (plain == 255)).mean()


def test_levels_must_be_an_increasing_pair_in_0_1() -> None:
    coeffs = torch.zeros(4, 3, 3)
    for bad in ((0.6, 0.4), (0.5, 0.5), (-0.1, 0.9), (0.1, 1.2)):
        with pytest.raises(ValueError, match="levels"):
            refine.with_levels(coeffs, bad)
