"""End to end against the real TorchServe: a real GIMP 3 runs our procedure, and the mask GIMP holds
is exactly the mask the server gives for the same layer pixels (fetched here with ``requests``).

- ``real_batch`` (marker ``serve``): the real TorchServe (``torchserve_server`` of tests/conftest.py):
  the edge stage's matte and colours, the plain mask, moved and smaller layers, greyscale and high
  precision, every output and background, and failures (server down, wrong key, unknown model).
- a 24-megapixel photo (markers ``serve``, ``slow``).
Without root, the GIMP root or a TorchServe that starts, every test here skips with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gimp_checks import (
    BLUE_BACKGROUND,
    BLUE_RGB,
    PHOTO,
    assert_composite,
    assert_person_colours,
    background_pixels,
    exported,
    gimp_mask,
    layer_pixels,
    photo_and_mask,
    photo_and_matte,
    result_pixels,
    server_args,
    server_cutout,
    server_mask,
    successful,
    to_linear,
    two_colour_image,
)
from gimp_harness import GimpRun, assert_failed_cleanly, in_job, run_gimp

from tests.ports import free_port

pytestmark = pytest.mark.gimp


# --- batch 2: the real TorchServe -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_batch(gimp_ready: None, real_server: object, tmp_path_factory: pytest.TempPathFactory) -> GimpRun:
    job = tmp_path_factory.mktemp("gimp-real")
    photo = in_job(job, PHOTO)
    bg_image = in_job(job, two_colour_image(job / "bg-source.png"))
    key_file = Path(real_server.workdir) / "key_file.json" if hasattr(real_server, "workdir") else None
    base = {**server_args(real_server), "edge": "off"}  # these cases check the model's mask (mode=mask)
    edge = server_args(real_server)  # the default Edge=colours: the edge stage's matte and colours
    cases = [
        {"name": "colours_mask", "input": photo, "args": {**edge, **BLUE_BACKGROUND}},
        {"name": "matte_mask", "input": photo, "setup": {"old_mask": True},
         "args": {**edge, **BLUE_BACKGROUND, "edge": "matte"}},
        {"name": "colours_u16_new_layer", "input": photo, "setup": {"precision": "u16-non-linear"},
         "args": {**edge, **BLUE_BACKGROUND, "output": "new-layer"}},
        {"name": "rgb_mask", "input": photo, "args": {**base, **BLUE_BACKGROUND}},
        {"name": "offset_layer", "input": photo,
         "setup": {"crop_layer": [96, 40, 320, 400], "offsets": [150, 70], "under_layer": True},
         "args": {**base, **BLUE_BACKGROUND}},
        {"name": "gray", "input": photo, "setup": {"gray": True}, "args": {**base, "background-color": "#404040"}},
        {"name": "float_precision", "input": photo, "setup": {"precision": "float-linear"},
         "args": {**base, **BLUE_BACKGROUND}},
        {"name": "u16_alpha_new_layer", "input": photo, "setup": {"precision": "u16-non-linear", "alpha": True},
         "args": {**base, **BLUE_BACKGROUND, "output": "new-layer"}},
        {"name": "apply_transparent", "input": photo, "args": {**base, "output": "apply", "background": "transparent"}},
        {"name": "image_background", "input": photo,
         "args": {**base, "background": "image", "background-image": bg_image}},
        {"name": "blur_background", "input": photo, "args": {**base, "background": "blur", "blur-radius": 12}},
        {"name": "default_colour", "input": photo, "args": {**base}},
        {"name": "no_mirror_pass", "input": photo, "args": {**base, **BLUE_BACKGROUND, "mirror-pass": False}},
        # failures: nothing listening on the port; a wrong key; a model that is not served
        {"name": "server_down", "input": photo, "setup": {"old_mask": True, "select": [5, 5, 50, 50]},
         "args": {**base, "server-url": f"http://127.0.0.1:{free_port()}"}},
        {"name": "wrong_key", "input": photo, "setup": {"old_mask": True},
         "args": {**base, "inference-key": "not-the-key"}},
        {"name": "no_key", "input": photo, "args": {**base, "inference-key": ""}},
        {"name": "wrong_model", "input": photo, "args": {**base, "model-name": "no_such_model"}},
    ]
    if key_file is not None and key_file.exists():
        cases.append({"name": "key_file", "input": photo,
                      "args": {**base, "inference-key": "", "key-file": in_job(job, key_file)}})
    return run_gimp(job, cases)


@pytest.mark.serve
def test_edge_colours_are_the_servers_cutout(real_batch: GimpRun, real_server: object) -> None:
    """The default Edge=colours against the real server: GIMP's layer mask is exactly the cut-out's soft
    matte, the person layer holds the cut-out's colours where the matte is soft and the photo elsewhere,
    and the composite is that layer over the colour through the matte. The photo stays, hidden, untouched."""
    case = successful(real_batch, "colours_mask")
    before, after = case["before"]["layers"], case["after"]["layers"]
    assert after[0]["id"] == case["result_layer"] and after[0]["name"].endswith("(person)")
    assert after[2]["id"] == before[0]["id"] and after[2]["pixels"] == before[0]["pixels"]
    assert after[2]["visible"] is False
    photo, mask, cut = photo_and_matte(real_batch, case, real_server)
    soft = np.count_nonzero((mask > 0) & (mask < 255))
    plain = server_mask(real_server, photo)
    assert soft > np.count_nonzero((plain > 0) & (plain < 255)), "the matte is not softer than the plain mask"
    person = result_pixels(real_batch, case)
    assert_person_colours(person, photo, mask, cut)
    assert_composite(exported(case, real_batch), person, mask, BLUE_RGB)


@pytest.mark.serve
def test_edge_matte_is_the_servers_matte(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "matte_mask")
    before, after = case["before"]["layers"], case["after"]["layers"]
    assert after[0]["id"] == before[0]["id"] == case["result_layer"] and after[0]["pixels"] == before[0]["pixels"]
    photo, mask, _ = photo_and_matte(real_batch, case, real_server)
    assert_composite(exported(case, real_batch), photo, mask, BLUE_RGB)


@pytest.mark.serve
def test_edge_colours_at_16_bit(real_batch: GimpRun, real_server: object) -> None:
    """A 16-bit image keeps its own pixels away from the edge; the composite is the person over the colour."""
    case = successful(real_batch, "colours_u16_new_layer")
    assert case["after"]["precision"] == case["before"]["precision"]
    after = case["after"]["layers"]
    assert after[0]["name"].endswith("(background replaced)") and after[1]["visible"] is False
    photo = layer_pixels(real_batch, case)
    cut = server_cutout(real_server, photo)
    comp = exported(case, real_batch)
    alpha = cut[..., 3]
    want = np.where(((alpha > 0) & (alpha < 255))[..., None], cut, photo)
    assert_composite(comp, want, alpha, BLUE_RGB)


@pytest.mark.serve
def test_layer_mask_equals_the_servers_mask(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "rgb_mask")
    photo, mask = photo_and_mask(real_batch, case, real_server)
    # non-destructive: the photo layer keeps its pixels, gets a mask, a colour layer goes under it
    before, after = case["before"]["layers"], case["after"]["layers"]
    assert [lyr["name"] for lyr in after] == [before[0]["name"], "Background (Replace Background)"]
    assert after[0]["id"] == before[0]["id"] == case["result_layer"]
    assert after[0]["pixels"] == before[0]["pixels"]
    assert after[1]["id"] == case["background_layer"]
    assert case["after"]["selected"] == [case["result_layer"]]
    assert (background_pixels(real_batch, case)[..., :3] == BLUE_RGB).all()
    assert_composite(exported(case, real_batch), photo, mask, BLUE_RGB)


@pytest.mark.serve
def test_mirror_pass_off_asks_for_the_plain_mask(real_batch: GimpRun, real_server: object) -> None:
    """Mirror pass is on by default (the masks of the other cases are the server's tta=flip masks);
    turned off, GIMP holds the plain mask, which differs from the mirrored one."""
    case = successful(real_batch, "no_mirror_pass")
    photo, mask = photo_and_mask(real_batch, case, real_server, tta="none")
    assert not np.array_equal(mask, server_mask(real_server, photo, "flip"))


@pytest.mark.serve
def test_offset_smaller_layer(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "offset_layer")
    assert case["layer"]["size"] == [320, 400] and case["layer"]["offsets"] == [150, 70]
    photo, mask = photo_and_mask(real_batch, case, real_server)
    assert mask.shape == (400, 320)
    bg = next(lyr for lyr in case["after"]["layers"] if lyr["id"] == case["background_layer"])
    assert bg["offsets"] == [150, 70] and bg["size"] == [320, 400]
    comp = exported(case, real_batch)
    assert comp.shape[:2] == (512, 512)
    inside = comp[70:470, 150:470]
    assert_composite(inside, photo, mask, BLUE_RGB)
    outside = np.ones(comp.shape[:2], bool)
    outside[70:470, 150:470] = False
    assert (comp[outside][:, :3] == 255).all(), "the white layer under the photo must show outside it"
    under = [lyr for lyr in case["after"]["layers"] if lyr["name"] == "under"]
    assert under and under[0] == next(lyr for lyr in case["before"]["layers"] if lyr["name"] == "under")


@pytest.mark.serve
def test_greyscale_image(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "gray")
    assert case["after"]["base_type"] == 1  # still GRAY
    photo, mask = photo_and_mask(real_batch, case, real_server)
    assert_composite(exported(case, real_batch), photo, mask, (64, 64, 64))


@pytest.mark.serve
def test_float_precision_image(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "float_precision")
    photo, mask = photo_and_mask(real_batch, case, real_server)
    assert case["after"]["precision"] == case["before"]["precision"]
    assert_composite(exported(case, real_batch), photo, mask, BLUE_RGB)


@pytest.mark.serve
def test_new_layer_output_keeps_the_original(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "u16_alpha_new_layer")
    before, after = case["before"]["layers"], case["after"]["layers"]
    assert len(after) == 2 and after[0]["id"] == case["result_layer"]
    assert after[0]["name"].endswith("(background replaced)") and after[0]["mask"] is None
    original = after[1]
    assert original["id"] == before[0]["id"] and original["pixels"] == before[0]["pixels"]
    assert original["visible"] is False
    photo = layer_pixels(real_batch, case)
    mask = server_mask(real_server, photo)
    assert_composite(exported(case, real_batch), photo, mask, BLUE_RGB)


@pytest.mark.serve
def test_apply_output_with_transparent_background(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "apply_transparent")
    after = case["after"]["layers"]
    assert len(after) == 1 and after[0]["name"] == case["before"]["layers"][0]["name"] and after[0]["mask"] is None
    photo = layer_pixels(real_batch, case)
    mask = server_mask(real_server, photo)
    comp = exported(case, real_batch)
    assert np.abs(comp[..., 3].astype(int) - mask.astype(int)).max() <= 1, "alpha must be the mask"
    seen = mask >= 64  # where alpha is high enough for the colour to be exact
    assert np.abs(comp[seen][:, :3].astype(int) - photo[seen][:, :3]).max() <= 1


@pytest.mark.serve
def test_image_background_is_scaled_to_cover(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "image_background")
    bg = background_pixels(real_batch, case).astype(int)
    assert bg.shape[:2] == (512, 512)
    # 300x100 scaled to cover 512x512 -> 1536x512, centre-cropped: red left half, green right half
    assert (np.abs(bg[:, :240, :3] - (220, 20, 20)) <= 3).all()
    assert (np.abs(bg[:, 272:, :3] - (20, 220, 20)) <= 3).all()
    photo = layer_pixels(real_batch, case)
    assert_composite(exported(case, real_batch), photo, gimp_mask(real_batch, case), bg)


@pytest.mark.serve
def test_blur_background(real_batch: GimpRun, real_server: object) -> None:
    case = successful(real_batch, "blur_background")
    photo = layer_pixels(real_batch, case)
    bg = background_pixels(real_batch, case)

    def roughness(img: np.ndarray) -> float:
        img = img[..., :3].astype(float)
        return float(np.abs(4 * img[1:-1, 1:-1] - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2]
                            - img[1:-1, 2:]).mean())

    assert roughness(bg) < 0.2 * roughness(photo), "the background layer is not a blurred copy"
    # GEGL blurs in linear light, so compare the mean light, not the mean sRGB value
    mean_bg, mean_photo = (to_linear(x[..., :3].astype(float)).mean((0, 1)) for x in (bg, photo))
    assert np.abs(mean_bg - mean_photo).max() < 0.02, "the background is not a copy of the photo"
    assert_composite(exported(case, real_batch), photo, gimp_mask(real_batch, case), bg)


@pytest.mark.serve
def test_default_colour_is_white(real_batch: GimpRun, real_server: object) -> None:
    """GIMP 3.0 drops colour defaults over the PDB: a script leaving the colour unset still gets white."""
    case = successful(real_batch, "default_colour")
    photo = layer_pixels(real_batch, case)
    assert_composite(exported(case, real_batch), photo, gimp_mask(real_batch, case), (255, 255, 255))


@pytest.mark.parametrize(
    "name,needles",
    [
        ("server_down", ["Cannot reach the Replace Background server", "connection refused", "make serve"]),
        ("wrong_key", ["rejected the inference key", "key_file.json"]),
        ("no_key", ["requires an inference key and none was given"]),
        ("wrong_model", ["has no model 'no_such_model'", "Model name"]),
    ],
)
@pytest.mark.serve
def test_failures_leave_the_image_unchanged(real_batch: GimpRun, name: str, needles: list[str]) -> None:
    assert_failed_cleanly(real_batch.case(name), needles)


@pytest.mark.serve
def test_key_file_argument(real_batch: GimpRun, real_server: object) -> None:
    if not any(c["name"] == "key_file" for c in real_batch.results.get("cases", [])):
        pytest.skip("the torchserve_server fixture exposes no key file (no .workdir)")
    photo_and_mask(real_batch, successful(real_batch, "key_file"), real_server)


# --- batch 3: a 24-megapixel photo -----------------------------------------------------------------


@pytest.mark.serve
@pytest.mark.slow
def test_24_megapixel_photo(gimp_ready: None, real_server: object, tmp_path: Path) -> None:
    photo = in_job(tmp_path, PHOTO)
    case = {"name": "big", "input": photo, "setup": {"scale": [6000, 4000]},
            "args": {**server_args(real_server), "timeout": 600, **BLUE_BACKGROUND}}
    run = run_gimp(tmp_path, [case])
    res = successful(run, "big")
    assert res["mask_size"] == [6000, 4000]
    photo, mask, cut = photo_and_matte(run, res, real_server)
    assert_person_colours(result_pixels(run, res), photo, mask, cut)
    print(f"24 MP run in GIMP: {res['seconds']:.1f} s")
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)

