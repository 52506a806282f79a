"""HTTP helpers for the tests that talk to a real TorchServe (the ``torchserve_server`` fixture)."""

from __future__ import annotations

import io

import requests
from PIL import Image


def post(server, data: bytes | None = None, headers: dict | None = None, files: dict | None = None,
         fields: dict | None = None, model: str | None = None, key: str | None = "inference") -> requests.Response:
    """POST to ``/predictions/<model>`` with the ``key`` kind's key: a raw ``data`` body (sent as
    application/octet-stream unless ``headers`` say otherwise) or a multipart form of ``files`` and ``fields``."""
    url = f"{server.inference_url}/predictions/{model or server.model_name}"
    h = dict(server.auth(key) if key else {})
    if data is not None:
        h["Content-Type"] = "application/octet-stream"
    h.update(headers or {})
    return requests.post(url, data=data if data is not None else fields, files=files, headers=h, timeout=120)


def as_image(r: requests.Response) -> Image.Image:
    """The decoded image of a 200 answer (the assertion shows the error body otherwise)."""
    assert r.status_code == 200, r.text[:300]
    img = Image.open(io.BytesIO(r.content))
    img.load()
    return img


def describe(server, name: str | None = None) -> requests.Response:
    """The management API's description of a model (workers, batch settings)."""
    return requests.get(f"{server.management_url}/models/{name or server.model_name}",
                        headers=server.auth("management"), timeout=30)


def worker_pids(server, name: str | None = None) -> list[int]:
    """Pids of the READY workers: unchanged across requests means no worker died and restarted."""
    r = describe(server, name)
    r.raise_for_status()
    return sorted(w["pid"] for w in r.json()[0]["workers"] if w["status"] == "READY")
