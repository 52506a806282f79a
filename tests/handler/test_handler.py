"""The TorchServe handler in-process, on TorchServe's own Context: every mode, format, input kind and error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from handler.person_handler import CROWD_NAME, PersonSegmenterHandler, torch_threads
from segmenter import imaging
from segmenter.inference import Segmenter
from tests.conftest import build_tiny_checkpoint
from tests.handler import images
from tests.handler.conftest import BrightnessModel
from tests.handler.fakes import form, raw, run, worker_context

# Fixtures ``handler`` and ``stub_handler``: tests/handler/conftest.py. Bad and odd input files
# (empty, truncated, bombs, CMYK, 16-bit, EXIF-rotated, ...): tests/corpus via test_corpus.py.

PNG = images.encode(images.subject_photo())


# --- modes and formats --------------------------------------------------------------------------

def test_mask_is_greyscale_png_at_input_size(handler: PersonSegmenterHandler) -> None:
    (a,) = run(handler, [raw(PNG)])
    img = a.image()
    assert a.content_type == "image/png" and img.format == "PNG" and img.mode == "L"
    assert img.size == images.SUBJECT_SIZE
    assert a.headers["X-Image-Size"] == "360x240"


def test_mask_equals_segmenter_predict(handler: PersonSegmenterHandler) -> None:
    photo = imaging.decode_image(PNG)
    for refine in ("guided", "bilinear"):
        (a,) = run(handler, [form(PNG, refine=refine)])
        expected = handler.segmenter.predict([photo], refine=refine)[0]
        np.testing.assert_array_equal(np.asarray(a.image()), expected)


def test_tta_flip_equals_segmenter_predict_in_a_mixed_batch(handler: PersonSegmenterHandler) -> None:
    """Requests with and without ``tta`` share a batch; each gets its own kind of pass."""
    other = images.encode(images.noise_photo((130, 170), seed=2))
    answers = run(handler, [form(PNG, tta="flip"), raw(PNG), raw(other)], [{}, {}, {"X-TTA": "FLIP"}])
    photos = [imaging.decode_image(d) for d in (PNG, PNG, other)]
    for a, photo, tta in zip(answers, photos, ("flip", "none", "flip"), strict=True):
        expected = handler.segmenter.predict([photo], tta=tta)[0]
        assert np.abs(np.asarray(a.image()).astype(int) - expected.astype(int)).max() <= 1, tta
    assert not np.array_equal(np.asarray(answers[0].image()), np.asarray(answers[1].image()))


def test_known_subject_lands_where_it_is(stub_handler: PersonSegmenterHandler) -> None:
    """With a 'model' that calls bright pixels person, the full-resolution mask is the rectangle."""
    x0, y0, x1, y1 = images.SUBJECT_BOX
    for refine in ("guided", "bilinear"):
        (a,) = run(stub_handler, [raw(PNG)], [{"X-Refine": refine}])
        mask = np.asarray(a.image())
        inside = mask[y0 + 6:y1 - 6, x0 + 6:x1 - 6]
        outside = np.ones_like(mask, bool)
        outside[y0 - 6:y1 + 6, x0 - 6:x1 + 6] = False
        # the guided filter lets the photo's texture through a little: allow it, not a wrong place
        assert inside.min() >= 220 and inside.mean() >= 250, (refine, inside.min(), inside.mean())
        assert mask[outside].max() <= 48 and mask[outside].mean() <= 2, (refine, mask[outside].max())
        # the 50% contour is within 2 px of the true edge on every side
        rows, cols = np.nonzero(mask >= 128)
        assert abs(cols.min() - x0) <= 2 and abs(cols.max() + 1 - x1) <= 2
        assert abs(rows.min() - y0) <= 2 and abs(rows.max() + 1 - y1) <= 2


def test_cutout_is_photo_with_mask_as_alpha(handler: PersonSegmenterHandler) -> None:
    """With the edge stage off; with it on, test_edge_stage_is_on_by_default_and_removes_the_fringe."""
    (mask_answer, cut) = run(handler, [raw(PNG), form(PNG, mode="cutout", matting="off")])
    img = cut.image()
    assert cut.content_type == "image/png" and img.mode == "RGBA" and img.size == images.SUBJECT_SIZE
    arr = np.asarray(img)
    np.testing.assert_array_equal(arr[..., :3], np.asarray(images.subject_photo()))
    np.testing.assert_array_equal(arr[..., 3], np.asarray(mask_answer.image()))


def test_composite_on_colour_blends_exactly(handler: PersonSegmenterHandler) -> None:
    (m, c) = run(handler, [raw(PNG), form(PNG, mode="composite", background="#204080")], [{}, {"X-Matting": "OFF"}])
    alpha = np.asarray(m.image()).astype(np.float32)[..., None] / 255
    fg = np.asarray(images.subject_photo(), dtype=np.float32)
    expected = np.clip(np.array([0x20, 0x40, 0x80]) + (fg - np.array([0x20, 0x40, 0x80])) * alpha + 0.5, 0, 255)
    got = np.asarray(c.image())
    assert c.image().mode == "RGB" and got.shape == fg.shape
    assert np.abs(got.astype(int) - expected.astype(np.uint8).astype(int)).max() <= 1


@pytest.mark.parametrize("fields,headers", [
    ({"mode": "composite"}, {}),
    ({"mode": "composite", "background": "blur"}, {}),
    ({"mode": "composite", "background": "blur", "blur_radius": "7.5"}, {}),
    ({"mode": "composite", "background": "transparent"}, {}),
    ({}, {"X-Mode": "composite", "X-Background": "#abc"}),
    ({}, {"X-Mode": "composite", "X-Background": "blur", "X-Format": "jpeg", "X-Quality": "80"}),
])
def test_composite_variants(handler: PersonSegmenterHandler, fields: dict, headers: dict) -> None:
    (a,) = run(handler, [form(PNG, **fields) if fields else raw(PNG)], [headers])
    img = a.image()
    assert img.size == images.SUBJECT_SIZE
    transparent = fields.get("background") == "transparent"
    jpeg = headers.get("X-Format") == "jpeg"
    assert img.mode == ("RGBA" if transparent else "RGB")
    assert a.content_type == ("image/jpeg" if jpeg else "image/png") and img.format == ("JPEG" if jpeg else "PNG")


def _green_screen_photo() -> tuple[bytes, np.ndarray, np.ndarray]:
    """(PNG, soft true matte, the person's own colours): a bright 'person' (the stub model's kind) put onto
    green through a blurred edge, so that edge pixels are the mix a camera records."""
    w, h = images.SUBJECT_SIZE
    x0, y0, x1, y1 = images.SUBJECT_BOX
    hard = Image.new("L", (w, h), 0)
    hard.paste(255, (x0, y0, x1, y1))
    matte = np.asarray(hard.filter(ImageFilter.GaussianBlur(1.5)), np.float32)[..., None] / 255
    person = np.asarray(images.subject_photo(box=(0, 0, w, h)), np.float32)  # bright everywhere: the matte decides
    photo = person * matte + np.float32([0, 177, 64]) * (1 - matte)
    return images.encode(Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8))), matte, person


def test_edge_stage_is_on_by_default_and_removes_the_fringe(stub_handler: PersonSegmenterHandler) -> None:
    """The served composite onto white against the ideal (the person through the same matte on white), in
    the band around the outline: the edge stage (default) against ``matting=off``, the plain blend. The
    cut-out carries the stage's matte and colours: blending it gives the composite."""
    data, matte, person = _green_screen_photo()
    on, off, cut = run(stub_handler, [form(data, mode="composite"), form(data, mode="composite", matting="off"),
                                      form(data, mode="cutout")])
    ideal = person * matte + 255 * (1 - matte)
    band = (matte[..., 0] > 0.02) & (matte[..., 0] < 0.98)
    errors = {name: float(np.abs(np.asarray(a.image(), np.float32)[band] - ideal[band]).mean())
              for name, a in (("on", on), ("off", off))}
    assert errors["on"] < 0.6 * errors["off"], errors
    rgba = np.asarray(cut.image(), np.float32)
    blended = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    assert np.abs(blended - np.asarray(on.image(), np.float32)).max() <= 1.0
    assert 0 < np.count_nonzero((rgba[..., 3] > 0) & (rgba[..., 3] < 255))


