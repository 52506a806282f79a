"""The options ``keep`` (choose who stays) and ``harmonize`` (match the light) in the handler, in-process.

Served by ``stub_handler`` (tests/handler/conftest.py), whose "person" is whatever is bright, so each
test knows who is where.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handler import contract, request
from handler.person_handler import PersonSegmenterHandler
from segmenter import harmonize, imaging, matting, people
from tests.handler import images
from tests.handler.fakes import form, raw, run

SIZE = (360, 240)
LEFT, RIGHT = (40, 50, 140, 210), (220, 40, 320, 200)  # two bright "people", x0, y0, x1, y1


def _two_people() -> Image.Image:
    rng = np.random.default_rng(4)
    arr = rng.integers(10, 40, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    for x0, y0, x1, y1 in (LEFT, RIGHT):
        arr[y0:y1, x0:x1] = rng.integers(215, 245, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return Image.fromarray(arr)


PNG = images.encode(_two_people())


def _person(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return mask[y0 + 5:y1 - 5, x0 + 5:x1 - 5]


# --- parsing ---------------------------------------------------------------------------------------

def test_points_are_parsed() -> None:
    assert request.parse_points("10,20") == ((10.0, 20.0),)
    assert request.parse_points(" 1.5, 2 ;300,4") == ((1.5, 2.0), (300.0, 4.0))
    options = request.parse_options({"keep": "5,6;7,8", "harmonize": "0.5", "mode": "composite",
                                     "background": "blur"})
    assert options.keep == ((5.0, 6.0), (7.0, 8.0)) and options.harmonize == 0.5 and options.harmonizes


@pytest.mark.parametrize(("value", "words"), [
    ("10", "keep point 1 '10' is badly formed"),
    ("10,20;x,4", "keep point 2 'x,4' is badly formed"),
    ("1,2,3", "badly formed"),
    ("10,20;", "keep point 2 '' is badly formed"),
    ("inf,3", "not a pair of finite numbers"),
    (";".join(["1,1"] * (contract.MAX_KEEP_POINTS + 1)), f"at most {contract.MAX_KEEP_POINTS}"),
])
def test_badly_formed_points_say_what_is_wrong(value: str, words: str) -> None:
    with pytest.raises(request.RequestError, match=words):
        request.parse_points(value)


def test_harmonize_needs_a_background_with_light() -> None:
    """A plain colour or transparency defines no light, and a mask has no colours: there it is ignored."""
    def options(**raw: str) -> request.Options:
        return request.parse_options({"harmonize": "1", **raw})
    assert options(mode="composite", background="blur").harmonizes
    assert options(mode="cutout", background="blur").harmonizes
    assert request.parse_options({"harmonize": "1", "mode": "composite"}, has_background_image=True).harmonizes
    assert not options(mode="composite", background="#336699").harmonizes
    assert not options(mode="composite", background="transparent").harmonizes
    assert not options(mode="mask", background="blur").harmonizes
    assert not request.parse_options({"mode": "composite", "background": "blur"}).harmonizes  # default 0


def test_the_contracts_strength_range_is_the_cores() -> None:
    assert contract.HARMONIZE_RANGE == harmonize.STRENGTH_RANGE
    assert contract.DEFAULT_HARMONIZE == 0.0


# --- keep ------------------------------------------------------------------------------------------

def test_a_point_keeps_one_person_in_mask_cutout_and_composite(stub_handler: PersonSegmenterHandler) -> None:
    everyone, mask, cut, comp = run(stub_handler, [
        raw(PNG), form(PNG, keep="90,130"), form(PNG, mode="cutout", keep="90,130"),
        form(PNG, mode="composite", background="#0000FF")], [{}, {}, {}, {"X-Keep": "300, 60"}])
    full = np.asarray(everyone.image())
    assert _person(full, LEFT).min() >= 220 and _person(full, RIGHT).min() >= 220
    kept = np.asarray(mask.image())
    assert _person(kept, LEFT).min() >= 220 and kept[:, 180:].max() == 0
    assert np.array_equal(kept, people.keep_people(full, [(90, 130)]))
    alpha = np.asarray(cut.image())[..., 3]
    assert _person(alpha, LEFT).min() >= 220 and alpha[:, 180:].max() == 0
    out = np.asarray(comp.image()).astype(int)
    assert _person(out, LEFT)[..., 2].min() == 255 and _person(out, LEFT)[..., 0].max() == 0  # left is now blue
    assert _person(out, RIGHT)[..., 0].min() >= 200  # the right person stayed


def test_keep_hands_the_networks_map_to_the_split(stub_handler: PersonSegmenterHandler,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Touching people are told apart by the network's probability map: the handler keeps it for the
    requests that choose who stays (and only for them), and ``keep`` receives it."""
    seen: list[tuple[int, ...]] = []
    real = people.split_touching

    def spy(labels: np.ndarray, n: int, certainty: np.ndarray) -> tuple[np.ndarray, int]:
        seen.append(certainty.shape)
        return real(labels, n, certainty)

    monkeypatch.setattr(people, "split_touching", spy)
    answers = run(stub_handler, [form(PNG, keep="90,130"), raw(PNG), form(PNG, mode="cutout", keep="270,120")])
    assert [a.status for a in answers] == [200, 200, 200]
    assert len(seen) == 2 and all(len(shape) == 2 for shape in seen)


