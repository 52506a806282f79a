"""``keep`` and ``harmonize`` through a real TorchServe (the ``torchserve_server`` fixture) and from
``handler.client``: each answer equals the core's, and bad values are a 400 naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler import client as client_mod
from segmenter import chooser, harmonize, imaging, matting, people
from segmenter.inference import Segmenter
from tests.handler import images
from tests.handler.served import as_image, post

pytestmark = pytest.mark.serve

ASTRONAUT = Path(__file__).resolve().parents[1] / "gimp" / "data" / "astronaut.jpg"


def _two_people() -> bytes:
    """A real person twice, side by side (the second mirrored): the shipped model finds both."""
    one = Image.open(ASTRONAUT).convert("RGB")
    pair = Image.new("RGB", (one.width * 2, one.height))
    pair.paste(one, (0, 0))
    pair.paste(one.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (one.width, 0))
    return images.encode(pair)


def _kept_by_the_core(seg: Segmenter, photo: Image.Image, full: np.ndarray,
                      points: list[tuple[int, int]]) -> np.ndarray:
    """What the server keeps: with the shipped click network, ``keep_chosen`` on its answers weighed against
    their rivals'."""
    prob = seg.predict_lowres([photo])[0]
    if not chooser.SHIPPED_CHOOSER.is_file():
        return people.keep_people(full, points, prob)
    pick = chooser.Chooser(chooser.load()[0], seg.device, seg.amp)
    return people.keep_chosen(full, points, pick.choose(seg, photo, points, everyone=prob), prob)


def test_keep_over_http_and_from_the_client(torchserve_server, serving_checkpoint: Path, tmp_path: Path) -> None:
    data = _two_people()
    photo = imaging.decode_image(data)
    w, h = photo.size
    seg = Segmenter.from_checkpoint(serving_checkpoint, device="cpu")
    full = seg.predict([photo])[0]
    assert full[:, : w // 2].max() == 255 and full[:, w // 2:].max() == 255  # two people to choose from
    _, count = people.regions_at_threshold(full)
    point = (w // 4, h // 2)  # inside the left person
    kept = np.asarray(as_image(post(torchserve_server, data, headers={"X-Keep": f"{point[0]},{point[1]}"})))
    expected = _kept_by_the_core(seg, photo, full, [point])
    assert np.abs(kept.astype(int) - expected.astype(int)).max() <= 1
    assert kept[:, : w // 2].max() == 255 and kept[:, w // 2 + w // 8:].max() == 0, count
    r = post(torchserve_server, data, headers={"X-Keep": f"{w},{h // 2}"})
    assert r.status_code == 400 and f"keep point 1 ({w},{h // 2}) is outside the photo" in r.json()["error"]
    src = tmp_path / "pair.png"
    src.write_bytes(data)
    common = [str(src), "--url", torchserve_server.inference_url, "--key-file", str(torchserve_server.key_file),
              "--mode", "mask"]
    assert client_mod.main([*common, "--out", str(tmp_path / "left"), "--keep", f"{point[0]},{point[1]}"]) == 0
    by_client = np.asarray(Image.open(tmp_path / "left" / "pair.png"))
    assert np.abs(by_client.astype(int) - kept.astype(int)).max() <= 1
    both = f"{point[0]},{point[1]}"
    assert client_mod.main([*common, "--out", str(tmp_path / "both"), "--keep", both, "--keep",
                            f"{w - point[0]},{point[1]}"]) == 0
    assert np.asarray(Image.open(tmp_path / "both" / "pair.png"))[:, w // 2 + w // 8:].max() == 255
    with pytest.raises(SystemExit):
        client_mod.main([*common, "--out", str(tmp_path / "bad"), "--keep", "12"])


@pytest.mark.skipif(not chooser.SHIPPED_CHOOSER.is_file(), reason="no shipped click network in this checkout")
def test_keep_frees_a_person_standing_in_front_of_another(torchserve_server, serving_checkpoint: Path) -> None:
    """The case the mask's regions cannot split: a smaller, mirrored copy of the person in front of them
    (``tests/segmenter/test_chooser.py``'s scene). A point on either keeps that one and drops the other."""
    from tests.segmenter.test_chooser import near_and_far

    scene, near, far = near_and_far(Segmenter.from_checkpoint(serving_checkpoint, device="cpu"))
    data = images.encode(scene)
    for person, other in ((near, far), (far, near)):
        x, y = people.inside_point(person)
        r = post(torchserve_server, data, headers={"X-Keep": f"{x},{y}"})
        assert r.status_code == 200, r.text
        kept = np.asarray(as_image(r)) >= 128
        assert (kept & person).sum() > 0.8 * person.sum() and (kept & other).sum() < 0.2 * other.sum()


def test_harmonize_over_http_and_from_the_client(torchserve_server, serving_checkpoint: Path,
                                                 tmp_path: Path) -> None:
    data = images.encode(Image.open(ASTRONAUT).convert("RGB"))
    rng = np.random.default_rng(3)
    sunset = np.clip(rng.normal((200, 120, 60), 30, (300, 400, 3)), 0, 255).astype(np.uint8)
    background = images.encode(Image.fromarray(sunset))
    files = {"image": ("p.png", data, "image/png"), "background": ("bg.png", background, "image/png")}
    plain = np.asarray(as_image(post(torchserve_server, files=files, fields={"mode": "composite"})), np.float64)
    matched = np.asarray(as_image(post(torchserve_server, files=files,
                                       fields={"mode": "composite", "harmonize": "1"})), np.float64)
    photo = imaging.decode_image(data)
    mask = Segmenter.from_checkpoint(serving_checkpoint, device="cpu").predict([photo])[0]
    edge = matting.matte(photo, mask)
    fitted = imaging.cover(imaging.decode_image(background), photo.size)
    expected = imaging.composite(harmonize.harmonize(edge.foreground, edge.alpha, photo, fitted, 1.0),
                                 edge.alpha, fitted)
    assert np.abs(matched - expected).max() <= 2
    person = edge.alpha == 255
    warmer = (matched[person] - plain[person]).mean(0)
    assert warmer[0] - warmer[2] > 3  # toward the sunset: redder, less blue
    r = post(torchserve_server, data, headers={"X-Harmonize": "1.5", "X-Mode": "composite"})
    assert r.status_code == 400 and "harmonize '1.5' is out of range; expected 0 to 1" in r.json()["error"]
    src, bg = tmp_path / "photo.png", tmp_path / "sunset.png"
    src.write_bytes(data)
    bg.write_bytes(background)
    assert client_mod.main([str(src), "--url", torchserve_server.inference_url, "--key-file",
                            str(torchserve_server.key_file), "--background", str(bg), "--harmonize", "1",
                            "--out", str(tmp_path / "out")]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "out" / "photo.png"), np.float64) - matched).max() <= 1
    with pytest.raises(SystemExit):
        client_mod.main([str(src), "--harmonize", "2", "--out", str(tmp_path / "bad")])
