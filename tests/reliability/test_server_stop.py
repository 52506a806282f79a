"""The real TorchServe is stopped while both clients wait for an answer: a clear error, at once.

``handler.client`` asks for a 12-megapixel composite (2.6-3.9 s of work for the worker, measured
here) and the GIMP plug-in's core for the mask of a 24-megapixel layer (1.6-2.4 s); one is
processed, the other queued, and which one comes first is up to the frontend. The server is
stopped 0.5 s after the second request was sent, with ``handler.serve.stop_server``
(``torchserve --stop``, as ``make stop`` does), so neither can have been answered whatever the
order: with a 12-megapixel layer the mask (0.8-1.1 s) once finished just before the stop on an
idle machine. Seen here: both got a connection reset 0.4-0.7 s after the stop began. Neither may wait for its
60 s timeout, nor report "cannot connect"; a request after the stop is "cannot connect".
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from handler import serve
from handler.client import Client, ClientError
from tests.reliability.test_client_failures import core

pytestmark = [pytest.mark.serve, pytest.mark.slow]

TIMEOUT = 60.0
STOP_AFTER_S = 0.5


def noise(size: tuple[int, int], fmt: str) -> bytes:
    """A photo-sized image that is slow to decode, refine and encode (no flat areas to compress)."""
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


@pytest.mark.timeout(240)
def test_stopping_the_server_mid_request_fails_both_clients_at_once(dedicated_server) -> None:
    server = dedicated_server
    photo, layer = noise((4000, 3000), "JPEG"), noise((6000, 4000), "PNG")
    client = Client(server.inference_url, key_file=server.key_file, timeout=TIMEOUT)
    settings = core.ServerSettings(url=server.inference_url, key=server.inference_key, timeout=TIMEOUT)
    outcome: dict[str, tuple[BaseException | None, float]] = {}

    def ask(name: str, call) -> None:
        try:
            call()
            error = None
        except Exception as exc:  # recorded and checked below
            error = exc
        outcome[name] = (error, time.monotonic())

    threads = [
        threading.Thread(target=ask, args=("client", lambda: client.process(photo, mode="composite"))),
        threading.Thread(target=ask, args=("plugin", lambda: core.request_mask(settings, layer, tick=lambda: None))),
    ]
    for t in threads:
        t.start()
        time.sleep(0.1)  # usually the client's request reaches the worker first, but either order must work
    time.sleep(STOP_AFTER_S)
    stop_began = time.monotonic()
    assert serve.stop_server(server.workdir) is True
    stop_s = time.monotonic() - stop_began
    for t in threads:
        t.join(TIMEOUT + 30)
    assert not any(t.is_alive() for t in threads), "a client still waits after the server stopped"

    for name, (error, done) in outcome.items():
        assert error is not None, f"{name}: answered at {done - stop_began:+.1f} s, before the stop: use a larger image"
        print(f"\n{name}: {type(error).__name__} {done - stop_began:+.2f} s after the stop began "
              f"(stop took {stop_s:.1f} s): {error}")
        assert done - stop_began < TIMEOUT / 2, f"{name} waited {done - stop_began:.1f} s"
    client_error, plugin_error = outcome["client"][0], outcome["plugin"][0]
    assert isinstance(client_error, ClientError) and client_error.status == 0
    assert "closed the connection before answering" in str(client_error) and "handler.serve status" in str(client_error)
    assert isinstance(plugin_error, core.PluginError)
    assert "closed the connection without an answer" in str(plugin_error)
    assert "stopped or restarted" in str(plugin_error)

    # and once it is down, both say that nothing listens
    with pytest.raises(ClientError, match="cannot connect"):
        client.process(photo[:1000])
    with pytest.raises(core.PluginError, match="connection refused"):
        core.request_mask(settings, layer[:1000])
