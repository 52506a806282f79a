"""The photographer's choices in the real GIMP 3: who stays, the light, small people, and the dialog's order.

- ``choices_batch`` (fake server, which keeps every request's headers and form fields): the points
  "Keep only the people in the selection" sends, in the layer's pixels (a moved and cropped layer
  too, two separate parts, the option off, a selection off the layer); Find small people as X-Zoom, Find
  all people as X-Crowd;
  Match light's request (the background GIMP shows, sent with the layer) and its result (the
  person's matched colours on a copy, the photo untouched).
- ``real_batch`` (the real TorchServe): a photo of two people side by side and a selection around one
  (the mask keeps that one); Match light onto an image (the person layer holds the server's matched
  colours for that layer and background).
- ``test_dialog_leads_with_the_choices``: the dialog on a virtual display; its widget tree, dumped by
  the plug-in's test hook, shows the groups in order and the connection settings folded away.
Without root or the GIMP root every test here skips with the reason.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from fake_mask_server import HARMONIZED_RGB, FakeMaskServer, core, ellipse_mask
from gimp_harness import GimpRun, assert_failed_cleanly, in_job, run_gimp, skip_unless_gimp
from PIL import Image

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
PHOTO = HERE / "data" / "astronaut.jpg"
DUMP = "dialog-tree.json"


def two_people(folder: Path) -> Path:
    """The test photo twice, side by side: two people, 1024x512, apart."""
    one = Image.open(PHOTO).convert("RGB")
    pair = Image.new("RGB", (one.width * 2, one.height))
    pair.paste(one, (0, 0))
    pair.paste(one, (one.width, 0))
    path = folder / "two-people.png"
    pair.save(path)
    return path


def keep_points(headers: dict) -> list[tuple[int, int]]:
    value = headers.get("X-Keep", "")
    return [tuple(int(v) for v in point.split(",")) for point in value.split(";") if point]


def assert_near(point: tuple[int, int], want: tuple[float, float], tolerance: float = 4.0) -> None:
    assert abs(point[0] - want[0]) <= tolerance and abs(point[1] - want[1]) <= tolerance, (point, want)


# --- the fake server: what is sent, and what becomes of Match light's answer ----------------------

KEEP_CASES = {
    "keep_left": ({"select": [0, 0, 512, 512]}, {}),
    # the layer keeps x 100..899 of the photo and moves to (40, 30): points are in the layer's pixels
    "keep_moved_layer": ({"crop_layer": [100, 0, 800, 512], "offsets": [40, 30], "select": [300, 100, 200, 200]}, {}),
    "keep_two_parts": ({"select": [0, 0, 300, 300], "select_more": [[700, 50, 200, 300]]}, {}),
    "keep_off": ({"select": [0, 0, 512, 512]}, {"keep-selected-people": False}),
    "keep_off_the_layer": ({"crop_layer": [0, 0, 400, 512], "select": [600, 0, 200, 200]}, {}),
    "zoom_on": ({}, {"zoom": "on"}),
    "crowd_on": ({}, {"crowd": "on"}),
    "crowd_off": ({}, {"crowd": "off"}),
}


@pytest.fixture(scope="module")
def choices_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[GimpRun, dict[str, dict]]:
    """One GIMP start; returns the run and, per case that reached the server, the request it got."""
    skip_unless_gimp(what="GIMP choices tests")
    job = tmp_path_factory.mktemp("gimp-choices")
    pair = in_job(job, two_people(job))
    photo = in_job(job, PHOTO)
    Image.new("RGB", (300, 200), (20, 180, 40)).save(job / "green.png")
    green = in_job(job, job / "green.png")
    with FakeMaskServer(key="k") as srv:
        base = {"server-url": srv.url, "inference-key": "k", "background": "transparent", "edge": "off"}
        cases = [{"name": name, "input": pair, "setup": setup, "args": {**base, **args}}
                 for name, (setup, args) in KEEP_CASES.items()]
        light = {**base, "match-light": 0.6, "edge": "colours"}
        cases += [
            {"name": "light_image", "input": photo,
             "args": {**light, "background": "image", "background-image": green}},
            {"name": "light_colour", "input": photo, "args": {**light, "background": "color"}},
            {"name": "light_blur_edge_off", "input": photo,
             "args": {**light, "background": "blur", "edge": "off", "match-light": 1.0}},
        ]
        run = run_gimp(job, cases)
        asked = [c["name"] for c in run.results.get("cases", []) if c.get("status") == "success"]
        assert len(asked) == len(srv.requests), run.log[-3000:]
        return run, dict(zip(asked, srv.requests, strict=True))


def test_keep_sends_the_middle_of_the_selection(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    """A rectangle around the left person: one point, its middle, in the layer's pixels."""
    _, sent = choices_batch
    (point,) = keep_points(sent["keep_left"]["headers"])
    assert_near(point, (256, 256))
    # the selection (300..500, 100..300 in the image) seen from a layer at (40, 30) that starts at photo x 100
    (point,) = keep_points(sent["keep_moved_layer"]["headers"])
    assert_near(point, (400 - 40, 200 - 30))


