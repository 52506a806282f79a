"""The image as a photographer runs it: the README's request, refusals, what is published, stop.

Each test talks to a real TorchServe inside a real container (``make container-test``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from tests.container import podman as pm
from tests.container.conftest import FIGURES, Server, composite_headers, post, start_container

REPO = Path(__file__).resolve().parents[2]


def test_readme_composite_is_a_png_of_the_photos_size(server: Server, photo: bytes) -> None:
    status, headers, body = post(server.predictions, photo, composite_headers(server.key()))
    assert status == 200, body[:300]
    assert {k.lower(): v for k, v in headers.items()}.get("content-type", "").startswith("image/png")
    answer = Image.open(io.BytesIO(body))
    assert answer.format == "PNG"
    assert answer.size == Image.open(io.BytesIO(photo)).size


def test_a_bad_photo_gets_a_4xx_with_json(server: Server) -> None:
    status, _, body = post(server.predictions, b"this is not a photo", composite_headers(server.key()))
    assert 400 <= status < 500, (status, body[:300])
    assert "error" in json.loads(body)


def test_no_key_or_a_wrong_key_is_refused(server: Server, photo: bytes) -> None:
    for key in (None, "wrong-" + server.key()):
        status, _, body = post(server.predictions, photo, composite_headers(key))
        assert status == 401, (key is None, status, body[:300])
        assert "InvalidKeyException" in body.decode()  # what the clients recognise as a refused key


def test_only_inference_is_published_and_management_listens_on_loopback(server: Server) -> None:
    published = pm.podman("port", server.name).stdout.decode().split()
    assert published == ["8080/tcp", "->", f"127.0.0.1:{server.port}"], published
    listening = pm.listening_ports(server.name)
    assert listening.get(8080) in ("0.0.0.0", "::"), listening
    assert listening.get(8081) == "127.0.0.1", listening  # management: inside the container only
    assert listening.get(8082) == "127.0.0.1", listening  # metrics: not asked for
    # From the host, nothing answers on the ports next to the published one.
    for port in (server.port + 1, server.port + 2):
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something answers on 127.0.0.1:{port}"


def test_the_server_runs_as_a_non_root_user(server: Server) -> None:
    every_uid = "awk '/^Uid:/{print $2}' /proc/[0-9]*/status"
    uids = pm.podman("exec", server.name, "sh", "-c", every_uid).stdout.decode().split()
    assert uids and all(uid != "0" for uid in uids), uids


def test_the_client_works_with_every_option_at_its_default(server: Server, clone: Path, photo: bytes,
                                                           tmp_path: Path) -> None:
    """The clone's serve/ folder is mounted: ``handler.client`` finds the address and key by itself."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.jpg").write_bytes(photo)
    env = dict(os.environ, PYTHONPATH=str(clone))
    cmd = [sys.executable, "-m", "handler.client", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    made = list((tmp_path / "out").iterdir())
    assert len(made) == 1 and Image.open(made[0]).size == Image.open(io.BytesIO(photo)).size


def test_requests_per_second_one_container_serves(server: Server, photo: bytes) -> None:
    """A measurement for docs/DEPLOY.md: composites per second, one client and two at once."""
    headers = composite_headers(server.key())
    for clients in (1, 2):
        count = 8 * clients
        start = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(lambda _: post(server.predictions, photo, headers)[0], range(count)))
        elapsed = time.monotonic() - start
        assert statuses == [200] * count
        FIGURES[f"composites per second, {clients} client(s), {Image.open(io.BytesIO(photo)).size} photo"] = \
            round(count / elapsed, 2)


def test_stop_is_prompt_and_removes_the_key_file(image: str, photo: bytes, tmp_path: Path) -> None:
    """tini passes the stop signal on: TorchServe as PID 1 ignored it and podman waited 10 s to kill."""
    running = start_container(image, tmp_path / "keys", photo, "replace-background-stop-test")
    try:
        assert (running.key_folder / "key_file.json").is_file()
        start = time.monotonic()
        pm.podman("stop", "--time", "20", running.name)
        FIGURES["podman stop (s)"] = round(time.monotonic() - start, 1)
        assert time.monotonic() - start < 15
        assert not (running.key_folder / "key_file.json").exists()
    finally:
        pm.podman("rm", "-f", "--time", "0", running.name, check=False)
