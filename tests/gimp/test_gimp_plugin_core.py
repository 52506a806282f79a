"""Unit tests of the plug-in's standard-library half (HTTP, answer checks, messages), outside GIMP.

These run everywhere (no root, no GIMP, no TorchServe): the HTTP cases use the small fake
server in fake_mask_server.py. The real end-to-end behaviour is in test_gimp_plugin_e2e.py and
test_gimp_real_server.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_mask_server import HARMONIZED_RGB, FakeMaskServer, core, ellipse_mask
from PIL import Image

from tests.plugin_folder import SOURCE_DIR, installed_folder

PLUGIN_MAIN = SOURCE_DIR / "replace-background.py"
# the GIMP-free modules as a user's GIMP gets them: install.py copies handler/contract.py in as the contract
STDLIB_HALF = ("replace_background_core", "replace_background_settings", "replace_background_messages",
               "replace_background_keep", "replace_background_contract")
HELPERS = tuple(installed_folder() / f"{name}.py" for name in STDLIB_HALF)
# the modules that do GIMP's work for the entry file; they need gi, and only the entry file is a plug-in
GIMP_HALF = tuple(p for p in installed_folder().glob("replace_background_*.py") if p.stem not in STDLIB_HALF)


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _settings(url: str, **kw: object) -> core.ServerSettings:
    return core.ServerSettings(url=url, **kw)


# --- the plug-in files themselves --------------------------------------------------------------


def test_plugin_layout_is_what_gimp_needs() -> None:
    """GIMP 3 silently ignores a plug-in whose file is not executable or not named like its folder."""
    assert PLUGIN_MAIN.name == SOURCE_DIR.name + ".py"
    assert os.access(PLUGIN_MAIN, os.X_OK), "replace-background.py must be executable (git mode 100755)"
    assert PLUGIN_MAIN.read_text().startswith("#!/usr/bin/env python3\n")
    for path in (PLUGIN_MAIN, *HELPERS, *GIMP_HALF):
        compile(path.read_text(), str(path), "exec")  # a syntax error would only show on GIMP's stderr
    # the helpers must not be picked up as more plug-ins; the standard-library half must not need gi
    assert {p.stem for p in GIMP_HALF} >= {"replace_background_pixels", "replace_background_prepare",
                                           "replace_background_edit"}, GIMP_HALF
    for helper in (*HELPERS, *GIMP_HALF):
        assert not os.access(helper, os.X_OK), helper
    for helper in HELPERS:
        assert "import gi" not in helper.read_text() and "from gi" not in helper.read_text(), helper


def test_the_plugin_run_from_the_checkout_loads_the_projects_contract() -> None:
    """Preferences > Folders > Plug-ins = <project>/gimp_plugin runs the core in place, where no contract
    was copied: it must load handler/contract.py of that checkout (a fresh Python, as GIMP starts one)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import replace_background_core as core; "
            "print(core.contract.__file__, core.contract.__name__, core.DEFAULT_MODEL)")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(SOURCE_DIR)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(SOURCE_DIR.parents[1] / "handler" / "contract.py"), "replace_background_contract",
                   "person_segmenter"]
    assert not (SOURCE_DIR / "replace_background_contract.py").exists(), "the repository holds one contract"


def test_plugin_uses_only_the_standard_library() -> None:
    """GIMP's bundled Python (Windows, macOS, Flatpak) has no numpy/requests/PIL."""
    import ast

    allowed = set(sys.stdlib_module_names) | {"gi"} | {h.stem for h in (*HELPERS, *GIMP_HALF)}
    for path in (PLUGIN_MAIN, *HELPERS, *GIMP_HALF):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# --- checks of the answer (GIMP's own PNG plug-in encodes the layer and decodes the mask) ---------


