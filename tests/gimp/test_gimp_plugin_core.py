"""Unit tests of the plug-in's standard-library half (PNG, HTTP, messages), outside GIMP.

These run everywhere (no root, no GIMP, no TorchServe): the HTTP cases use the small fake
server in fake_mask_server.py. The real end-to-end behaviour is in test_gimp_plugin_e2e.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fake_mask_server import PLUGIN_DIR, FakeMaskServer, core, ellipse_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

PLUGIN_MAIN = PLUGIN_DIR / "replace-background.py"
HELPERS = (PLUGIN_DIR / "replace_background_core.py", PLUGIN_DIR / "replace_background_contract.py")


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _settings(url: str, **kw: object) -> core.ServerSettings:
    return core.ServerSettings(url=url, **kw)


def _patch_ihdr(png: bytes, **fields: int) -> bytes:
    """Rewrite IHDR fields (keeping a valid CRC) to make PNGs Pillow will not write, e.g. interlaced."""
    w, h, depth, ctype, comp, filt, lace = struct.unpack(">IIBBBBB", png[16:29])
    vals = {"width": w, "height": h, "depth": depth, "ctype": ctype, "lace": lace, **fields}
    body = struct.pack(
        ">IIBBBBB", vals["width"], vals["height"], vals["depth"], vals["ctype"], comp, filt, vals["lace"]
    )
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


# --- the plug-in files themselves --------------------------------------------------------------


def test_plugin_layout_is_what_gimp_needs() -> None:
    """GIMP 3 silently ignores a plug-in whose file is not executable or not named like its folder."""
    assert PLUGIN_MAIN.name == PLUGIN_DIR.name + ".py"
    assert os.access(PLUGIN_MAIN, os.X_OK), "replace-background.py must be executable (git mode 100755)"
    assert PLUGIN_MAIN.read_text().startswith("#!/usr/bin/env python3\n")
    for path in (PLUGIN_MAIN, *HELPERS):
        compile(path.read_text(), str(path), "exec")  # a syntax error would only show on GIMP's stderr
    # the helpers must not be picked up as more plug-ins, nor need gi
    for helper in HELPERS:
        assert not os.access(helper, os.X_OK), helper
        assert "import gi" not in helper.read_text()


def test_plugin_uses_only_the_standard_library() -> None:
    """GIMP's bundled Python (Windows, macOS, Flatpak) has no numpy/requests/PIL."""
    import ast
    import sys

    allowed = set(sys.stdlib_module_names) | {"gi"} | {h.stem for h in HELPERS}
    for path in (PLUGIN_MAIN, *HELPERS):
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


# --- PNG encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_encode_png_round_trips_through_pillow(channels: int, mode: str) -> None:
    rng = np.random.default_rng(channels)
    arr = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
    png = core.encode_png(53, 37, channels, arr.tobytes())
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert Image.open(io.BytesIO(png)).mode == mode
    assert np.array_equal(back.reshape(arr.shape), arr)


@settings(max_examples=60, deadline=None)
@given(
    w=st.integers(1, 40),
    h=st.integers(1, 6),
    channels=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_encode_png_any_size(w: int, h: int, channels: int, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(core.encode_png(w, h, channels, arr.tobytes()))))
    assert np.array_equal(back.reshape(arr.shape), arr)


def test_sub_filter_matches_the_png_definition() -> None:
    row = bytes(np.random.default_rng(3).integers(0, 256, 999, dtype=np.uint8))
    for bpp in (1, 3, 4):
        expected = bytes((row[i] - (row[i - bpp] if i >= bpp else 0)) & 0xFF for i in range(len(row)))
        assert core._sub_filter_row(row, bpp) == expected


def test_encode_png_reports_progress_and_checks_sizes() -> None:
    seen: list[float] = []
    core.encode_png(700, 900, 3, bytes(700 * 900 * 3), progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(ValueError):
        core.encode_png(10, 10, 3, bytes(10))
    with pytest.raises(ValueError):
        core.encode_png(10, 10, 5, bytes(500))


def test_encode_png_is_fast_enough_for_big_layers() -> None:
    """A 24-megapixel RGB layer must encode in seconds, not minutes (pure Python per byte would)."""
    w, h = 6000, 400  # 1/10 of 24 MP; the full size scales linearly
    data = np.random.default_rng(0).integers(0, 256, size=w * h * 3, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    core.encode_png(w, h, 3, data)
    assert time.perf_counter() - t0 < 3.0


# --- PNG checking ----------------------------------------------------------------------------------


def test_check_mask_png_accepts_pillow_grey_masks() -> None:
    mask = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30), dtype=np.uint8), "L")
    info = core.check_mask_png(_png(mask), 30, 40)
    assert (info.width, info.height, info.bit_depth, info.color_type) == (30, 40, 8, 0)


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: _png(Image.new("RGB", (30, 40))), "8-bit RGB"),
        (lambda: _png(Image.new("I;16", (30, 40))), "16-bit greyscale"),
        (lambda: _png(Image.new("LA", (30, 40))), "greyscale+alpha"),
        (lambda: _patch_ihdr(_png(Image.new("L", (30, 40))), lace=1), "interlaced"),
        (lambda: _png(Image.new("L", (31, 40))), "31x40 mask for a 30x40 layer"),
        (lambda: _png(Image.new("L", (30, 40)))[:-30], "truncated"),
        (lambda: b"<html>oops</html>", "not a usable PNG"),
        (lambda: _png(Image.new("L", (30, 40))).replace(b"IDAT", b"IDAX"), "CRC"),
    ],
)
def test_check_mask_png_rejects_with_a_reason(make, needle: str) -> None:
    with pytest.raises(core.PluginError) as err:
        core.check_mask_png(make(), 30, 40)
    assert needle in str(err.value)
    assert "Fix:" in str(err.value)


def test_check_mask_png_rejects_short_pixel_data() -> None:
    """Structurally fine but too few rows inside IDAT: a server bug must not become a half mask."""
    short = core.encode_png(30, 20, 1, bytes(600))
    forged = _patch_ihdr(short, height=40)
    with pytest.raises(core.PluginError, match="truncated or malformed"):
        core.check_mask_png(forged, 30, 40)


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
    assert core.project_folder(str(PLUGIN_DIR)) == str(PLUGIN_DIR.parents[1])


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
    return core.encode_png(w, h, 3, bytes(range(256)) * (w * h * 3 // 256) + bytes(w * h * 3 % 256))


def test_request_mask_sends_the_documented_request(fake: FakeMaskServer) -> None:
    body = core.request_mask(_settings(fake.url, key="sekret"), _photo_png())
    info = core.check_mask_png(body, 48, 32)
    assert (info.width, info.height) == (48, 32)
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert np.array_equal(mask, np.frombuffer(ellipse_mask(48, 32), np.uint8).reshape(32, 48))
    sent = fake.requests[-1]
    assert sent["path"] == "/predictions/person_segmenter"
    assert sent["headers"]["Content-Type"] == "image/png"
    assert sent["headers"]["X-Mode"] == "mask"
    assert sent["headers"]["Authorization"] == "Bearer sekret"


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


@pytest.mark.parametrize("model,needle", [("fault-size", "49x32 mask"), ("fault-rgb", "8-bit RGB"),
                                          ("fault-truncated", "truncated")])
def test_malformed_masks_are_caught(fake: FakeMaskServer, model: str, needle: str) -> None:
    body = core.request_mask(_settings(fake.url, key="sekret", model=model), _photo_png())
    with pytest.raises(core.PluginError, match=needle):
        core.check_mask_png(body, 48, 32, fake.url)


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
