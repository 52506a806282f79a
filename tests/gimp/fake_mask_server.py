"""A tiny stdlib HTTP server that speaks docs/API.md's ``mode=mask`` and ``mode=cutout`` answers, plus faults.

Only a test aid: the real end-to-end tests run against the real TorchServe. This one lets the
unit tests (and the GIMP error-path tests) produce answers the real server never gives on
demand: HTML instead of PNG, an RGB or wrong-size mask, a truncated PNG, a slow answer. It keeps
the PNGs it was sent (``uploads``), so a test can check what GIMP's PNG export uploaded. The
fault is chosen by the model name in the URL, e.g. ``/predictions/fault-size``.

The mask is geometric (a soft-edged ellipse), so no image decoding is needed: the server reads
only the PNG header of the upload to learn the size. A cut-out has that ellipse as alpha and one
colour (``CUTOUT_RGB``) everywhere, so a test can tell the "person colours" from the photo's; asked
to match the light (``X-Harmonize`` with a multipart ``background``), it answers ``HARMONIZED_RGB`` instead.
Each request's headers and multipart field names are kept (``requests``), so a test can check the
options the plug-in sent (``X-Keep``, ``X-Zoom``, ``X-Harmonize``).
"""

from __future__ import annotations

import email.parser
import email.policy
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
HARMONIZED_RGB = (40, 90, 210)  # ... and of a cut-out whose light was matched to an uploaded background


def multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name (the standard library's MIME parser)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


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


# models whose answer is always the same failure: (status, body, Content-Type)
FAULTS = {
    "fault-html": (200, b"<html><body>Welcome to nginx!</body></html>", "text/html"),
    "fault-400": (400, json.dumps({"error": "image is 8x8; both sides must be at least 16 pixels"}).encode(),
                  "application/json"),
    "fault-503": (503, json.dumps({"code": 503, "type": "ServiceUnavailableException",
                                   "message": "Prediction failed"}).encode(), "application/json"),
}


def _answer(mode: str, size: tuple[int, int], light: bool, rgb_only: bool = False) -> bytes:
    """The ellipse as a mask, or as the alpha of a one-colour cut-out (``HARMONIZED_RGB`` when ``light``)."""
    mask = Image.frombytes("L", size, ellipse_mask(*size))
    if mode == "cutout":
        rgb = Image.new("RGB", size, HARMONIZED_RGB if light else CUTOUT_RGB)
        mask = Image.merge("RGBA", (*rgb.split(), mask))
    return _png(mask.convert("RGB") if rgb_only else mask)


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

            def _send(self, status: int, body: bytes, ctype: str, size: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if size:  # as the real server says the photo's size
                    self.send_header("X-Image-Size", size)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, doc: dict) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.split("/")
                model = parts[2] if len(parts) > 2 and parts[1] == "predictions" else ""
                fields: dict[str, bytes] = {}
                if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
                    fields = multipart_fields(self.headers["Content-Type"], body)
                    body = fields.get("image", b"")
                server.requests.append({"path": self.path, "headers": dict(self.headers), "size": len(body),
                                        "fields": sorted(fields), "background": fields.get("background")})
                if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
                    msg = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
                    return self._json(400, {"code": 400, "type": "InvalidKeyException", "message": msg})
                if model != server.model and not model.startswith("fault-"):
                    return self._json(404, {"code": 404, "type": "ModelNotFoundException",
                                            "message": f"Model not found: {model}"})
                if model in FAULTS:
                    return self._send(*FAULTS[model])
                if model == "fault-slow":
                    time.sleep(float(self.headers.get("X-Fake-Delay", "5")))
                mode = self.headers.get("X-Mode")
                if (self.headers.get("Content-Type") != "image/png" and not fields) or mode not in ("mask", "cutout"):
                    return self._json(400, {"error": "fake server expects a raw image/png body with X-Mode: "
                                                     "mask or cutout"})
                if not body.startswith(core.PNG_SIGNATURE) or len(body) < 33:
                    return self._json(400, {"error": "not a PNG image"})
                width, height = struct.unpack(">II", body[16:24])
                if model == "fault-size":
                    width += 1
                server.uploads.append(body)
                light = float(self.headers.get("X-Harmonize", "0")) > 0 and "background" in fields
                png = _answer(mode, (width, height), light, rgb_only=model == "fault-rgb")
                if model == "fault-truncated":
                    png = png[: len(png) // 2]
                self._send(200, png, "image/png", f"{width}x{height}")

        return Handler


if __name__ == "__main__":  # manual use: python tests/gimp/fake_mask_server.py
    with FakeMaskServer() as srv:
        print("fake mask server at", srv.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