def test_keep_sends_one_point_per_part(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    """Two separate parts (a square and an ellipse): two points, the larger part's first."""
    _, sent = choices_batch
    square, ellipse = keep_points(sent["keep_two_parts"]["headers"])
    assert_near(square, (150, 150))
    assert_near(ellipse, (800, 200))


def test_keep_off_or_no_selection_keeps_everyone(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    _, sent = choices_batch
    assert "X-Keep" not in sent["keep_off"]["headers"]
    assert "X-Keep" not in sent["zoom_on"]["headers"]  # no selection


def test_a_selection_off_the_layer_is_refused(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    run, _ = choices_batch
    assert_failed_cleanly(run.case("keep_off_the_layer"), ["does not touch the layer", "Select > None"])


def test_find_small_people_is_the_zoom_option(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    _, sent = choices_batch
    assert sent["zoom_on"]["headers"]["X-Zoom"] == "on"
    assert sent["keep_left"]["headers"]["X-Zoom"] == core.contract.DEFAULT_ZOOM  # the server's own default


def test_find_all_people_is_the_crowd_option(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    _, sent = choices_batch
    assert sent["crowd_on"]["headers"]["X-Crowd"] == "on" and sent["crowd_off"]["headers"]["X-Crowd"] == "off"
    assert sent["keep_left"]["headers"]["X-Crowd"] == core.contract.DEFAULT_CROWD  # the server's own default


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_match_light_sends_the_background_gimp_shows(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    """Match light goes with the background the plug-in puts under the person: layer-sized, as a form field;
    with a colour background there is no light to match, and nothing more is sent."""
    _, sent = choices_batch
    image = sent["light_image"]
    assert image["fields"] == ["background", "image"] and _png_size(image["background"]) == (512, 512)
    assert np.asarray(Image.open(io.BytesIO(image["background"])).convert("RGB"))[256, 256].tolist() == [20, 180, 40]
    assert image["headers"]["X-Harmonize"] == "0.6" and image["headers"]["X-Mode"] == "cutout"
    blur = sent["light_blur_edge_off"]
    assert blur["fields"] == ["background", "image"] and blur["headers"]["X-Harmonize"] == "1"
    assert blur["headers"]["X-Mode"] == "cutout" and blur["headers"]["X-Matting"] == "off"
    colour = sent["light_colour"]
    assert colour["fields"] == [] and "X-Harmonize" not in colour["headers"]


def test_match_light_colours_the_whole_person_on_a_copy(choices_batch: tuple[GimpRun, dict[str, dict]]) -> None:
    """The matched colours cover the person (not just the soft edge) on "(person)", above the photo,
    which stays hidden and untouched: non-destructive as the rest."""
    run, _ = choices_batch
    case = run.case("light_image")
    assert case["status"] == "success", case.get("error")
    layers = case["after"]["layers"]
    person, background, photo = layers
    assert person["name"].endswith("(person)") and person["visible"]
    assert background["name"] == "Background (Replace Background)"
    assert photo == {**case["before"]["layers"][0], "visible": False}
    w, h = case["result_size"]
    pixels = np.fromfile(run.path("light_image.result.rgba"), np.uint8).reshape(h, w, 4)
    alpha = np.frombuffer(ellipse_mask(512, 512), np.uint8).reshape(512, 512)
    assert (pixels[alpha > 0][:, :3] == HARMONIZED_RGB).all()
    original = np.fromfile(run.path("light_image.layer.rgba"), np.uint8).reshape(h, w, 4)
    assert np.array_equal(pixels[alpha == 0], original[alpha == 0])


# --- the real server: keep one of two people, match the light -----------------------------------------


def _server_keeps(server: object) -> bool:
    """True when the server knows the keep option: it refuses a badly formed point."""
    photo = io.BytesIO()
    Image.new("RGB", (32, 32)).save(photo, "PNG")
    answer = requests.post(f"{server.inference_url}/predictions/{server.model_name}", data=photo.getvalue(),
                           headers={"Content-Type": "image/png", "Authorization": f"Bearer {server.inference_key}",
                                    "X-Keep": "not-a-point"}, timeout=120)
    return answer.status_code == 400


def _sunset(folder: Path) -> Path:
    """A warm, dark background of the layer's size (512x512), so 'cover' leaves it as it is."""
    ramp = np.linspace(0.0, 1.0, 512)[:, None, None]
    image = (np.array([250, 120, 40]) * (1 - ramp) + np.array([60, 20, 70]) * ramp).astype(np.uint8)
    path = folder / "sunset.png"
    Image.fromarray(np.broadcast_to(image, (512, 512, 3)).copy()).save(path)
    return path


@pytest.fixture(scope="module")
def real_batch(gimp_ready: None, real_server: object,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[GimpRun, object]:
    """Two people with a selection around the left one, the same without a selection, and Match light."""
    server = real_server
    if not _server_keeps(server):
        reason = "the server does not know the keep option (a bad point was not refused)"
        print(f"SKIP GIMP keep and light tests: {reason}")
        pytest.skip(reason)
    job = tmp_path_factory.mktemp("gimp-choices-real")
    pair = in_job(job, two_people(job))
    args = {"server-url": server.inference_url, "model-name": server.model_name,
            "inference-key": server.inference_key, "background": "transparent"}
    light = {**args, "background": "image", "background-image": in_job(job, _sunset(job)), "match-light": 1.0}
    cases = [{"name": "keep_left", "input": pair, "setup": {"select": [40, 20, 440, 480]}, "args": args},
             {"name": "everyone", "input": pair, "args": args},
             {"name": "light", "input": in_job(job, PHOTO), "args": light}]
    return run_gimp(job, cases), server


@pytest.mark.serve
def test_keep_one_of_two_people(real_batch: tuple[GimpRun, object]) -> None:
    """Two people side by side and a rectangle around the left one: the layer mask keeps that one only."""
    run, _ = real_batch
    masks = {}
    for name in ("keep_left", "everyone"):
        case = run.case(name)
        assert case["status"] == "success", case.get("error")
        masks[name] = np.fromfile(run.path(f"{name}.mask.y8"), np.uint8).reshape(512, 1024) > 127
    left, right = masks["keep_left"][:, :512], masks["keep_left"][:, 512:]
    assert masks["everyone"][:, 512:].mean() > 0.1, "without a selection both people stay"
    assert left.mean() > 0.1 and right.mean() < 0.01, (left.mean(), right.mean())
    assert (masks["keep_left"] & ~masks["everyone"]).mean() < 0.001, "keeping drops people, it adds nothing"


@pytest.mark.serve
def test_match_light_is_the_servers_matched_cutout(real_batch: tuple[GimpRun, object]) -> None:
    """Match light = 1 onto a sunset: the person layer holds the server's light-matched colours for exactly
    this layer and this background, which differ from the photo's; the photo stays untouched underneath."""
    run, server = real_batch
    case = run.case("light")
    assert case["status"] == "success", case.get("error")
    photo = np.fromfile(run.path("light.layer.rgba"), np.uint8).reshape(512, 512, 4)
    person = np.fromfile(run.path("light.result.rgba"), np.uint8).reshape(512, 512, 4)
    layer_png, background_png = io.BytesIO(), io.BytesIO()
    Image.fromarray(photo[..., :3]).save(layer_png, "PNG")
    background_png.write((run.job_dir / "files" / "sunset.png").read_bytes())
    answer = requests.post(
        f"{server.inference_url}/predictions/{server.model_name}",
        files={"image": ("layer.png", layer_png.getvalue(), "image/png"),
               "background": ("sunset.png", background_png.getvalue(), "image/png")},
        headers={"Authorization": f"Bearer {server.inference_key}", "X-Mode": "cutout", "X-Matting": "on",
                 "X-TTA": "flip", "X-Harmonize": "1"}, timeout=300)
    assert answer.status_code == 200, answer.text[:300]
    cut = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGBA"))
    seen = cut[..., 3] > 0
    assert np.abs(person[seen][:, :3].astype(int) - cut[seen][:, :3]).max() <= 1, "not the server's colours"
    moved = np.abs(person[seen][:, :3].astype(int) - photo[seen][:, :3]).mean()
    assert moved > 3, f"the person's colours barely moved ({moved:.1f} levels on average)"
    assert np.array_equal(person[~seen], photo[~seen]), "outside the person the photo's own pixels"
    assert case["after"]["layers"][-1] == {**case["before"]["layers"][0], "visible": False}


# --- the dialog ---------------------------------------------------------------------------------------


def test_dialog_leads_with_the_choices(tmp_path: Path) -> None:
    """The dialog shows the background first and the connection settings last, folded; OK runs it."""
    skip_unless_gimp(ui=True, what="dialog order test")
    photo = in_job(tmp_path, PHOTO)
    with FakeMaskServer(key="k") as srv:
        cases = [{"name": "dialog", "input": photo, "run_mode": "interactive", "setup": {"select": [100, 50, 300, 400]},
                  "args": {"server-url": srv.url, "inference-key": "k", "edge": "off"}}]
        run = run_gimp(tmp_path, cases, ui=True, timeout=300, env={"REPLACE_BACKGROUND_DIALOG_DUMP": f"/rbjob/{DUMP}"})
        assert len(srv.requests) == 1, run.log[-3000:]
    assert (tmp_path / "dialog-1.png").exists(), "no dialog appeared:\n" + run.log[-3000:]
    assert run.case("dialog")["status"] == "success"
    assert_near(keep_points(srv.requests[0]["headers"])[0], (250, 250))
    tree = json.loads((tmp_path / DUMP).read_text())
    widgets = tree["widgets"]
    shown = {w["text"]: w for w in widgets if w["text"]}
    # a group's title is the topmost text of that name (the Background argument's label is under its title)
    titles = ["Background", "Who stays", "Light", "Edge", "Output", "Connection settings"]
    tops = [min(w["y"] for w in widgets if w["text"] == t and w["shown"]) for t in titles]
    assert tops == sorted(tops), dict(zip(titles, tops, strict=True))
    assert tops[0] == min(w["y"] for w in widgets if w["shown"]), "the dialog opens on the background"
    for label in ("Server URL", "Model name", "Inference key", "Key file", "Timeout (s)"):
        assert label in shown and not shown[label]["shown"], f"{label} must be folded away: {shown.get(label)}"
    assert any("Usually left as they are" in t and not w["shown"] for t, w in shown.items())
    expander = next(w for w in widgets if w["type"] == "GtkExpander")
    assert expander["shown"] and not expander["expanded"]
    keep = shown["Keep only the people in the selection"]
    assert keep["shown"] and keep["sensitive"], "with a selection, the option is there to use"
    assert shown["Match light"]["shown"] and not shown["Match light"]["sensitive"], "a colour has no light"
    assert tree["height"] <= 1024, tree["height"]
    assert "mnemonic" not in run.log, "every label has a keyboard shortcut of its own"
