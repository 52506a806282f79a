"""End to end: a real GIMP 3 runs our procedure through the PDB against a real TorchServe.

Each batch of cases is ONE headless gimp-console start (gimp_harness.run_gimp, gimp_driver.py):
it loads the test photo, prepares the layer, calls ``python-fu-replace-background``
non-interactively, dumps the layer mask and the layer's pixels, and exports the composite.
The tests below then check pixels on the host: the mask GIMP holds equals the mask the server
gives for the same layer pixels (fetched here with ``requests``), the composite's background is
the chosen colour, and every failure leaves the image exactly as it was.

Batches (no TorchServe needed for the first three):
- ``fake_batch``: the fake server's scripted faults (HTML, wrong size, truncated, RGB, 4xx, too
  slow), refusals before any change (group, locked layer, bad files or URL), grow/feather, and
  the registration check.
- ``rollback_batch``: a test hook (REPLACE_BACKGROUND_FAULT=edit) fails the edit half-way.
- the dialog test: GIMP under a virtual X display; the dialog opens, OK runs it, Repeat reuses it.
- ``real_batch`` (marker ``serve``): the real TorchServe (``torchserve_server`` of tests/conftest.py).
- a 24-megapixel photo (markers ``serve``, ``slow``).
Without root or the GIMP root every test here skips with the reason; they never pass silently.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from fake_mask_server import CUTOUT_RGB, FakeMaskServer, ellipse_mask
from gimp_harness import PROC_NAME, GimpRun, assert_failed_cleanly, in_job, run_gimp, skip_unless_gimp
from PIL import Image

from tests.ports import free_port

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
PHOTO = HERE / "data" / "astronaut.jpg"
BLUE = "#00c0ff"
BLUE_RGB = (0, 192, 255)
BLUE_BACKGROUND = {"background": "color", "background-color": BLUE}


@pytest.fixture(scope="module")
def gimp_ready() -> None:
    skip_unless_gimp()


@pytest.fixture(scope="module")
def real_server(request: pytest.FixtureRequest) -> object:
    """tests/conftest.py's ``torchserve_server``; if it cannot start, skip (printed) instead of erroring.

    A server that fails to start is reported by the serving tests; here it only means that the
    plug-in cannot be checked against it.
    """
    try:
        return request.getfixturevalue("torchserve_server")
    except Exception as exc:
        reason = f"the real TorchServe could not start ({type(exc).__name__}: {str(exc)[:300]})"
        print(f"SKIP GIMP real-server tests: {reason}")
        pytest.skip(reason)


def server_args(server: object) -> dict:
    """The procedure's arguments that point it at the real TorchServe (``torchserve_server``)."""
    return {"server-url": server.inference_url, "model-name": server.model_name, "inference-key": server.inference_key}


def _bg_image(path: Path) -> Path:
    """A 300x100 image, left half red, right half green: wide, so 'cover' must crop its sides."""
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :150] = (220, 20, 20)
    arr[:, 150:] = (20, 220, 20)
    Image.fromarray(arr).save(path)
    return path


# --- helpers to read what GIMP wrote -------------------------------------------------------------


def layer_pixels(run: GimpRun, case: dict) -> np.ndarray:
    w, h = case["layer"]["size"]
    return np.fromfile(run.path(case["name"] + ".layer.rgba"), np.uint8).reshape(h, w, 4)


def gimp_mask(run: GimpRun, case: dict) -> np.ndarray:
    w, h = case["mask_size"]
    return np.fromfile(run.path(case["name"] + ".mask.y8"), np.uint8).reshape(h, w)


def exported(case: dict, run: GimpRun) -> np.ndarray:
    return np.asarray(Image.open(run.path(Path(case["export"]).name)).convert("RGBA"))


def _ask_server(server: object, rgba: np.ndarray, headers: dict[str, str], mode: str) -> np.ndarray:
    """POST exactly these layer pixels to the real server, as the plug-in sends them (RGB for layers without
    alpha), with ``headers``; the answer decoded, after checking that it is a PNG of Pillow mode ``mode``."""
    img = Image.fromarray(rgba, "RGBA")
    if (rgba[..., 3] == 255).all():
        img = img.convert("RGB")  # the plug-in sends RGB for layers without alpha
    buf = io.BytesIO()
    img.save(buf, "PNG")
    resp = requests.post(
        f"{server.inference_url}/predictions/{server.model_name}",
        data=buf.getvalue(),
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {server.inference_key}", **headers},
        timeout=300,
    )
    assert resp.status_code == 200, resp.text[:500]
    answer = Image.open(io.BytesIO(resp.content))
    assert answer.mode == mode
    return np.asarray(answer)