def test_a_whole_png_passes_and_a_cut_one_is_refused() -> None:
    """A cut-off answer must be refused before GIMP's loader, which would leave a half image behind."""
    mask = _png(Image.new("L", (30, 40)))
    core.check_png_complete(mask, "http://srv")
    for cut in (mask[:-1], mask[: len(mask) // 2], mask[:8]):
        with pytest.raises(core.PluginError, match="truncated") as err:
            core.check_png_complete(cut, "http://srv")
        assert "http://srv" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(core.PluginError, match="PNG signature") as err:
        core.check_png_complete(b"<html>oops</html>", "http://srv")
    assert "<html>oops" in str(err.value)


@pytest.mark.parametrize("kind,size,needle", [
    ("8-bit RGB", (30, 40), "answered with a 8-bit RGB PNG, but the mask must be an 8-bit greyscale PNG"),
    ("16-bit greyscale", (30, 40), "16-bit greyscale PNG"),
    ("8-bit greyscale+alpha", (30, 40), "8-bit greyscale+alpha PNG"),
    ("8-bit greyscale", (31, 40), "31x40 mask for a 30x40 layer"),
])
def test_check_mask_format_refuses_with_a_reason(kind: str, size: tuple[int, int], needle: str) -> None:
    with pytest.raises(core.PluginError) as err:
        core.check_mask_format(kind, size, (30, 40), "http://srv")
    assert needle in str(err.value) and "Fix:" in str(err.value)
    core.check_mask_format("8-bit greyscale", (30, 40), (30, 40), "http://srv")  # the promised mask passes


def test_check_mask_format_for_a_cutout() -> None:
    """Edge=matte/colours ask for mode=cutout, which must be 8-bit RGBA; a greyscale mask is refused then."""
    core.check_mask_format("8-bit RGB+alpha", (30, 40), (30, 40), "http://srv", "cutout")
    with pytest.raises(core.PluginError) as err:
        core.check_mask_format("8-bit greyscale", (30, 40), (30, 40), "http://srv", "cutout")
    assert "the cut-out must be an 8-bit RGB+alpha PNG (mode=cutout" in str(err.value)
    with pytest.raises(core.PluginError) as err:
        core.check_mask_format("8-bit RGB+alpha", (31, 40), (30, 40), "http://srv", "cutout")
    assert "31x40 cut-out for a 30x40 layer" in str(err.value)


def test_edge_option_names_what_is_asked_for() -> None:
    """off: the model's mask; matte and colours: the edge stage's cut-out (its alpha is the soft matte)."""
    assert core.EDGE_MODES == {"off": "mask", "matte": "cutout", "colours": "cutout"}
    settings = core.resolve_server("http://h:1", "m", "k", None, mode=core.EDGE_MODES["colours"])
    assert settings.mode == "cutout"


# --- settings, key file, URL -------------------------------------------------------------------


def test_predictions_url() -> None:
    assert core.predictions_url("http://127.0.0.1:8080", "person_segmenter") == (
        "http://127.0.0.1:8080/predictions/person_segmenter"
    )
    assert core.predictions_url(" http://h:1/ ", "m") == "http://h:1/predictions/m"
    full = "http://h:1/predictions/other"
    assert core.predictions_url(full, "ignored") == full
    for bad in ("127.0.0.1:8080", "ftp://h", "", "http://"):
        with pytest.raises(core.PluginError, match="not an http"):
            core.predictions_url(bad, "m")
    with pytest.raises(core.PluginError, match="Model name is empty"):
        core.predictions_url("http://h:1", " ")


def test_mask_request_headers() -> None:
    """A raw PNG body with the mask mode; X-TTA only when a mirror pass is asked for."""
    url, plain = core.build_mask_request(core.ServerSettings(url="http://h:1", key="k"))
    assert url == "http://h:1/predictions/person_segmenter"
    assert plain["Content-Type"] == "image/png" and plain["X-Mode"] == "mask"
    assert plain["Authorization"] == "Bearer k" and "X-TTA" not in plain
    _, flip = core.build_mask_request(core.ServerSettings(url="http://h:1", tta="flip"))
    assert flip["X-TTA"] == "flip" and "Authorization" not in flip
    assert "X-Matting" not in plain  # the edge stage only matters for a cut-out
    _, cut = core.build_mask_request(core.ServerSettings(url="http://h:1", mode="cutout"))
    assert cut["X-Mode"] == "cutout" and cut["X-Matting"] == "on"
    assert plain["X-Zoom"] == core.contract.DEFAULT_ZOOM and "X-Keep" not in plain and "X-Harmonize" not in plain
    assert plain["X-Crowd"] == core.contract.DEFAULT_CROWD == "auto"


def test_mask_request_sends_who_stays_the_zoom_the_crowd_and_the_light() -> None:
    """Keep, zoom, crowd and Match light go out as the API's headers (docs/API.md), in its own words."""
    settings = core.ServerSettings(url="http://h:1", mode="cutout", matting=False, zoom="on", keep="10,20;30,4",
                                   harmonize=0.4999, crowd="on")
    _, headers = core.build_mask_request(settings)
    assert headers["X-Zoom"] == "on" and headers["X-Keep"] == "10,20;30,4" and headers["X-Harmonize"] == "0.5"
    assert headers["X-Matting"] == "off" and headers["X-Crowd"] == "on"
    assert core.contract.ZOOM_MODES == core.contract.CROWD_MODES == ("off", "auto", "on")


@pytest.mark.parametrize("edge,light,plan", [
    ("colours", False, ("cutout", True, "edge")),
    ("matte", False, ("cutout", True, "")),
    ("off", False, ("mask", False, "")),
    # Match light needs the person's colours: a cut-out always, the edge stage as Edge says
    ("colours", True, ("cutout", True, "person")),
    ("matte", True, ("cutout", True, "person")),
    ("off", True, ("cutout", False, "person")),
])
def test_plan_request(edge: str, light: bool, plan: tuple[str, bool, str]) -> None:
    got = core.plan_request(edge, light)
    assert (got.mode, got.matting, got.colours) == plan
    with pytest.raises(core.PluginError, match="Unknown Edge"):
        core.plan_request("sharp", light)


def test_keep_points_one_per_part_of_the_selection() -> None:
    """A rectangle gives its middle; two separate parts give two points, the larger first; a ring's point
    lies on the ring, not in its hole; single-sample specks beside a real part are dropped."""
    import replace_background_keep as keep

    def grid(rows: list[str]) -> bytes:
        return bytes(255 if c == "#" else 0 for row in rows for c in row)

    xs, ys = [10 * i for i in range(7)], [100 + 10 * j for j in range(5)]
    rect = grid([".......", ".###...", ".###...", ".###...", "......."])
    assert keep.selection_points(rect, xs, ys) == [(20, 120)]
    two = grid(["###...#", "###...#", "###...#", "......#", "#.....#"])
    assert keep.selection_points(two, xs, ys) == [(10, 110), (60, 120)]  # the speck at (0, 140) is dropped
    ring = grid(["#######", "#.....#", "#.....#", "#.....#", "#######"])
    (x, y), = keep.selection_points(ring, xs, ys)
    assert ring[ys.index(y) * 7 + xs.index(x)] == 255
    assert keep.selection_points(grid(["......."] * 5), xs, ys) == []
    assert keep.selection_points(grid(["#.#.#.#"] * 5), xs, ys, limit=2) == [(0, 120), (20, 120)]
    soft = bytes(127 if b else 0 for b in rect)  # less than half selected counts as not selected
    assert keep.selection_points(soft, xs, ys) == []
    with pytest.raises(ValueError):
        keep.selection_points(rect[:-1], xs, ys)


def test_keep_sample_positions_and_value() -> None:
    import replace_background_keep as keep

    assert keep.sample_positions(50, 4) == [50, 51, 52, 53]
    assert keep.sample_positions(0, 1000, 4) == [125, 375, 625, 875]
    assert len(keep.sample_positions(0, 24000)) == keep.SAMPLES
    assert keep.keep_value([(1, 2), (30, 40)]) == "1,2;30,40"
    assert keep.MAX_POINTS == core.contract.MAX_KEEP_POINTS


def test_read_key_file(tmp_path: Path) -> None:
    good = tmp_path / "key_file.json"
    good.write_text(json.dumps({
        "management": {"key": "M", "expiration time": "x"},
        "inference": {"key": "INF-123", "expiration time": "x"},
        "API": {"key": "A"},
    }))
    assert core.read_key_file(str(good)) == "INF-123"
    assert core.resolve_key("", str(good)) == "INF-123"
    assert core.resolve_key(" typed ", str(good)) == "typed"
    assert core.resolve_key("", None) == ""
    with pytest.raises(core.PluginError, match="does not exist"):
        core.read_key_file(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(core.PluginError, match="cannot be read as JSON"):
        core.read_key_file(str(tmp_path / "bad.json"))
    (tmp_path / "nokey.json").write_text('{"management": {"key": "M"}}')
    with pytest.raises(core.PluginError, match='no "inference"'):
        core.read_key_file(str(tmp_path / "nokey.json"))


def _project(tmp_path: Path, running: bool = True) -> Path:
    """A project folder as `make serve` leaves it: serve/key_file.json and serve/server.json."""
    serve = tmp_path / "project" / "serve"
    serve.mkdir(parents=True)
    if running:
        (serve / "key_file.json").write_text(json.dumps({"inference": {"key": "INF"}, "API": {"key": "API"}}))
        (serve / "server.json").write_text(json.dumps({
            "inference_url": "http://127.0.0.1:18080", "management_url": "http://127.0.0.1:18081",
            "model_name": "person_segmenter", "pid": 1}))
    return serve.parent


def test_project_folder_from_the_install_record_or_the_checkout(tmp_path: Path) -> None:
    installed = tmp_path / "plug-ins" / "replace-background"
    installed.mkdir(parents=True)
    assert core.project_folder(str(installed)) == ""  # copied by hand: unknown
    (installed / core.PROJECT_RECORD).write_text("/home/me/replace background\n")
    assert core.project_folder(str(installed)) == "/home/me/replace background"
    # run from the checkout itself (Preferences > Folders > Plug-ins = <project>/gimp_plugin)
    assert core.project_folder(str(SOURCE_DIR)) == str(SOURCE_DIR.parents[1])


def test_defaults_mean_this_projects_server(tmp_path: Path) -> None:
    project = str(_project(tmp_path))
    key_file = str(Path(project) / "serve" / "key_file.json")
    s = core.resolve_server(core.DEFAULT_URL, core.DEFAULT_MODEL, "", None, project)
    assert (s.url, s.model, s.key, s.key_file) == ("http://127.0.0.1:18080", "person_segmenter", "INF", key_file)
    assert s.management_url == "http://127.0.0.1:18081" and s.project == project
    # the project's key never goes to a server the user typed in
    other = core.resolve_server("http://10.0.0.5:8080", core.DEFAULT_MODEL, "", None, project)
    assert (other.url, other.key, other.key_file) == ("http://10.0.0.5:8080", "", "")
    typed = core.resolve_server(core.DEFAULT_URL, core.DEFAULT_MODEL, " mine ", None, project)
    assert (typed.key, typed.key_file, typed.url) == ("mine", "", "http://127.0.0.1:18080")
    stopped = core.resolve_server(core.DEFAULT_URL, core.DEFAULT_MODEL, "", None, str(_project(tmp_path / "b", False)))
    assert (stopped.url, stopped.key, stopped.key_file) == (core.DEFAULT_URL, "", "")


def test_messages_name_this_projects_start_command(tmp_path: Path) -> None:
    project = str(_project(tmp_path / "my projects", running=False))
    s = core.resolve_server(core.DEFAULT_URL, core.DEFAULT_MODEL, "", None, project)
    refused = core.explain_url_error(ConnectionRefusedError(111, "refused"), s)
    assert f"cd '{project}' && make serve" in refused
    typed = core.explain_http_error(400, TS_KEY_ERROR, dataclasses.replace(s, key="old"))
    assert "clear Inference key" in typed and f"cd '{project}' && .venv/bin/python -m handler.serve key" in typed
    none = core.explain_http_error(400, TS_KEY_ERROR, s)
    assert "requires an inference key" in none and "flatpak override" in none


def test_check_layer_size() -> None:
    core.check_layer_size(16, 16)
    core.check_layer_size(8000, 8000)
    with pytest.raises(core.PluginError, match="at least 16x16"):
        core.check_layer_size(15, 100)
    with pytest.raises(core.PluginError, match="at most 64 megapixels"):
        core.check_layer_size(9000, 9000)


# --- error messages --------------------------------------------------------------------------------


TS_KEY_ERROR = json.dumps({
    "code": 400, "type": "InvalidKeyException",
    "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
}).encode()


@pytest.mark.parametrize(
    "status,body,key,needles",
    [
        (400, TS_KEY_ERROR, "wrong", ["rejected the inference key", "InvalidKeyException", "key_file.json"]),
        (401, TS_KEY_ERROR, "", ["requires an inference key and none was given", "Key file"]),
        (404, b'{"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}', "",
         ["has no model", "Model name"]),
        (405, b'{"code": 405, "type": "MethodNotAllowedException", "message": "Requested method is not allowed"}',
         "", ["management (8081)"]),
        (413, b'{"error": "image is 9000x9000 (81 megapixels); the limit is 64 megapixels"}', "",
         ["too large", "81 megapixels", "Scale Image"]),
        (400, b'{"error": "unknown mode \'bogus\'"}', "", ["refused the request", "unknown mode"]),
        (503, b'{"code": 503, "type": "ServiceUnavailableException", "message": "Prediction failed"}', "",
         ["Prediction failed", "model_log.log"]),
        (507, b'{"code": 507, "message": "out of memory"}', "", ["ran out of memory"]),
        (500, b"<html>Internal</html>", "", ["500", "Internal"]),
    ],
)
def test_explain_http_error(status: int, body: bytes, key: str, needles: list[str]) -> None:
    msg = core.explain_http_error(status, body, _settings("http://127.0.0.1:8080", key=key))
    for needle in needles:
        assert needle in msg
    assert "Fix:" in msg


def test_explain_url_error_kinds() -> None:
    s = _settings("http://127.0.0.1:9", timeout=7)
    assert "connection refused" in core.explain_url_error(ConnectionRefusedError(111, "refused"), s)
    assert "within 7 s" in core.explain_url_error(TimeoutError("timed out"), s)
    assert "closed the connection" in core.explain_url_error(ConnectionResetError(104, "reset"), s)


# --- HTTP against the fake server ------------------------------------------------------------------


@pytest.fixture()
def fake() -> FakeMaskServer:
    with FakeMaskServer(key="sekret") as srv:
        yield srv


def _photo_png(w: int = 48, h: int = 32) -> bytes:
    return _png(Image.frombytes("RGB", (w, h), bytes(range(256)) * (w * h * 3 // 256) + bytes(w * h * 3 % 256)))


def test_request_mask_sends_the_documented_request(fake: FakeMaskServer) -> None:
    body = core.request_mask(_settings(fake.url, key="sekret"), _photo_png())
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert np.array_equal(mask, np.frombuffer(ellipse_mask(48, 32), np.uint8).reshape(32, 48))
    sent = fake.requests[-1]
    assert sent["path"] == "/predictions/person_segmenter"
    assert sent["headers"]["Content-Type"] == "image/png"
    assert sent["headers"]["X-Mode"] == "mask"
    assert sent["headers"]["Authorization"] == "Bearer sekret"


def test_match_light_sends_the_background_as_a_form(fake: FakeMaskServer) -> None:
    """With Match light the layer and its background go as multipart fields image and background
    (docs/API.md), the options still as headers; the answer is the cut-out, its colours matched."""
    photo, background = _photo_png(), _png(Image.new("RGB", (48, 32), (10, 200, 10)))
    settings = _settings(fake.url, key="sekret", mode="cutout", harmonize=0.75, keep="5,6")
    body = core.request_mask(settings, photo, background=background)
    cut = np.asarray(Image.open(io.BytesIO(body)))
    assert tuple(cut[0, 0, :3]) == HARMONIZED_RGB
    sent = fake.requests[-1]
    assert sent["fields"] == ["background", "image"] and sent["background"] == background
    assert sent["headers"]["X-Harmonize"] == "0.75" and sent["headers"]["X-Keep"] == "5,6"
    assert fake.uploads[-1] == photo
    plain, ctype = core.build_body(photo)
    assert plain is photo and ctype == "image/png"


def test_request_cutout_gets_the_rgba_answer(fake: FakeMaskServer) -> None:
    body = core.request_mask(_settings(fake.url, key="sekret", mode="cutout"), _photo_png())
    cut = np.asarray(Image.open(io.BytesIO(body)))
    assert cut.shape == (32, 48, 4)
    assert np.array_equal(cut[..., 3], np.frombuffer(ellipse_mask(48, 32), np.uint8).reshape(32, 48))
    assert fake.requests[-1]["headers"]["X-Mode"] == "cutout"
    assert fake.requests[-1]["headers"]["X-Matting"] == "on"


def test_request_mask_ignores_proxy_settings(fake: FakeMaskServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The photo must go to the named server only; a stray http_proxy must not reroute it."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert core.request_mask(_settings(fake.url, key="sekret"), _photo_png()).startswith(core.PNG_SIGNATURE)


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"key": "wrong"}, "rejected the inference key"),
        ({}, "requires an inference key and none was given"),
        ({"key": "sekret", "model": "nope"}, "has no model 'nope'"),
        ({"key": "sekret", "model": "fault-html"}, "answered text/html instead of a PNG mask"),
        ({"key": "sekret", "model": "fault-400"}, "at least 16 pixels"),
        ({"key": "sekret", "model": "fault-503"}, "could not answer"),
    ],
)
def test_request_mask_failures(fake: FakeMaskServer, kw: dict, needle: str) -> None:
    with pytest.raises(core.PluginError) as err:
        core.request_mask(_settings(fake.url, **kw), _photo_png())
    assert needle in str(err.value)
    assert "Fix:" in str(err.value)


def test_a_truncated_answer_is_refused(fake: FakeMaskServer) -> None:
    """The whole HTTP body arrived but holds half a PNG: refused, never handed to GIMP's loader."""
    with pytest.raises(core.PluginError, match="not a usable PNG mask: it is truncated"):
        core.request_mask(_settings(fake.url, key="sekret", model="fault-truncated"), _photo_png())


def test_request_mask_server_down() -> None:
    with FakeMaskServer() as srv:
        url = srv.url
    with pytest.raises(core.PluginError, match="connection refused") as err:
        core.request_mask(_settings(url), _photo_png())
    assert "make serve" in str(err.value)


def test_socket_timeout_is_reported(fake: FakeMaskServer) -> None:
    s = _settings(fake.url, key="sekret", model="fault-slow", timeout=0.5)
    with pytest.raises(core.PluginError, match=r"did not answer within 0\.5 s"):
        core.request_mask(s, _photo_png())
