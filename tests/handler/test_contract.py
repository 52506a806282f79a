"""handler/contract.py: the one statement of the HTTP contract (the GIMP plug-in gets it from install.py,
which copies this file into the installed plug-in; tests/gimp/test_gimp_install.py checks that copy).

The server, the client and the plug-in used to restate the contract and had drifted (the plug-in's
automatic blur radius had a 1-px floor "like the server", whose floor was 2 px; the model name was
typed in five places; the key file was parsed in three). These tests hold every restatement that is
left to the one module, and the key-file and renewal code to its documented behaviour. The renewal
against a real TorchServe whose keys expire is tests/handler/test_key_renewal.py.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler import client, contract, person_handler, request, serve
from segmenter import crowd, imaging, inference, refine, zoom
from tests.ports import free_port


def test_the_contract_needs_only_the_standard_library() -> None:
    """GIMP's bundled Python has nothing else, and the copy cannot import this project."""
    tree = ast.parse(Path(contract.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names, f"contract imports {name}"


def test_segmenter_values_are_the_contracts() -> None:
    """Values the core owns for its own reasons must equal what the contract promises."""
    assert contract.REFINE_METHODS == refine.METHODS
    assert contract.TTA_MODES == inference.TTA_MODES
    assert (contract.ZOOM_MODES, contract.DEFAULT_ZOOM) == (zoom.ZOOM_MODES, zoom.DEFAULT_ZOOM)
    assert (contract.CROWD_MODES, contract.DEFAULT_CROWD) == (crowd.CROWD_MODES, crowd.DEFAULT_CROWD)
    assert (contract.MAX_PIXELS, contract.MIN_SIDE) == (imaging.MAX_PIXELS, imaging.MIN_SIDE)
    assert request.DEFAULT_COLOR == imaging.parse_color(contract.DEFAULT_BACKGROUND) == (255, 255, 255)


def test_every_side_uses_the_contracts_names() -> None:
    assert request.OPTION_HEADERS is contract.OPTION_HEADERS
    assert request.MODES is contract.MODES and request.FORMATS is contract.FORMATS
    assert serve.DEFAULT_MODEL == client.DEFAULT_MODEL == person_handler.MODEL_NAME == contract.MODEL_NAME
    assert client.DEFAULT_URL == contract.INFERENCE_URL
    assert serve.KEY_FILE_NAME == client.DEFAULT_KEY_FILE.name == contract.KEY_FILE_NAME
    from training.export import export_archive  # training/ names the archive it builds: the same model

    assert inspect.signature(export_archive).parameters["name"].default == contract.MODEL_NAME


@pytest.mark.parametrize("size", [(40, 30), (100, 100), (1200, 900)])
def test_default_blur_radius_is_what_the_server_blurs_with(size: tuple[int, int]) -> None:
    """The plug-in blurs in GIMP with ``default_blur_radius``; the server's default blur must be the same
    (small images hit the 2-px floor: the plug-in's old floor of 1 px gave a different background)."""
    w, h = size
    assert contract.default_blur_radius(w, h) == max(2.0, 0.02 * float(np.hypot(w, h)))
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    contract_default = imaging.blurred(photo, contract.default_blur_radius(w, h))
    np.testing.assert_array_equal(np.asarray(imaging.blurred(photo)), np.asarray(contract_default))
    assert contract.default_blur_radius(40, 30) == 2.0


def test_predictions_url_and_start_command() -> None:
    assert contract.predictions_url("http://h:1/") == "http://h:1/predictions/person_segmenter"
    assert contract.predictions_url("http://h:1", "a b") == "http://h:1/predictions/a%20b"
    assert contract.predictions_url("http://h:1/predictions/x", "y") == "http://h:1/predictions/x"
    assert contract.start_command("/home/me/my project") == "cd '/home/me/my project' && make serve"
    assert "project folder" in contract.start_command("")


def test_is_invalid_key_answer() -> None:
    body = json.dumps({"code": 400, "type": "InvalidKeyException", "message": "Token Authentication failed"})
    assert contract.is_invalid_key_answer(400, body) and contract.is_invalid_key_answer(400, body.encode())
    assert not contract.is_invalid_key_answer(400, '{"error": "image is empty (0 bytes)"}')
    assert not contract.is_invalid_key_answer(500, body)


# --- the key file --------------------------------------------------------------------------------

KEYS = {"management": {"key": "M1", "expiration time": "x"}, "inference": {"key": "I1", "expiration time": "x"},
        "API": {"key": "A1"}}


def _key_file(folder: Path, doc: object = KEYS, state: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / contract.KEY_FILE_NAME
    path.write_text(json.dumps(doc))
    if state is not None:
        (folder / contract.SERVER_STATE_NAME).write_text(json.dumps(state))
    return path


def test_read_key_file_and_key_of(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    doc = contract.read_key_file(path)
    assert [contract.key_of(doc, k) for k in ("inference", "management", "API")] == ["I1", "M1", "A1"]
    with pytest.raises(contract.KeyFileError, match="does not exist"):
        contract.read_key_file(tmp_path / "nope.json")
    (tmp_path / "half.json").write_text('{"management": {"key": "M1", "expi')  # caught mid-rewrite, for good
    with pytest.raises(contract.KeyFileError, match="not TorchServe's key file"):
        contract.read_key_file(tmp_path / "half.json")
    with pytest.raises(contract.KeyFileError, match='no "API"'):
        contract.key_of({"inference": {"key": "I"}}, "API", "f.json")
    if os.geteuid() != 0:  # root reads anything
        path.chmod(0)
        with pytest.raises(contract.KeyFileError, match="permission denied"):
            contract.read_key_file(path)


def test_a_key_file_caught_half_written_is_read_again(tmp_path: Path) -> None:
    """TorchServe rewrites the file in place; a reader in between must not take it for broken."""
    path = tmp_path / contract.KEY_FILE_NAME
    path.write_text('{"inference": {"key": "I')
    timer = threading.Timer(0.03, lambda: path.write_text(json.dumps(KEYS)))
    timer.start()
    try:
        assert contract.key_of(contract.read_key_file(path, attempts=20), "inference") == "I1"
    finally:
        timer.join()


def test_server_state_and_management_url(tmp_path: Path) -> None:
    recorded = _key_file(tmp_path / "a", state={"inference_url": "http://127.0.0.1:18080/",
                                                "management_url": "http://127.0.0.1:18081", "model_name": "m",
                                                "pid": 7})
    assert contract.server_state(recorded) == {"inference_url": "http://127.0.0.1:18080",
                                               "management_url": "http://127.0.0.1:18081", "model_name": "m"}
    assert contract.management_url_for(recorded, "http://elsewhere:1") == "http://127.0.0.1:18081"
    bare = _key_file(tmp_path / "b")  # another server's key file, no server.json: TorchServe's port layout
    assert contract.server_state(bare) == {}
    assert contract.management_url_for(bare, "http://127.0.0.1:8080") == "http://127.0.0.1:8081"
    (tmp_path / "b" / contract.SERVER_STATE_NAME).write_text("[1, 2")
    assert contract.server_state(bare) == {}


# --- renewal, against a stand-in management API (the real one: test_key_renewal.py) ----------------

class _TokenServer:
    """``POST /token?type=inference``: with the API key, writes a new inference key into the key file."""

    def __init__(self, key_file: Path, api_key: str = "A1", status: int = 200) -> None:
        self.calls: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                outer.calls.append((self.path, self.headers.get("Authorization")))
                ok = self.headers.get("Authorization") == f"Bearer {api_key}" and status == 200
                if ok:
                    doc = json.loads(key_file.read_text())
                    doc["inference"]["key"] = f"I{len(outer.calls) + 1}"
                    key_file.write_text(json.dumps(doc))
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[tuple[_TokenServer, Path]]:
    key_file = _key_file(tmp_path)
    srv = _TokenServer(key_file)
    yield srv, key_file
    srv.close()


def test_fresh_key_is_made_with_the_api_key(token_server: tuple[_TokenServer, Path]) -> None:
    srv, key_file = token_server
    assert contract.fresh_inference_key(key_file, "I1", srv.url) == "I2"
    assert srv.calls == [("/token?type=inference", "Bearer A1")]
    assert contract.key_of(contract.read_key_file(key_file), "API") == "A1"  # the rest of the file is kept


def test_a_key_rotated_by_someone_else_is_taken_without_a_new_one(token_server: tuple[_TokenServer, Path]) -> None:
    """Making yet another key would invalidate the one the other client is about to use."""
    srv, key_file = token_server
    assert contract.fresh_inference_key(key_file, "an-older-key", srv.url) == "I1"
    assert srv.calls == []


def test_renewal_failures_say_why(tmp_path: Path) -> None:
    key_file = _key_file(tmp_path, {**KEYS, "API": {"key": "not-this-servers"}})
    srv = _TokenServer(key_file)
    try:
        with pytest.raises(contract.KeyFileError, match="refused to make a new inference key.*HTTP 400"):
            contract.fresh_inference_key(key_file, "I1", srv.url)
    finally:
        srv.close()
    with pytest.raises(contract.KeyFileError, match="cannot reach the management address"):
        contract.fresh_inference_key(key_file, "I1", f"http://127.0.0.1:{free_port()}", timeout=5)
    assert contract.key_of(contract.read_key_file(key_file), "inference") == "I1"  # unchanged


# --- the one whole-request deadline (both clients; hanging servers: tests/reliability/test_client_failures.py) ---

def test_run_with_deadline_ticks_returns_and_raises() -> None:
    ticks: list[int] = []
    assert contract.run_with_deadline(lambda d: 42, 5, lambda: ticks.append(1)) == 42

    def slow(deadline: contract.Deadline) -> int:
        time.sleep(0.35)
        return 7 if deadline.left() > 0 else -1

    assert contract.run_with_deadline(slow, 5, lambda: ticks.append(1), period=0.05) == 7
    assert len(ticks) >= 3  # the progress bar moved while waiting

    def boom(deadline: contract.Deadline) -> None:
        raise ValueError("inner")

    with pytest.raises(ValueError, match="inner"):
        contract.run_with_deadline(boom, 5)


def test_the_deadline_cuts_the_socket_and_the_worker_ends() -> None:
    """A request blocked on a socket ends when the deadline shuts the socket down: no thread is left."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/predictions/x"
    before = threading.active_count()
    t0 = time.monotonic()
    with pytest.raises(contract.DeadlineExceeded):
        contract.run_with_deadline(lambda d: contract.post(url, b"x" * 100, {"Content-Type": "image/png"}, d), 0.5)
    assert time.monotonic() - t0 < 3
    assert threading.active_count() == before
    listener.close()
