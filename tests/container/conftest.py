"""The image built from a fresh clone, and one container of it, for ``make container-test``.

These tests build a multi-gigabyte image, so ``make test`` leaves them out: they run only with
``CONTAINER_TEST=1`` (``make container-test`` sets it, installs podman when it can and makes the
local base image). The build uses a fresh ``git clone`` of this checkout, so what is tested is what
is committed. Measured figures (build, size, start-up, speed) are printed at the end of the run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container import podman as pm

REPO = Path(__file__).resolve().parents[2]
FIGURES: dict[str, object] = {}
MODEL = "person_segmenter"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without CONTAINER_TEST=1 the tests that need the image skip; the unit tests here still run."""
    if os.environ.get("CONTAINER_TEST") == "1":
        for item in items:  # the first test pays for the image build (minutes) in its fixtures
            if "podman_ready" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.timeout(3600))
        return
    skip = pytest.mark.skip(reason="needs the image: run by `make container-test` (it builds a multi-GB image)")
    for item in items:
        if "podman_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter
    if FIGURES:
        terminalreporter.section("container figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
        target = os.environ.get("CONTAINER_FIGURES")
        if target:
            Path(target).write_text(json.dumps(FIGURES, indent=2) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def podman_ready() -> None:
    reason = pm.unavailable()
    if reason:
        print(f"\nskipping container tests: {reason}", file=sys.stderr)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def clone(tmp_path_factory: pytest.TempPathFactory, podman_ready: None) -> Path:
    """A fresh clone of this checkout's HEAD: the image is built from what is committed."""
    target = tmp_path_factory.mktemp("clone") / "replace-background"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(target)], check=True, timeout=300)
    return target


@pytest.fixture(scope="session")
def image(clone: Path) -> str:
    """The image, built with podman from the clone (layers cached from earlier builds are reused)."""
    base = pm.base_image(clone / "Containerfile")
    if not pm.has_image(base):
        pytest.skip(f"the base image {base} is not here and no registry may be reachable: "
                    "`make container-test` makes it with mmdebstrap")
    volumes, extra = pm.pip_options()
    start = time.monotonic()
    pm.podman("build", "--network", "host", *volumes, "--build-arg", f"PIP_EXTRA_ARGS={extra}",
              "-t", pm.IMAGE, str(clone), timeout=3600)
    FIGURES["image build from the clone (s)"] = round(time.monotonic() - start, 1)
    start = time.monotonic()  # again, nothing changed: every layer from the cache
    pm.podman("build", "--network", "host", *volumes, "--build-arg", f"PIP_EXTRA_ARGS={extra}",
              "-t", pm.IMAGE, str(clone), timeout=3600)
    FIGURES["image rebuild, nothing changed (s)"] = round(time.monotonic() - start, 1)
    FIGURES["load average at build end"] = os.getloadavg()[0]
    size = pm.podman("image", "inspect", pm.IMAGE, "--format", "{{.Size}}").stdout.decode().strip()
    FIGURES["image size (GB)"] = round(int(size) / 1e9, 2)
    return pm.IMAGE


def person_photo() -> bytes:
    """A photo with a person: the first EG1800 photo where the data sets lie beside the checkout,
    else a drawn stand-in (the checks below hold for any photo)."""
    for datasets in (os.environ.get("REPLACE_BACKGROUND_DATASETS"), REPO.parent / "shared" / "datasets"):
        if datasets and (Path(datasets) / "eg1800" / "Images" / "eg_00001.jpg").is_file():
            return (Path(datasets) / "eg1800" / "Images" / "eg_00001.jpg").read_bytes()
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (480, 640), (200, 210, 220))
    draw = ImageDraw.Draw(img)
    draw.ellipse((180, 80, 300, 220), fill=(230, 190, 160))
    draw.rectangle((150, 220, 330, 640), fill=(40, 60, 120))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photo() -> bytes:
    return person_photo()


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    """POST without proxies; returns (status, headers, body) for any HTTP answer."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def composite_headers(key: str | None) -> dict[str, str]:
    """The README's composite request."""
    headers = {"Content-Type": "image/jpeg", "X-Mode": "composite", "X-Background": "#00b140"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


class Server:
    """One running container: its name, published URL and the key folder mounted into it."""

    def __init__(self, name: str, port: int, key_folder: Path) -> None:
        self.name, self.port, self.key_folder = name, port, key_folder
        self.url = f"http://127.0.0.1:{port}"
        self.predictions = f"{self.url}/predictions/{MODEL}"

    def key(self) -> str:
        doc = json.loads((self.key_folder / "key_file.json").read_text(encoding="utf-8"))
        return doc["inference"]["key"]


def start_container(image: str, key_folder: Path, photo: bytes, name: str, timeout: float = 300) -> Server:
    """``podman run`` as docs/DEPLOY.md says, then wait for the first 200 answer; records the time it took."""
    key_folder.mkdir(parents=True, exist_ok=True)
    key_folder.chmod(0o777)  # the image's user (uid 10001) writes the key here; docs/DEPLOY.md: --user on Linux
    port = pm.free_port()
    pm.podman("rm", "-f", "--time", "0", name, check=False)
    start = time.monotonic()
    pm.podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
              "-v", f"{key_folder}:/srv/replace-background", "-e", f"REPLACE_BACKGROUND_URL=http://127.0.0.1:{port}",
              image)
    server = Server(name, port, key_folder)
    deadline = start + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, _, body = post(server.predictions, photo, composite_headers(server.key()), timeout=60)
            if status == 200:
                FIGURES.setdefault(f"run to first answer (s, {name})", round(time.monotonic() - start, 1))
                return server
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, KeyError, ValueError) as exc:
            last = repr(exc)
        if pm.podman("container", "exists", name, check=False).returncode != 0:
            break
        time.sleep(1)
    logs = pm.podman("logs", "--tail", "60", name, check=False)
    pm.podman("rm", "-f", "--time", "0", name, check=False)
    raise AssertionError(f"the container gave no answer in {timeout} s (last: {last}):\n"
                         f"{logs.stdout.decode(errors='replace')}{logs.stderr.decode(errors='replace')}")


@pytest.fixture(scope="module")
def server(image: str, clone: Path, photo: bytes) -> Iterator[Server]:
    """The container as a photographer runs it, with the clone's serve/ folder mounted for the key."""
    running = start_container(image, clone / "serve", photo, "replace-background-test")
    yield running
    pm.podman("rm", "-f", "--time", "10", running.name, check=False)
