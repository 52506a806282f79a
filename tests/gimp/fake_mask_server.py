"""A tiny stdlib HTTP server that speaks docs/API.md's ``mode=mask`` and ``mode=cutout`` answers, plus faults.

Only a test aid: the real end-to-end tests run against the real TorchServe. This one lets the
unit tests (and the GIMP error-path tests) produce answers the real server never gives on
demand: HTML instead of PNG, an RGB or wrong-size mask, a truncated PNG, a slow answer. It keeps
the PNGs it was sent (``uploads``), so a test can check what GIMP's PNG export uploaded. The
fault is chosen by the model name in the URL, e.g. ``/predictions/fault-size``.

The mask is geometric (a soft-edged ellipse), so no image decoding is needed: the server reads
only the PNG header of the upload to learn the size. A cut-out has that ellipse as alpha and one
colour (``CUTOUT_RGB``) everywhere, so a test can tell the "person colours" from the photo's.
"""

from __future__ import annotations

import io
import json
import math
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from tests.plugin_folder import import_core

# The plug-in's stdlib module from a folder install.py filled (it carries handler/contract.py), imported
# as GIMP does: one module object for every test that imports it.
core = import_core()


def _png(image: Image.Image) -> bytes:
    """A PNG as a server would write it (Pillow, as the real handler's decoder reads them)."""
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


CUTOUT_RGB = (200, 60, 30)  # the colour of every pixel of the fake cut-out


def ellipse_mask(width: int, height: int) -> bytes:
    """A centred ellipse (person) with a 3-pixel soft edge: 255 inside, 0 outside."""
    cx, cy, rx, ry = width / 2, height / 2, width * 0.3, height * 0.4
    rows = []
    for y in range(height):
        dy = (y + 0.5 - cy) / ry
        row = bytearray(width)
        for x in range(width):
            dx = (x + 0.5 - cx) / rx
            d = (math.sqrt(dx * dx + dy * dy) - 1.0) * min(rx, ry)  # ~ pixels outside the ellipse
            row[x] = max(0, min(255, round(255 * (0.5 - d / 3.0))))
        rows.append(bytes(row))
    return b"".join(rows)


class FakeMaskServer:
    """Serves ``POST /predictions/<model>`` on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, key: str = "", model: str = "person_segmenter") -> None:
        self.key = key
        self.model = model
        self.requests: list[dict] = []
        self.uploads: list[bytes] = []  # the PNG bodies of the requests that got a mask, in order
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeMaskServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, doc: dict) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.split("/")
                model = parts[2] if len(parts) > 2 and parts[1] == "predictions" else ""
                server.requests.append({"path": self.path, "headers": dict(self.headers), "size": len(body)})
                if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
                    msg = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
                    return self._json(400, {"code": 400, "type": "InvalidKeyException", "message": msg})
                if model != server.model and not model.startswith("fault-"):
                    return self._json(404, {"code": 404, "type": "ModelNotFoundException",
                                            "message": f"Model not found: {model}"})
                if model == "fault-html":
                    return self._send(200, b"<html><body>Welcome to nginx!</body></html>", "text/html")
                if model == "fault-400":
                    return self._json(400, {"error": "image is 8x8; both sides must be at least 16 pixels"})
                if model == "fault-503":
                    return self._json(503, {"code": 503, "type": "ServiceUnavailableException",
                                            "message": "Prediction failed"})
                if model == "fault-slow":
                    time.sleep(float(self.headers.get("X-Fake-Delay", "5")))
                mode = self.headers.get("X-Mode")
                if self.headers.get("Content-Type") != "image/png" or mode not in ("mask", "cutout"):
                    return self._json(400, {"error": "fake server expects a raw image/png body with X-Mode: "
                                                     "mask or cutout"})
                if not body.startswith(core.PNG_SIGNATURE) or len(body) < 33:
                    return self._json(400, {"error": "not a PNG image"})
                width, height = struct.unpack(">II", body[16:24])
                if model == "fault-size":
                    width += 1
                server.uploads.append(body)
                mask = Image.frombytes("L", (width, height), ellipse_mask(width, height))
                if mode == "cutout":
                    mask = Image.merge("RGBA", (*Image.new("RGB", mask.size, CUTOUT_RGB).split(), mask))
                png = _png(mask.convert("RGB") if model == "fault-rgb" else mask)
                if model == "fault-truncated":
                    png = png[: len(png) // 2]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("X-Image-Size", f"{width}x{height}")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

        return Handler


if __name__ == "__main__":  # manual use: python tests/gimp/fake_mask_server.py
    with FakeMaskServer() as srv:
        print("fake mask server at", srv.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