def test_uploaded_background_covers_the_photo(stub_handler: PersonSegmenterHandler) -> None:
    """A background of another size and aspect is scaled to cover and centre-cropped."""
    bg = Image.new("RGB", (100, 400), (0, 200, 0))
    bg.paste((200, 0, 0), (0, 150, 100, 250))  # a red band across the middle
    (a,) = run(stub_handler, [form(PNG, mode="composite", background=images.encode(bg, "JPEG", quality=95))])
    out = np.asarray(a.image()).astype(int)
    assert out.shape == (240, 360, 3)
    x0, y0, x1, y1 = images.SUBJECT_BOX
    # the person stays the photo (a soft mask lets a trace of the background through)
    np.testing.assert_allclose(out[y0 + 6:y1 - 6, x0 + 6:x1 - 6].mean((0, 1)),
                               np.asarray(images.subject_photo())[y0 + 6:y1 - 6, x0 + 6:x1 - 6].mean((0, 1)), atol=6)
    corner = out[:30, :30].reshape(-1, 3).mean(0)  # covered by the red band (scaled x3.6, cropped)
    assert corner[0] > 150 and corner[1] < 60


def test_field_wins_over_header_and_values_are_case_insensitive(handler: PersonSegmenterHandler) -> None:
    (a,) = run(handler, [form(PNG, mode="CUTOUT")], [{"X-Mode": "mask"}])
    assert a.image().mode == "RGBA"
    (b,) = run(handler, [raw(PNG)], [{"x-mode": "cutout"}])  # header names are case-insensitive
    assert b.image().mode == "RGBA"


