"""Shared fixtures: a checkpoint to serve, model archives, and a real TorchServe instance.

``torchserve_server`` (session scope) is the one the serving tests and the GIMP plug-in tests
talk to. It serves the shipped weights when ``segmenter/weights/person_unet.pt`` exists, else a
tiny randomly initialised U-Net built here, on free loopback ports from its own working folder
and ``TMPDIR``; it is stopped (every process of its group) when the session ends.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODEL_NAME = "person_segmenter"
# Registered through the management API by the tests, with batching on: batchSize 4 and a
# generous delay so concurrent requests really share a batch on a busy 2-core machine.
BATCH_MODEL_NAME = "person_segmenter_batch"
BATCH_SETTINGS = {"batchSize": 4, "maxBatchDelay": 1500, "minWorkers": 1, "maxWorkers": 1}
TINY_CONFIG = {"base_filters": 4, "image_size": 128, "depth": 4}


def _serving_unavailable() -> str | None:
    """Why a real TorchServe cannot run here, or None."""
    if shutil.which("java") is None:
        return "java not found (TorchServe's frontend needs Java 11+)"
    try:
        import ts  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        return f"torchserve not importable: {exc}"
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "torchserve").exists() and shutil.which("torchserve") is None:
        return "torchserve executable not found"
    if not (bin_dir / "torch-model-archiver").exists() and shutil.which("torch-model-archiver") is None:
        return "torch-model-archiver not found"
    return None


def skip_without_torchserve() -> None:
    reason = _serving_unavailable()
    if reason:
        print(f"\nskipping TorchServe tests: {reason}", file=sys.stderr)
        pytest.skip(reason)


def randomise_batchnorm(model) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh BN is the identity), so tests that
    fold, carry or compare them really see them."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def build_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small randomly initialised U-Net checkpoint (fast to load; predictions are meaningless)."""
    import torch

    from segmenter import checkpoint
    from segmenter.model import UNet

    torch.manual_seed(seed)
    model = UNet(base_filters=TINY_CONFIG["base_filters"], depth=TINY_CONFIG["depth"])
    checkpoint.save_atomic({"model": model.state_dict(), "config": dict(TINY_CONFIG)}, path)
    return path


@pytest.fixture(scope="session")
def serving_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint the server serves: the shipped weights if present, else a tiny one."""
    from segmenter.checkpoint import SHIPPED_WEIGHTS

    if SHIPPED_WEIGHTS.is_file():
        return SHIPPED_WEIGHTS
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def served_model_store(tmp_path_factory: pytest.TempPathFactory, serving_checkpoint: Path) -> Path:
    """A model store with ``person_segmenter.mar`` and the batching variant, built by export.py."""
    skip_without_torchserve()
    from training.export import export_archive

    store = tmp_path_factory.mktemp("model_store")
    export_archive(serving_checkpoint, store, MODEL_NAME)
    export_archive(serving_checkpoint, store, BATCH_MODEL_NAME, settings=BATCH_SETTINGS)
    return store


@pytest.fixture(scope="session")
def torchserve_server(tmp_path_factory: pytest.TempPathFactory, served_model_store: Path) -> Iterator:
    """A running TorchServe serving ``person_segmenter`` (workers READY), stopped at session end.

    Yields a ``handler.serve.Server``: ``.inference_url``, ``.management_url``, ``.metrics_url``,
    ``.model_name``, ``.inference_key``, ``.management_key``, ``.api_key`` (read from ``.key_file``
    on each access: keys can be rotated), ``.workdir``, ``.log_dir``, ``.predictions_url``,
    ``.auth(kind)`` and ``.stop()``.
    """
    skip_without_torchserve()
    from handler import serve
    from handler.serve import group
    from tests.ports import free_ports

    workdir = tmp_path_factory.mktemp("torchserve")
    ports = free_ports(serve.DEFAULT_PORTS)
    server = serve.start_server(workdir, served_model_store, model_name=MODEL_NAME, ports=ports)
    try:
        yield server
    finally:
        server.stop()
        assert not group.alive(server.pid), "TorchServe processes left behind"


KEY_LIFETIME_MIN = 1  # the project server's keys: short, so the tests see them expire


@pytest.fixture(scope="session")
def project_server(tmp_path_factory: pytest.TempPathFactory, served_model_store: Path) -> Iterator:
    """A second copy of this project, its server started the way `make serve` starts it, keys living 1 minute.

    The folder holds the plug-in (``gimp_plugin/``, so its install.py records this folder) and the
    instance folder ``serve/`` that ``python -m handler.serve start`` fills (key file, server.json);
    the server runs on free ports from a copy of config.properties with ``token_expiration_min=1``.
    Yields the ``handler.serve.Server``; ``.workdir.parent`` is the project folder.
    """
    skip_without_torchserve()
    import subprocess

    from handler import serve
    from tests.ports import free_ports

    project = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "gimp_plugin", project / "gimp_plugin")
    (project / "handler").mkdir()  # install.py copies the project's contract into the plug-in
    shutil.copyfile(REPO / "handler" / "contract.py", project / "handler" / "contract.py")
    ports = free_ports(serve.DEFAULT_PORTS)
    settings = {f"{k}_address": f"http://127.0.0.1:{ports[k]}" for k in ("inference", "management", "metrics")}
    settings.update(grpc_inference_port=str(ports["grpc_inference"]),
                    grpc_management_port=str(ports["grpc_management"]), token_expiration_min=str(KEY_LIFETIME_MIN))
    config = serve.write_config(REPO / "config.properties", project / "config.properties", settings)
    workdir = project / "serve"
    started = subprocess.run([sys.executable, "-m", "handler.serve", "start", "--workdir", str(workdir),
                              "--config", str(config), "--model-store", str(served_model_store)],
                             cwd=REPO, capture_output=True, text=True, timeout=400)
    server = serve.Server.from_state(workdir)
    try:
        assert started.returncode == 0 and server is not None, started.stdout + started.stderr
        yield server
    finally:
        serve.stop_server(workdir)


def wait_for_key_expiry(server) -> str:
    """Sleep until the server's current inference key has expired; return that (now refused) key."""
    import time
    from datetime import datetime, timezone

    import requests

    from handler import serve

    key = server.inference_key
    text = serve.read_keys(server.key_file)["inference"]["expiration time"]  # e.g. 2026-12-03T08:20:37.765334898Z
    whole, _, frac = text.rstrip("Z").partition(".")
    expires = datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00")
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds() + 1.0))
    ping = requests.get(f"{server.inference_url}/ping", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert ping.status_code == 400 and "InvalidKeyException" in ping.text, "the key did not expire"
    return key