def server_mask(server: object, rgba: np.ndarray, tta: str = "flip") -> np.ndarray:
    """Ask the real server for the mask of exactly these layer pixels (as the plug-in sends them,
    with its default Mirror pass, unless ``tta`` says otherwise)."""
    return _ask_server(server, rgba, {"X-Mode": "mask", "X-TTA": tta}, "L")


def server_cutout(server: object, rgba: np.ndarray, tta: str = "flip") -> np.ndarray:
    """The real server's cut-out with the edge stage (mode=cutout, matting=on) for these layer pixels:
    what Edge=matte and Edge=colours ask for. Alpha is the soft matte, RGB the person's colours."""
    return _ask_server(server, rgba, {"X-Mode": "cutout", "X-Matting": "on", "X-TTA": tta}, "RGBA")


def result_pixels(run: GimpRun, case: dict) -> np.ndarray:
    """The pixels of the layer holding the person (the procedure's first return value)."""
    w, h = case["result_size"]
    return np.fromfile(run.path(case["name"] + ".result.rgba"), np.uint8).reshape(h, w, 4)


def assert_person_colours(person: np.ndarray, photo: np.ndarray, alpha: np.ndarray, colours: np.ndarray) -> None:
    """Edge=colours: where the matte is soft the person layer holds the given colours, elsewhere the photo's."""
    soft = (alpha > 0) & (alpha < 255)
    assert soft.any(), "no soft edge in the matte"
    assert np.abs(person[soft][:, :3].astype(int) - colours[soft][:, :3]).max() <= 1, "edge colours not used"
    assert np.array_equal(person[~soft], photo[~soft]), "pixels away from the soft edge must be the photo's"