@pytest.mark.parametrize("name", sorted(images.input_variants()))
def test_every_input_kind_is_read(handler: PersonSegmenterHandler, name: str) -> None:
    (a,) = run(handler, [raw(images.input_variants()[name])])
    assert a.image().size == (64, 48), name


def test_zoom_equals_segmenter_predict_in_a_mixed_batch(handler: PersonSegmenterHandler) -> None:
    """Each request gets the zoom it asked for, batched with others; "on" differs from "off"."""
    answers = run(handler, [form(PNG, zoom="on"), raw(PNG), raw(PNG)], [{}, {"X-Zoom": "off"}, {}])
    photo = imaging.decode_image(PNG)
    for a, zoom in zip(answers, ("on", "off", "auto"), strict=True):
        expected = handler.segmenter.predict([photo], zoom=zoom)[0]
        assert np.abs(np.asarray(a.image()).astype(int) - expected.astype(int)).max() <= 1, zoom
    assert not np.array_equal(np.asarray(answers[0].image()), np.asarray(answers[1].image()))


class Everyone(torch.nn.Module):
    """A stand-in crowd network that calls every pixel person: its look is easy to tell from the first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], 10.0)


def test_crowd_network_looks_at_groups_only_and_the_answer_says_which(model_dir: Path) -> None:
    """In one batch: a portrait (one tall person) keeps the first look, three small people get the crowd
    network's, and ``X-Crowd`` overrides the choice both ways; ``X-Network`` names the network each time."""
    h = PersonSegmenterHandler()
    h.initialize(worker_context(model_dir))
    h.segmenter = Segmenter(BrightnessModel(), 96, "cpu", amp=False, crowd_model=Everyone())
    group = images.encode(images.subject_photo(box=(40, 150, 70, 200)))  # one person a fifth of the height
    answers = run(h, [raw(PNG), raw(group), raw(PNG), raw(group)], [{}, {}, {"X-Crowd": "on"}, {"X-Crowd": "OFF"}])
    assert [a.headers["X-Network"] for a in answers] == ["main", "crowd", "crowd", "main"]
    masks = [np.asarray(a.image()) for a in answers]
    assert masks[0].min() < 10 and masks[1].min() > 245 and masks[2].min() > 245 and masks[3].min() < 10


def test_an_archive_with_a_crowd_network_loads_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build_tiny_checkpoint(tmp_path / "weights.pt")
    build_tiny_checkpoint(tmp_path / CROWD_NAME, seed=1)
    h = PersonSegmenterHandler()
    with caplog.at_level(logging.INFO):
        h.initialize(worker_context(tmp_path))
    assert h.segmenter.crowd_model is not None and "crowd network" in caplog.text


# --- errors ----------------------------------------------------------------------------------------