def test_with_a_click_network_keep_asks_it_who_each_point_is(model_dir: Path, tmp_path: Path) -> None:
    """An archive with ``chooser.pt``: the handler loads it, runs it once per keep request (not for the
    others) with the request's mirror option, and the kept person is the one its answer outlines, not the
    mask's whole region."""
    from handler.person_handler import CHOOSER_NAME
    from segmenter import checkpoint, chooser
    from segmenter.inference import Segmenter
    from segmenter.model import EncoderUNet
    from tests.handler.conftest import BrightnessModel
    from tests.handler.fakes import worker_context

    torch.manual_seed(0)
    config = {"encoder": "efficientnet-lite0", "decoder_channels": [16, 16, 16, 16, 8], "image_size": 96}
    net = chooser.ClickNet(EncoderUNet(config["encoder"], config["decoder_channels"]))
    with torch.no_grad():
        net.click.weight.normal_(0, 3)
        net.net.outc.bias.fill_(0.5)  # a random net's map, around 0.5: some pixels on each side
    folder = tmp_path / "with-chooser"
    folder.mkdir()
    shutil.copy(model_dir / "weights.pt", folder / "weights.pt")
    checkpoint.save_atomic({"model": net.state_dict(), "config": config}, folder / CHOOSER_NAME)
    h = PersonSegmenterHandler()
    h.initialize(worker_context(folder))
    assert h.chooser is not None
    h.segmenter = Segmenter(BrightnessModel(), 96, "cpu", amp=False)
    calls: list[tuple[int, str]] = []
    real = h.chooser.choose

    def choose(seg: Segmenter, image: Image.Image, points: list, tta: str = "none",
               everyone: torch.Tensor | None = None) -> list[np.ndarray]:
        """The real pass, then an answer the test knows: the clicked person is left of x = 120."""
        assert everyone is not None and everyone.shape == (SIZE[1] * 96 // SIZE[0], 96)  # the low-res map
        maps = real(seg, image, points, tta, everyone)
        calls.append((len(points), tta))
        assert [m.shape for m in maps] == [(SIZE[1], SIZE[0])] * len(points)
        known = np.where(np.arange(SIZE[0]) < 120, 0.9, 0.1).astype(np.float32)
        return [np.broadcast_to(known, (SIZE[1], SIZE[0])).copy() for _ in points]

    h.chooser.choose = choose
    everyone, mask, mirrored = run(h, [raw(PNG), form(PNG, keep="90,130"), form(PNG, keep="90,130", tta="flip")])
    assert calls == [(1, "none"), (1, "flip")]  # one pass per keep request, none for the other
    assert mirrored.status == 200
    full = np.asarray(everyone.image())
    kept = np.asarray(mask.image())
    assert _person(kept, LEFT)[:, :70].min() >= 220 and kept[:, 125:].max() == 0  # cut where the network said
    assert _person(people.keep_people(full, [(90, 130)]), LEFT).min() >= 220  # the regions alone keep it whole


def test_keep_in_a_batch_each_request_its_own_and_a_bad_point_fails_alone(
        stub_handler: PersonSegmenterHandler) -> None:
    answers = run(stub_handler, [form(PNG, keep="90,130"), raw(PNG), form(PNG, keep="400,10"),
                                 form(PNG, keep="270,120;90,130")], [{}, {"X-Keep": "270,120"}, {}, {}])
    assert [a.status for a in answers] == [200, 200, 400, 200]
    left, right, _, both = (np.asarray(a.image()) if a.status == 200 else None for a in answers)
    assert left[:, 180:].max() == 0 and _person(left, LEFT).min() >= 220
    assert right[:, :180].max() == 0 and _person(right, RIGHT).min() >= 220
    assert _person(both, LEFT).min() >= 220 and _person(both, RIGHT).min() >= 220
    assert "keep point 1 (400,10) is outside the photo, which is 360x240" in answers[2].error()


def _rotated_jpeg() -> bytes:
    """The photo stored sideways (240x360) with EXIF orientation 6: upright it is 360x240 again."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    _two_people().transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_points_are_in_the_upright_photo(stub_handler: PersonSegmenterHandler) -> None:
    data = _rotated_jpeg()
    assert imaging.decode_image(data).size == SIZE
    ok, outside = run(stub_handler, [form(data, keep="300,60"), form(data, keep="100,300")])
    mask = np.asarray(ok.image())
    assert mask.shape == (SIZE[1], SIZE[0]) and mask[:, :180].max() == 0 and _person(mask, RIGHT).min() >= 200
    assert outside.status == 400 and "(100,300) is outside the photo, which is 360x240" in outside.error()


@pytest.mark.parametrize(("fields", "headers", "words"), [
    ({"keep": "12;4"}, {}, "keep point 1 '12' is badly formed"),
    ({}, {"X-Keep": "a,b"}, "keep point 1 'a,b' is badly formed"),
    ({"keep": ";".join(["5,5"] * 40)}, {}, "keep has 40 points; at most 32"),
    ({"keep": "1,1;" * 200}, {}, "option 'keep' is too long"),
    ({"keep": "-1,5"}, {}, "keep point 1 (-1,5) is outside the photo"),
    ({"harmonize": "2"}, {}, "harmonize '2' is out of range; expected 0 to 1"),
    ({}, {"X-Harmonize": "strong"}, "harmonize 'strong' is not a number"),
])
def test_bad_options_are_400_with_the_problem(stub_handler: PersonSegmenterHandler, fields: dict, headers: dict,
                                              words: str) -> None:
    (a,) = run(stub_handler, [form(PNG, **fields)], [headers])
    assert a.status == 400 and words in a.error(), a.error()


# --- harmonize -------------------------------------------------------------------------------------

def _cool_background() -> bytes:
    rng = np.random.default_rng(7)
    arr = np.clip(rng.normal((40, 70, 150), 25, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8)
    return images.encode(Image.fromarray(arr))


def _warm_photo() -> bytes:
    """Two people in a warm, dim room: dark orange background, the people bright."""
    arr = np.asarray(_two_people(), np.float64)
    arr[arr.sum(2) < 300] = (110, 70, 30)  # the room
    return images.encode(Image.fromarray(arr.astype(np.uint8)))


def test_harmonize_moves_the_person_and_equals_the_core(stub_handler: PersonSegmenterHandler) -> None:
    photo, background = _warm_photo(), _cool_background()
    plain, matched, half = run(stub_handler, [
        form(photo, mode="composite", background=background),
        form(photo, mode="composite", background=background, harmonize="1"),
        form(photo, mode="composite", background=background, harmonize="0.5")])
    a, b, c = (np.asarray(x.image(), np.float64) for x in (plain, matched, half))
    left = _person(b, LEFT).reshape(-1, 3).mean(0) - _person(a, LEFT).reshape(-1, 3).mean(0)
    assert left[2] - left[0] > 10  # toward the cool scene: bluer, less red
    assert np.abs(b - a).mean() > np.abs(c - a).mean() > 0
    # the served composite is the core's: matte, harmonise, blend over the fitted background
    image = imaging.decode_image(photo)
    mask = stub_handler.segmenter.predict([image])[0]
    edge = matting.matte(image, mask)
    fitted = imaging.cover(imaging.decode_image(background), image.size)
    moved = harmonize.harmonize(edge.foreground, edge.alpha, image, fitted, 1.0)
    np.testing.assert_array_equal(b, imaging.composite(moved, edge.alpha, fitted))


def test_harmonize_is_ignored_on_a_colour_and_off_by_default(stub_handler: PersonSegmenterHandler) -> None:
    photo = _warm_photo()
    colour, colour_matched, blur, blur_zero = run(stub_handler, [
        form(photo, mode="composite", background="#336699"),
        form(photo, mode="composite", background="#336699", harmonize="1"),
        form(photo, mode="composite", background="blur"),
        form(photo, mode="composite", background="blur", harmonize="0")])
    assert colour_matched.status == 200 and colour_matched.body == colour.body
    assert blur_zero.body == blur.body


def test_a_cutout_with_a_background_and_harmonize_gets_matched_colours(stub_handler: PersonSegmenterHandler) -> None:
    """The plug-in's way: the cut-out's colours matched to a background it places itself; same matte."""
    photo, background = _warm_photo(), _cool_background()
    plain, matched = run(stub_handler, [form(photo, mode="cutout", background=background),
                                        form(photo, mode="cutout", background=background, harmonize="1")])
    p, m = np.asarray(plain.image(), np.float64), np.asarray(matched.image(), np.float64)
    np.testing.assert_array_equal(p[..., 3], m[..., 3])
    shift = _person(m, LEFT)[..., :3].reshape(-1, 3).mean(0) - _person(p, LEFT)[..., :3].reshape(-1, 3).mean(0)
    assert shift[2] - shift[0] > 10
