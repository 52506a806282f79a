"""End to end: a real GIMP 3 runs our procedure through the PDB, against the fake server.

Each batch of cases is ONE headless gimp-console start (gimp_harness.run_gimp, gimp_driver.py):
it loads the test photo, prepares the layer, calls ``python-fu-replace-background``
non-interactively, dumps the layer mask and the layer's pixels, and exports the composite.
The tests below then check pixels on the host, and that every failure leaves the image exactly as
it was. The same against the real TorchServe: test_gimp_real_server.py.

- ``fake_batch``: the fake server's scripted faults (HTML, wrong size, truncated, RGB, 4xx, too
  slow), refusals before any change (group, locked layer, bad files or URL), grow/feather, and
  the registration check.
- ``rollback_batch``: a test hook (REPLACE_BACKGROUND_FAULT=edit) fails the edit half-way.
- the dialog test: GIMP under a virtual X display; the dialog opens, OK runs it, Repeat reuses it.
Without root or the GIMP root every test here skips with the reason; they never pass silently.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fake_mask_server import CUTOUT_RGB, FakeMaskServer, ellipse_mask
from gimp_checks import (
    BLUE,
    BLUE_BACKGROUND,
    BLUE_RGB,
    PHOTO,
    assert_composite,
    assert_person_colours,
    exported,
    gimp_mask,
    layer_pixels,
    result_pixels,
    successful,
)
from gimp_harness import PROC_NAME, GimpRun, assert_failed_cleanly, in_job, run_gimp, skip_unless_gimp
from PIL import Image

pytestmark = pytest.mark.gimp


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
                "feather", "keep-selected-people", "zoom", "crowd", "match-light"):
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

