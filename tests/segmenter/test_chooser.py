"""The click network: its click maps, that it starts as the segmenter, folds exactly, and loads what was saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmenter import checkpoint, chooser
from segmenter.model import EncoderUNet

CONFIG = {"encoder": "efficientnet-lite0", "decoder_channels": [16, 16, 16, 16, 8], "image_size": 64}


def _net() -> EncoderUNet:
    torch.manual_seed(0)
    net = EncoderUNet(CONFIG["encoder"], CONFIG["decoder_channels"])
    for module in net.modules():  # BatchNorm statistics that are not the identity, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_click_maps_peak_at_the_point_at_every_step() -> None:
    full = chooser.click_maps([(40.0, 20.0), (0.0, 63.0)], (64, 96))
    assert full.shape == (2, 2, 64, 96)
    y, x = np.unravel_index(int(full[0, 1].argmax()), full.shape[-2:])
    assert (x, y) == (40, 20) and full[0, 0, 20, 40] == 1 and full[0, 0, 20, 48] == 0
    half = chooser.click_maps([(40.0, 20.0)], (64, 96), step=2)
    assert half.shape == (1, 2, 32, 48)
    y, x = np.unravel_index(int(half[0, 1].argmax()), half.shape[-2:])
    assert (x, y) == (20, 10)
    assert full[0, 0].sum() > 4 * half[0, 0].sum() * 0.8  # the disc keeps its size in the photo
    assert full[1, 0, 63, 0] == 1  # a point on the corner lands on the corner


def test_starts_as_the_segmenter_and_the_click_reaches_the_output() -> None:
    net = _net()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        plain = net(x)
        click_net = chooser.ClickNet(net).eval()
        maps = chooser.click_maps([(10.0, 20.0), (80.0, 40.0)], (64, 96))
        assert torch.equal(click_net(x, maps), plain)  # the clicks' convolution starts at zero
        click_net.click.weight.normal_()
        clicked = click_net(x, maps)
    assert clicked.shape == plain.shape and not torch.allclose(clicked, plain)
    assert not torch.allclose(clicked[0], clicked[1])  # each photo answers its own click


def test_the_folded_network_answers_as_the_trained_one() -> None:
    click_net = chooser.ClickNet(_net()).eval()
    with torch.no_grad():
        click_net.click.weight.normal_()
        x = torch.randn(1, 3, 64, 64)
        maps = chooser.click_maps([(30.0, 30.0)], (64, 64))
        before = click_net(x, maps)
        after = click_net.folded()(x, maps)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in click_net.folded().modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_loads_what_was_saved_and_names_a_wrong_file(tmp_path: Path) -> None:
    click_net = chooser.ClickNet(_net())
    with torch.no_grad():
        click_net.click.weight.normal_()
    checkpoint.save_atomic({"model": click_net.state_dict(), "config": CONFIG}, tmp_path / "click.pt")
    loaded, config = chooser.load(tmp_path / "click.pt")
    assert config == CONFIG and torch.equal(loaded.click.weight, click_net.click.weight)
    checkpoint.save_atomic({"model": _net().state_dict(), "config": CONFIG}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt: not a click network's weights"):
        chooser.load(tmp_path / "plain.pt")


def test_choose_gives_one_map_per_point_at_the_photos_size() -> None:
    from segmenter.inference import Segmenter

    net = _net()
    seg = Segmenter(net, image_size=64)
    pick = chooser.Chooser(chooser.ClickNet(net).eval())
    photo = Image.new("RGB", (120, 90), (90, 120, 150))
    maps = pick.choose(seg, photo, [(10, 10), (100, 80)])
    assert len(maps) == 2 and all(m.shape == (90, 120) and m.dtype == np.float32 for m in maps)
    assert all(0 <= m.min() and m.max() <= 1 for m in maps)


def test_the_mirror_pass_averages_the_answer_for_the_mirrored_photo() -> None:
    """``tta="flip"`` is the mean of the plain answer and the answer for the mirrored photo at the mirrored
    point, turned back; an unknown mode is named."""
    from segmenter.inference import Segmenter

    net = _net()
    click = chooser.ClickNet(net).eval()
    torch.nn.init.normal_(click.click.weight, std=0.5)  # the click must matter for the check to mean anything
    seg = Segmenter(net, image_size=64)
    pick = chooser.Chooser(click)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    mirrored = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain = pick.choose(seg, photo, [(10, 20)])[0]
    turned = pick.choose(seg, mirrored, [(63 - 10, 20)])[0][:, ::-1]
    both = pick.choose(seg, photo, [(10, 20)], tta="flip")[0]
    assert np.abs(plain - turned).mean() > 1e-4  # the mirrored photo's answer is not the plain one
    np.testing.assert_allclose(both, (plain + turned) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="unknown tta 'spin'"):
        pick.choose(seg, photo, [(10, 20)], tta="spin")


def test_the_rival_is_the_largest_person_the_answer_leaves_out() -> None:
    everyone = torch.zeros(60, 100)
    everyone[10:50, 5:30] = 0.9  # the clicked person
    everyone[20:60, 50:90] = 0.8  # the largest other
    everyone[0:4, 95:100] = 0.9  # a speck
    answer = torch.zeros(60, 100)
    answer[10:50, 5:40] = 0.7
    x, y = chooser.rival_point(everyone, answer)
    assert 50 <= x < 90 and 20 <= y < 60 and abs(x - 69.5) <= 1 and abs(y - 39.5) <= 1
    answer[20:60, 50:90] = 0.6  # the answer takes everyone: no rival
    assert chooser.rival_point(everyone, answer) is None
    answer[20:60, 50:90] = 0.0
    everyone[20:60, 50:90] = 0.0
    assert chooser.rival_point(everyone, answer) is None  # only the speck, under RIVAL_SHARE of the photo


def test_each_contested_pixel_goes_to_the_stronger_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit check of the rule with known answers (the real network's use is the shipped-network test below)."""
    from segmenter.inference import Segmenter

    net = _net()
    seg = Segmenter(net, image_size=64)
    pick = chooser.Chooser(chooser.ClickNet(net).eval())
    photo = Image.new("RGB", (64, 48), (90, 120, 150))
    everyone = torch.zeros(48, 64)
    everyone[:, 4:60] = 0.95
    own = torch.zeros(48, 64)
    own[:, :40] = 0.7  # the clicked person's answer bleeds over x = 32 into the one beside
    theirs = torch.zeros(48, 64)
    theirs[:, 28:] = 0.9
    asked: list[list[tuple[float, float]]] = []

    def answers(batch: torch.Tensor, size: tuple[int, int], at: list, tta: str) -> torch.Tensor:
        asked.append(list(at))
        return torch.stack([own if len(asked) == 1 else theirs for _ in at])

    monkeypatch.setattr(pick, "_answers", answers)
    plain = pick.choose(seg, photo, [(10, 20)])[0]
    asked.clear()
    apart = pick.choose(seg, photo, [(10, 20)], everyone=everyone)[0]
    assert len(asked) == 2 and 40 <= asked[1][0][0] < 60  # the rival, asked about in a second pass
    assert plain[:, 30:40].min() >= 0.69 and apart[:, 30:40].max() == 0 and apart[:, :26].min() >= 0.69
    with pytest.raises(ValueError, match="the segmenter's map is"):
        pick.choose(seg, photo, [(10, 20)], everyone=everyone[:10])