BAD_REQUESTS = {
    "unknown mode": (raw(PNG), {"X-Mode": "sketch"}, 400, "unknown mode 'sketch'"),
    "unknown format": (form(PNG, mode="composite", format="gif"), {}, 400, "unknown format"),
    "unknown refine": (form(PNG, refine="magic"), {}, 400, "unknown refine"),
    "unknown tta": (raw(PNG), {"X-TTA": "rotate"}, 400, "unknown tta 'rotate'; expected one of: none, flip"),
    "unknown zoom": (raw(PNG), {"X-Zoom": "4x"}, 400, "unknown zoom '4x'; expected one of: off, auto, on"),
    "unknown crowd": (form(PNG, crowd="everyone"), {}, 400, "unknown crowd 'everyone'; expected one of: off, auto, on"),
    "unknown matting": (form(PNG, mode="cutout", matting="maybe"), {}, 400,
                        "unknown matting 'maybe'; expected one of: on, off"),
    "bad colour": (form(PNG, mode="composite", background="#12345"), {}, 400, "unknown background"),
    "jpeg mask": (form(PNG, format="jpeg"), {}, 400, "only for mode composite"),
    "jpeg transparent": (form(PNG, mode="composite", background="transparent", format="jpeg"), {}, 400,
                         "needs format png"),
    "blur radius": (form(PNG, mode="composite", background="blur", blur_radius="1e9"), {}, 400, "out of range"),
    "blur radius nan": (form(PNG, blur_radius="nan"), {}, 400, "out of range"),
    "unknown field": (form(PNG, mdoe="cutout"), {}, 400, "unknown multipart field"),
    "no image field": ({"mode": bytearray(b"mask")}, {}, 400, "no 'image' field"),
    "json body": ({"body": {"image": "x"}}, {}, 400, "JSON"),
    "text body": ({"body": "hello"}, {}, 400, "text body"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_4xx_json_and_next_request_works(handler: PersonSegmenterHandler, case: str) -> None:
    row, headers, status, words = BAD_REQUESTS[case]
    (a,) = run(handler, [row], [headers])
    assert a.status == status and a.content_type == "application/json"
    assert words in a.error(), a.error()
    (ok,) = run(handler, [raw(PNG)])
    assert ok.status == 200 and ok.image().size == images.SUBJECT_SIZE


def test_mixed_batch_fails_only_the_bad_requests(handler: PersonSegmenterHandler) -> None:
    """Different sizes, options and failures in one batch; each answer is its own."""
    big = images.encode(images.noise_photo((500, 130), seed=1), "JPEG")
    answers = run(handler, [raw(PNG), raw(b"junk"), form(big, mode="cutout", refine="bilinear"), raw(b"")],
                  [{}, {}, {}, {}])
    assert [a.status for a in answers] == [200, 400, 200, 400]
    assert answers[0].image().size == (360, 240)
    assert answers[2].image().size == (500, 130) and answers[2].image().mode == "RGBA"
    assert "not an image" in answers[1].error() and "empty" in answers[3].error()
    assert all(a.headers["X-Batch-Size"] == "4" for a in answers)


def test_batch_of_only_bad_requests(handler: PersonSegmenterHandler) -> None:
    answers = run(handler, [raw(b""), raw(b"x")])
    assert [a.status for a in answers] == [400, 400]


def test_render_failure_fails_only_its_request(handler: PersonSegmenterHandler, monkeypatch) -> None:
    import handler.person_handler as ph

    real = ph.render
    monkeypatch.setattr(ph, "render", lambda job: (_ for _ in ()).throw(RuntimeError("boom"))
                        if job.options.mode == "cutout" else real(job))
    answers = run(handler, [raw(PNG), form(PNG, mode="cutout")])
    assert answers[0].status == 200 and answers[1].status == 500 and "internal error" in answers[1].error()


def test_authorization_header_is_never_logged(handler: PersonSegmenterHandler, caplog) -> None:
    secret = "Bearer s3cr3t-t0ken"
    with caplog.at_level(logging.DEBUG):
        run(handler, [raw(PNG), raw(b"junk")], [{"Authorization": secret}, {"Authorization": secret}])
    assert "s3cr3t" not in caplog.text


def test_thread_count_shares_the_cores() -> None:
    assert torch_threads(2, 1) == 2
    assert torch_threads(2, 2) == 1
    assert torch_threads(2, 4) == 1
    assert torch_threads(16, 4) == 4