def assert_same_mask(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() == 0, f"mask differs: max {diff.max()}, {np.count_nonzero(diff)} pixels of {diff.size}"


def successful(run: GimpRun, name: str) -> dict:
    """Case ``name`` of ``run``, once its call succeeded: a failed call fails the test with the plug-in's error."""
    case = run.case(name)
    assert case["status"] == "success", case.get("error")
    return case


def photo_and_mask(run: GimpRun, case: dict, server: object, tta: str = "flip") -> tuple[np.ndarray, np.ndarray]:
    """The layer's pixels and GIMP's layer mask, after checking that the mask is exactly the server's for them."""
    photo = layer_pixels(run, case)
    mask = gimp_mask(run, case)
    assert_same_mask(mask, server_mask(server, photo, tta))
    return photo, mask


def photo_and_matte(run: GimpRun, case: dict, server: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``photo_and_mask`` for the default Edge refinement: the layer's pixels, GIMP's layer mask and the
    server's cut-out, after checking that the mask is exactly the cut-out's alpha (the soft matte)."""
    photo = layer_pixels(run, case)
    mask = gimp_mask(run, case)
    cut = server_cutout(server, photo)
    assert_same_mask(mask, cut[..., 3])
    return photo, mask, cut


def background_pixels(run: GimpRun, case: dict) -> np.ndarray:
    """The background layer the plug-in made (Output=mask), as GIMP holds it."""
    w, h = case["background_size"]
    return np.fromfile(run.path(case["name"] + ".background.rgba"), np.uint8).reshape(h, w, 4)


def _to_linear(c: np.ndarray) -> np.ndarray:
    c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def assert_composite(comp: np.ndarray, photo: np.ndarray, mask: np.ndarray, background: object) -> None:
    """Every pixel is the photo over the background through the mask, as GIMP composites (linear light).

    This holds for any model, even an untrained one whose mask is 0.5 everywhere; where the mask
    is 0 the pixel must be exactly the background (the chosen colour), where 255 exactly the photo.
    """
    bg = np.broadcast_to(np.asarray(background, np.float64)[..., :3], photo[..., :3].shape)
    m = (mask.astype(np.float64) / 255.0)[..., None]
    want = _to_srgb(m * _to_linear(photo[..., :3].astype(np.float64)) + (1 - m) * _to_linear(bg))
    got = comp[..., :3].astype(np.float64)
    diff = np.abs(got - want)
    assert diff.max() <= 2.01, (
        f"composite differs from photo-over-background by up to {diff.max():.1f} "
        f"({np.count_nonzero(diff.max(-1) > 2.01)} pixels)"
    )
    for sel, ref, what in ((mask == 0, bg, "background"), (mask == 255, photo[..., :3], "person")):
        if sel.any():
            assert np.abs(got[sel] - ref[sel]).max() <= 1, f"{what} pixels are not exact"
    assert (comp[..., 3] == 255).all()
    print(f"mask: {np.mean(mask == 0):.1%} background, {np.mean(mask == 255):.1%} person, rest soft")


# --- batch 1: fake server faults, mid-edit rollback, registration --------------------------------


@pytest.fixture(scope="module")
def fake_batch(gimp_ready: None, tmp_path_factory: pytest.TempPathFactory) -> GimpRun:
    """Scripted bad answers from the fake server, plus one good answer with grow/feather."""
    job = tmp_path_factory.mktemp("gimp-fake")
    photo = in_job(job, PHOTO)
    with FakeMaskServer(key="k") as srv:
        base = {"server-url": srv.url, "inference-key": "k"}
        faulty = [("html", "fault-html"), ("size", "fault-size"), ("truncated", "fault-truncated"),
                  ("rgb", "fault-rgb"), ("http400", "fault-400")]
        cases = [{"name": f"fake_{n}", "input": photo, "setup": {"old_mask": True},
                  "args": {**base, "model-name": m, "edge": "off"}} for n, m in faulty]
        # the default Edge=colours asks for a cut-out: an RGB answer without alpha is refused too
        cases.append({"name": "fake_rgb_cutout", "input": photo, "setup": {"old_mask": True},
                      "args": {**base, "model-name": "fault-rgb"}})
        cases += [{"name": f"fake_edge_{edge}", "input": photo, "setup": {"old_mask": True},
                   "args": {**base, **BLUE_BACKGROUND, "edge": edge}} for edge in ("colours", "matte")]
        cases.append({"name": "fake_edge_colours_gray_apply", "input": photo, "setup": {"gray": True},
                      "args": {**base, "output": "apply", "background": "transparent"}})
        cases.append({"name": "fake_slow", "input": photo, "args": {**base, "model-name": "fault-slow", "timeout": 2}})
        (job / "files" / "not-an-image.png").write_text("this is text, not a PNG")
        refused = [("refuse_group", {"group": True}, {}), ("refuse_locked", {"lock": True}, {}),
                   ("refuse_bad_bg_image", {}, {"background": "image",
                                                "background-image": "/rbjob/files/not-an-image.png"}),
                   ("refuse_no_bg_image", {}, {"background": "image"}),
                   ("refuse_bad_key_file", {}, {"inference-key": "", "key-file": "/rbjob/files/not-an-image.png"}),
                   ("refuse_bad_url", {}, {"server-url": "localhost:8080"})]
        cases += [{"name": n, "input": photo, "setup": st, "args": {**base, **args}} for n, st, args in refused]
        cases.append({"name": "fake_ok_soft", "input": photo, "setup": {"select": [0, 0, 64, 64]},
                      "args": {**base, "background": "transparent", "grow": -3, "feather": 6}})
        with FakeMaskServer(key="k") as uploads:  # gets only the UPLOADS cases, in order
            cases += [{"name": name, "input": photo, "setup": setup,
                       "args": {"server-url": uploads.url, "inference-key": "k", "background": "transparent"}}
                      for name, setup in UPLOADS.items()]
            run = run_gimp(job, cases)
            run.uploads = dict(zip(UPLOADS, uploads.uploads, strict=False))
            return run


# Layers whose upload (GIMP's PNG export of the layer) the fake server keeps: a smaller, moved layer with
# an old mask (which must not reach the alpha) over another layer; float with alpha; 16-bit greyscale.
UPLOADS = {
    "upload_offset_masked": {"crop_layer": [96, 40, 320, 400], "offsets": [150, 70], "under_layer": True,
                             "old_mask": True},
    "upload_float_alpha": {"precision": "float-linear", "alpha": True},
    "upload_gray_u16": {"gray": True, "precision": "u16-linear"},
}


@pytest.fixture(scope="module")
def rollback_batch(gimp_ready: None, tmp_path_factory: pytest.TempPathFactory) -> GimpRun:
    """REPLACE_BACKGROUND_FAULT=edit makes the plug-in raise half-way through its edit (test hook)."""
    job = tmp_path_factory.mktemp("gimp-rollback")
    photo = in_job(job, PHOTO)
    with FakeMaskServer(key="k") as srv:
        base = {"server-url": srv.url, "inference-key": "k", "background": "color", "background-color": BLUE}
        cases = [{"name": f"rollback_{output}", "input": photo,
                  "setup": {"old_mask": output == "mask", "select": [10, 10, 100, 100], "under_layer": True},
                  "args": {**base, "output": output}} for output in ("mask", "new-layer", "apply")]
        cases.append({"name": "rollback_blur_alpha", "input": photo, "setup": {"alpha": True},
                      "args": {**base, "background": "blur", "grow": 2, "feather": 3}})
        cases.append({"name": "rollback_no_alpha", "input": photo, "args": {**base}})
        cases.append({"name": "rollback_mask_plain", "input": photo, "setup": {"old_mask": True, "under_layer": True},
                      "args": {**base, "edge": "off"}})
        return run_gimp(job, cases, env={"REPLACE_BACKGROUND_FAULT": "edit"})


def test_procedure_is_registered(fake_batch: GimpRun) -> None:
    res = fake_batch.results
    assert res.get("registered"), (
        f"{PROC_NAME} is not registered in GIMP (plug-in not executable, folder/file name mismatch or a "
        f"Python error at query time); GIMP log:\n{fake_batch.log[-4000:]}"
    )
    assert res["menu_paths"] == ["<Image>/Filters/Enhance"]
    assert res["menu_label"] == "Replace Background\u2026"
    assert res["image_types"] == "RGB*, GRAY*"
    for arg in ("server-url", "model-name", "inference-key", "key-file", "timeout", "background",
                "background-color", "background-image", "blur-radius", "mirror-pass", "edge", "output", "grow",
                "feather", "keep-selected-people", "zoom", "match-light"):
        assert arg in res["arguments"]
    assert "Traceback" not in fake_batch.log, fake_batch.log[-4000:]


@pytest.mark.parametrize(
    "name,needles",
    [
        ("fake_html", ["answered text/html instead of a PNG mask", "Fix:"]),
        ("fake_size", ["513x512 mask for a 512x512 layer", "Fix:"]),
        ("fake_truncated", ["not a usable PNG mask", "truncated", "Fix:"]),
        ("fake_rgb", ["8-bit RGB PNG", "8-bit greyscale", "Fix:"]),
        ("fake_rgb_cutout", ["8-bit RGB PNG", "the cut-out must be an 8-bit RGB+alpha PNG", "Fix:"]),
        ("fake_http400", ["refused the request", "at least 16 pixels", "Fix:"]),
        ("fake_slow", ["did not answer within 2 s", "raise Timeout"]),
    ],
)
def test_malformed_answers_fail_cleanly(fake_batch: GimpRun, name: str, needles: list[str]) -> None:
    assert_failed_cleanly(fake_batch.case(name), needles, hint=False)  # "Fix:" is a needle where it is due


@pytest.mark.parametrize(
    "name,needles",
    [
        ("refuse_group", ["is a layer group", "Merge Layer Group"]),
        ("refuse_locked", ["locked pixels", "New layer"]),
        ("refuse_bad_bg_image", ["could not open the background image", "not-an-image.png"]),
        ("refuse_no_bg_image", ["no Background image was chosen"]),
        ("refuse_bad_key_file", ["not-an-image.png cannot be read as JSON", "key_file.json"]),
        ("refuse_bad_url", ["is not an http:// or https:// address"]),
    ],
)
def test_bad_input_is_refused_before_any_change(fake_batch: GimpRun, name: str, needles: list[str]) -> None:
    assert_failed_cleanly(fake_batch.case(name), needles)


@pytest.mark.parametrize("name", ["rollback_mask", "rollback_new-layer", "rollback_apply", "rollback_blur_alpha",
                                  "rollback_no_alpha", "rollback_mask_plain"])
def test_failure_half_way_through_the_edit_is_rolled_back(rollback_batch: GimpRun, name: str) -> None:
    """Old mask restored, added alpha removed, new layers gone, selection and visibility as before."""
    needles = ["failed unexpectedly", "fault injected"]
    assert_failed_cleanly(rollback_batch.case(name), needles, hint=False, undo_clean=False)


def _chunks(png: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    pos, kinds = 8, []
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kinds.append(png[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


@pytest.mark.parametrize("name,mode", [("upload_offset_masked", "RGB"), ("upload_float_alpha", "RGBA"),
                                       ("upload_gray_u16", "L")])
def test_the_upload_is_the_layers_own_pixels(fake_batch: GimpRun, name: str, mode: str) -> None:
    """GIMP's PNG export sends exactly the pixels the layer holds, read as 8-bit sRGB: at its own size,
    not the canvas's; without its layer mask, the layers around it or its offsets; greyscale stays one
    channel and alpha is kept. No metadata: an Exif orientation would make the server turn the photo."""
    case = successful(fake_batch, name)
    png = fake_batch.uploads[name]
    sent = Image.open(io.BytesIO(png))
    assert sent.mode == mode and list(sent.size) == case["layer"]["size"]
    assert not sent.info.get("interlace")
    want = layer_pixels(fake_batch, case)
    got = np.asarray(sent.convert("RGBA"))
    assert np.array_equal(got, want), f"upload differs from the layer in {np.count_nonzero(got != want)} values"
    assert _chunks(png)[0] == b"IHDR" and _chunks(png)[-1] == b"IEND"
    # only the pixels and the statement that they are sRGB (sRGB, gAMA, cHRM): no eXIf, iCCP, text, offsets
    assert set(_chunks(png)) <= {b"IHDR", b"sRGB", b"gAMA", b"cHRM", b"IDAT", b"IEND"}, _chunks(png)


def test_grow_and_feather_work_and_ignore_the_selection(fake_batch: GimpRun) -> None:
    """Shrink + feather make the mask smaller and softer than the server's, over the whole layer."""
    case = successful(fake_batch, "fake_ok_soft")
    got = gimp_mask(fake_batch, case).astype(int)
    sent = np.frombuffer(ellipse_mask(512, 512), np.uint8).reshape(512, 512).astype(int)
    assert got.sum() < sent.sum()  # shrunk
    soft = lambda m: np.count_nonzero((m > 0) & (m < 255))  # noqa: E731
    assert soft(got) > 2 * soft(sent)  # feathered
    # the selection (top-left 64x64) must not limit the filters: far from it the edge moved too
    row = 256  # the 50% edge moved inwards by about the shrink radius
    assert np.argmax(got[row] >= 128) - np.argmax(sent[row] >= 128) >= 2


def _fake_matte() -> np.ndarray:
    return np.frombuffer(ellipse_mask(512, 512), np.uint8).reshape(512, 512)


def test_edge_colours_go_to_a_masked_copy(fake_batch: GimpRun) -> None:
    """Edge=colours (the default) with Output=mask: the cut-out's alpha is the layer mask of a copy whose
    soft-edge pixels hold the cut-out's colours; the photo layer stays, hidden, with its pixels and old mask."""
    case = successful(fake_batch, "fake_edge_colours")
    before, after = case["before"]["layers"], case["after"]["layers"]
    name = before[0]["name"]
    assert [lyr["name"] for lyr in after] == [f"{name} (person)", "Background (Replace Background)", name]
    assert after[0]["id"] == case["result_layer"] and after[1]["id"] == case["background_layer"]
    assert after[2] == {**before[0], "visible": False}, "the photo layer must be kept as it was, only hidden"
    assert case["after"]["selected"] == [case["result_layer"]]
    mask = gimp_mask(fake_batch, case)
    assert np.array_equal(mask, _fake_matte())
    photo, person = layer_pixels(fake_batch, case), result_pixels(fake_batch, case)
    assert_person_colours(person, photo, mask, np.broadcast_to(np.array(CUTOUT_RGB), photo[..., :3].shape))
    assert_composite(exported(case, fake_batch), person, mask, BLUE_RGB)


def test_edge_matte_goes_on_the_photo(fake_batch: GimpRun) -> None:
    """Edge=matte: the cut-out's alpha replaces the photo layer's mask; its pixels are untouched."""
    case = successful(fake_batch, "fake_edge_matte")
    before, after = case["before"]["layers"], case["after"]["layers"]
    assert [lyr["id"] for lyr in after] == [before[0]["id"], case["background_layer"]]
    assert after[0]["id"] == case["result_layer"] and after[0]["pixels"] == before[0]["pixels"]
    assert np.array_equal(gimp_mask(fake_batch, case), _fake_matte())


def test_edge_colours_in_a_greyscale_image(fake_batch: GimpRun) -> None:
    """The colours are converted to the image's mode (grey here) before the edit; Output=apply bakes them in."""
    case = successful(fake_batch, "fake_edge_colours_gray_apply")
    assert case["after"]["base_type"] == 1 and len(case["after"]["layers"]) == 1
    comp = exported(case, fake_batch)
    alpha = comp[..., 3]
    assert np.abs(alpha.astype(int) - _fake_matte()).max() <= 1
    grey = round(0.2126 * CUTOUT_RGB[0] + 0.7152 * CUTOUT_RGB[1] + 0.0722 * CUTOUT_RGB[2])
    soft = (_fake_matte() >= 64) & (_fake_matte() < 255)
    assert soft.any()
    # GIMP's greyscale conversion works in linear light: compare loosely, but far from the photo's values
    assert np.abs(comp[soft][:, 0].astype(int) - grey).max() <= 40, comp[soft][:, 0].min()
    photo = layer_pixels(fake_batch, case)
    inside = _fake_matte() == 255
    assert np.abs(comp[inside][:, 0].astype(int) - photo[inside][:, 0]).max() <= 1


# --- batch 2: the real TorchServe -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_batch(gimp_ready: None, real_server: object, tmp_path_factory: pytest.TempPathFactory) -> GimpRun:
    job = tmp_path_factory.mktemp("gimp-real")
    photo = in_job(job, PHOTO)
    bg_image = in_job(job, _bg_image(job / "bg-source.png"))
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
    mean_bg, mean_photo = (_to_linear(x[..., :3].astype(float)).mean((0, 1)) for x in (bg, photo))
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


# --- batch 4: the interactive dialog ----------------------------------------------------------------


def test_dialog_runs_and_remembers_the_options(tmp_path: Path) -> None:
    """Filters > Enhance > Replace Background…: the ProcedureDialog opens, OK runs it, and a later
    'Repeat' (WITH_LAST_VALS, no arguments given) reuses what the dialog ran with."""
    skip_unless_gimp(ui=True, what="dialog test")
    photo = in_job(tmp_path, PHOTO)
    with FakeMaskServer(key="k") as srv:
        cases = [
            {"name": "dialog", "input": photo, "run_mode": "interactive",
             "args": {"server-url": srv.url, "inference-key": "k", "background": "color",
                      "background-color": BLUE, "output": "new-layer", "edge": "off"}},
            {"name": "repeat", "input": photo, "run_mode": "last-vals"},
        ]
        run = run_gimp(tmp_path, cases, ui=True, timeout=300)
        assert len(srv.requests) == 2, run.log[-3000:]
    assert (tmp_path / "dialog-1.png").exists(), "no dialog appeared:\n" + run.log[-3000:]
    for name in ("dialog", "repeat"):
        case = run.case(name)
        assert case["status"] == "success", (case.get("error"), run.log[-3000:])
        after = case["after"]["layers"]
        assert after[0]["name"].endswith("(background replaced)"), "last values (new-layer output) not reused"
        photo_px = layer_pixels(run, case)
        mask = np.frombuffer(ellipse_mask(512, 512), np.uint8).reshape(512, 512)
        assert_composite(exported(case, run), photo_px, mask, BLUE_RGB)
    assert "duplicate mnemonic" not in run.log, "two dialog labels share a keyboard shortcut"