@pytest.mark.skipif(not chooser.SHIPPED_CHOOSER.is_file(), reason="no shipped click network in this checkout")
def test_the_shipped_click_network_tells_a_person_in_front_from_the_one_behind() -> None:
    """The case the mask's regions cannot split (the two-person benchmark's *near and far*): a mirrored copy
    of the photo's person at 40% of the height, pasted over them in the bottom-right corner. A click on each
    keeps that one and leaves the other out."""
    from segmenter import people
    from segmenter.inference import Segmenter

    seg = Segmenter.from_checkpoint()
    scene, near, far = near_and_far(seg)
    full, prob = seg.predict_one(scene), seg.predict_lowres([scene])[0]
    pick = chooser.Chooser(chooser.load()[0], seg.device, seg.amp)
    for person, other in ((near, far), (far, near)):
        point = people.inside_point(person)
        by_regions = people.keep_people(full, [point], prob) >= 128
        assert (by_regions & other).sum() > 0.8 * other.sum()  # one region: the regions alone keep both
        for everyone in (None, prob):  # the answer alone, and weighed against the rival's as served
            kept = people.keep_chosen(full, [point], pick.choose(seg, scene, [point], everyone=everyone), prob) >= 128
            assert (kept & person).sum() > 0.8 * person.sum() and (kept & other).sum() < 0.2 * other.sum()


def near_and_far(seg: object) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """The test photo with a mirrored copy of its person, 40% of the height, in front of them at the bottom
    right; and each person's own mask (from ``seg``'s mask of the photo alone)."""
    photo = Image.open(Path(__file__).resolve().parents[1] / "gimp" / "data" / "astronaut.jpg").convert("RGB")
    mirrored = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    alone, turned = (seg.predict_one(p) >= 128 for p in (photo, mirrored))
    w, h = photo.size
    small = (w * 2 // 5, h * 2 // 5)
    cut = Image.fromarray(turned.astype(np.uint8) * 255).resize(small)
    scene = photo.copy()
    scene.paste(mirrored.resize(small), (w - small[0], h - small[1]), cut)
    near = np.zeros((h, w), bool)
    near[h - small[1]:, w - small[0]:] = np.asarray(cut) >= 128
    return scene, near, alone & ~near


def test_only_the_shipped_click_network_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chooser.present(None) is None
    named = tmp_path / "mine.pt"
    assert chooser.present(str(named)) == named  # a named file that is missing is the caller's error, later
    monkeypatch.setattr(chooser, "SHIPPED_CHOOSER", tmp_path / "shipped.pt")
    assert chooser.present(tmp_path / "shipped.pt") is None
    (tmp_path / "shipped.pt").write_bytes(b"")
    assert chooser.present(tmp_path / "shipped.pt") == tmp_path / "shipped.pt"
