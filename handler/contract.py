"""The HTTP contract between the server, the client and the GIMP plug-in, in one place (docs/API.md).

What a request may say (model name, modes, backgrounds, formats, limits, the default blur radius)
and how a client finds and renews its key are written here once. The server side
(``handler/request.py``, ``handler/person_handler.py``, ``handler/serve/``) and the batch client
(``handler/client.py``) import this module; the GIMP plug-in, which runs in GIMP's own Python and
cannot import this project, gets this very file: ``gimp_plugin/install.py`` copies it into the
installed plug-in as ``replace_background_contract.py`` (and a plug-in run from a checkout loads it
from here), so there is nothing to drift.

Hence the rules of this file: the standard library only, no import from this project, nothing that
needs a package's state. Adding a request option means adding it to ``OPTION_HEADERS`` (and, when it
has a fixed set of values, a tuple of them below); ``handler/request.py`` validates it.

Both clients also send their requests through the one transport at the end of this file: ``post``
bounded as a whole by ``run_with_deadline`` (a per-socket timeout does not bound a request).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shlex
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import TypeVar

# --- where the server is ---------------------------------------------------------------------------

MODEL_NAME = "person_segmenter"
INFERENCE_URL = "http://127.0.0.1:8080"  # config.properties' inference_address, what `make serve` uses
PREDICTIONS_PATH = "/predictions/"
KEY_FILE_NAME = "key_file.json"  # TorchServe writes it into the folder it runs from (serve/ for `make serve`)
SERVER_STATE_NAME = "server.json"  # handler.serve writes it next to the key file: URLs, model, pid
SERVE_FOLDER = "serve"  # `make serve`'s instance folder, relative to the project folder
START_COMMAND = "make serve"

# --- what a request may say ------------------------------------------------------------------------

MODES = ("mask", "cutout", "composite")
FORMATS = ("png", "jpeg")
BACKGROUND_KEYWORDS = ("blur", "transparent")
DEFAULT_BACKGROUND = "#FFFFFF"
REFINE_METHODS = ("guided", "bilinear")  # segmenter.refine.METHODS (a test holds them equal)
TTA_MODES = ("none", "flip")  # segmenter.inference.TTA_MODES (a test holds them equal)
# the zoom pass, a closer look at photos of small people (segmenter/zoom.py; a test holds them equal):
# "on" for every photo, "auto" only where the first look finds no tall person; off unless asked for
ZOOM_MODES = ("off", "auto", "on")
DEFAULT_ZOOM = "off"
# the crowd network, trained on scenes of several and small people (segmenter/crowd.py; a test holds them
# equal): "auto" lets it look at the photos whose first look shows a group, "on" at every photo, "off" at none
CROWD_MODES = ("off", "auto", "on")
DEFAULT_CROWD = "auto"
# the edge stage (soft matte and person colours at the outline) for cutout and composite; "off" gives
# the plain blend of the photo with the model's mask (docs/API.md, "The edge stage")
MATTING_MODES = ("on", "off")
BLUR_RADIUS_RANGE = (1.0, 200.0)
BLUR_RADIUS_FRACTION = 0.02  # default blur radius: 2% of the image diagonal ...
BLUR_RADIUS_FLOOR = 2.0  # ... and never under 2 px
QUALITY_RANGE = (1, 100)
DEFAULT_QUALITY = 92
# choose who stays: "x,y;x,y", points in the photo's pixels after its EXIF orientation (x to the right,
# y down, from the top-left pixel); only the people (connected regions of the mask) that contain a point,
# or lie nearest to one, stay in the mask, cut-out and composite. No value: everyone stays.
KEEP_POINT_SEPARATOR = ";"  # between points
KEEP_COORD_SEPARATOR = ","  # between a point's x and y
MAX_KEEP_POINTS = 32  # more points than this is a 400
MAX_KEEP_LENGTH = 512  # characters of a keep value (other options are at most MAX_OPTION_LENGTH)
# match the light: how far the person's colour and brightness move toward the new background's,
# 0 (off, the default) to 1. It needs a background that has light, an image or "blur": in mode
# "composite", and in mode "cutout" when the request also sends that background (the cut-out's colours
# are matched to it; the background itself is not drawn). With a colour or "transparent", or in mode
# "mask", it is ignored (not an error), so a client may always send its slider's value.
HARMONIZE_RANGE = (0.0, 1.0)
DEFAULT_HARMONIZE = 0.0
# Option name (multipart field) -> header name. Fields win over headers when both are sent.
# A new option is one more entry here (and its parsing in handler/request.py's parse_options).
OPTION_HEADERS = {
    "mode": "X-Mode",
    "background": "X-Background",
    "format": "X-Format",
    "blur_radius": "X-Blur-Radius",
    "refine": "X-Refine",
    "quality": "X-Quality",
    "tta": "X-TTA",
    "zoom": "X-Zoom",
    "crowd": "X-Crowd",
    "matting": "X-Matting",
    "keep": "X-Keep",
    "harmonize": "X-Harmonize",
}
IMAGE_FIELD = "image"
BACKGROUND_FIELD = "background"  # multipart: a colour/keyword as text, or an image file
MAX_OPTION_LENGTH = 64  # characters of one option value
MAX_PIXELS = 64_000_000  # photo or background, checked from the header before decoding
MIN_SIDE = 16  # pixels, both sides of the photo

# --- TorchServe's answers ----------------------------------------------------------------------------

INVALID_KEY_TYPE = "InvalidKeyException"  # TorchServe's 400 for a missing, wrong or expired key
KEY_LIFETIME_MIN = 60  # config.properties' token_expiration_min


def default_blur_radius(width: int, height: int) -> float:
    """The blur radius a ``blur`` background gets when the request names none.

    The server and the plug-in (which blurs in GIMP) both call this, so a blurred background looks
    the same whichever of them made it.
    """
    return max(BLUR_RADIUS_FLOOR, BLUR_RADIUS_FRACTION * math.hypot(width, height))


def predictions_url(base_url: str, model: str = MODEL_NAME) -> str:
    """``http://host:port`` and a model name -> the URL to POST photos to; a full
    ``.../predictions/NAME`` URL is kept as it is, because users paste the one from docs/API.md."""
    base = base_url.strip()
    if PREDICTIONS_PATH in urllib.parse.urlsplit(base).path:
        return base
    return base.rstrip("/") + PREDICTIONS_PATH + urllib.parse.quote(model.strip(), safe="")


def is_invalid_key_answer(status: int, body: bytes | str) -> bool:
    """True for TorchServe's answer to a missing, wrong or expired key (400 ``InvalidKeyException``)."""
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    return status in (400, 401, 403) and INVALID_KEY_TYPE in text


def start_command(project: str | None) -> str:
    """The command that starts this project's server, with its folder when it is known."""
    return f"cd {shlex.quote(project)} && {START_COMMAND}" if project else f"{START_COMMAND} (in the project folder)"


# --- the key file and key renewal -----------------------------------------------------------------


class KeyFileError(Exception):
    """The key file cannot give a key, or a renewal failed; ``str()`` says which file and why."""


def read_key_file(path: str | os.PathLike[str], attempts: int = 3) -> dict:
    """The parsed key file: ``{"inference": {"key", "expiration time"}, "management": ..., "API": {"key"}}``.

    TorchServe rewrites the file in place when it makes a key, so a reader can catch it half
    written: a file that is not JSON is read again a few times before it counts as broken.
    """
    for attempt in range(attempts):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc
        except FileNotFoundError:
            raise KeyFileError(f"the key file {path} does not exist") from None
        except PermissionError:
            raise KeyFileError(f"the key file {path} cannot be read (permission denied)") from None
        except (UnicodeDecodeError, ValueError) as exc:
            if attempt + 1 == attempts:
                raise KeyFileError(f"the key file {path} is not TorchServe's key file ({exc})") from None
            time.sleep(0.05)
        except OSError as exc:
            raise KeyFileError(f"the key file {path} cannot be read ({exc.strerror or exc})") from None
    raise AssertionError("unreachable")


def key_of(doc: dict, kind: str, path: str | os.PathLike[str] = "the key file") -> str:
    """The ``kind`` key (``inference``, ``management`` or ``API``) of a parsed key file."""
    entry = doc.get(kind)
    key = entry.get("key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key.strip():
        raise KeyFileError(f'the key file {path} has no "{kind}" -> "key" entry')
    return key.strip()


def server_state(key_file: str | os.PathLike[str]) -> dict[str, str]:
    """The URLs and model name ``handler.serve`` recorded beside a key file (``server.json``), or ``{}``.

    ``handler.serve start`` writes both files into one instance folder, so whoever can read the key
    can also learn where that server listens, without being told.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(key_file)), SERVER_STATE_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    wanted = ("inference_url", "management_url", "model_name")
    return {k: str(doc[k]).rstrip("/") for k in wanted if isinstance(doc.get(k), str) and doc[k].strip()}


def management_url_for(key_file: str | os.PathLike[str], inference_url: str) -> str:
    """Where to ask for a new key: the management address ``handler.serve`` recorded beside the key
    file, else TorchServe's layout (the inference address's host, its port + 1: 8080 -> 8081)."""
    url = server_state(key_file).get("management_url", "")
    if url.startswith(("http://", "https://")):
        return url
    parts = urllib.parse.urlsplit(inference_url.strip())
    port = (parts.port or (443 if parts.scheme == "https" else 80)) + 1
    return f"{parts.scheme}://{parts.hostname}:{port}"


def fresh_inference_key(key_file: str | os.PathLike[str], refused: str, management_url: str,
                        timeout: float = 15.0) -> str:
    """The inference key to retry with after the server refused ``refused`` (read from ``key_file``).

    Keys expire (``token_expiration_min``) but the key file also holds the API key, which does not
    and exists to make new ones. When the file already holds another key (someone rotated it since
    it was read) that one is returned; else ``POST /token?type=inference`` with the API key makes a
    new key, TorchServe writes it into the file, and it is read from there. Proxies are ignored:
    the key goes only to the server named.
    """
    doc = read_key_file(key_file)
    current = key_of(doc, "inference", key_file)
    if current != refused:
        return current
    api_key = key_of(doc, "API", key_file)
    url = management_url.rstrip("/") + "/token?type=inference"
    request = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": "Bearer " + api_key})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise KeyFileError(f"the server at {management_url} refused to make a new inference key with the API "
                           f"key of {key_file} (HTTP {exc.code}): the key file belongs to another server") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise KeyFileError(f"cannot reach the management address {management_url} to renew the inference key "
                        f"({reason})") from None
    return key_of(read_key_file(key_file), "inference", key_file)


# --- one request, bounded as a whole ------------------------------------------------------------------

T = TypeVar("T")
_CUT_GRACE_S = 2.0  # how long a cut request may take to notice that its socket is gone


class DeadlineExceeded(Exception):
    """The whole request (connect, upload, wait, answer) ran past its deadline."""


class Deadline:
    """A time limit for a whole request, kept by shutting down the socket the request is on.

    A socket timeout bounds each read or write, not the request: a server that sends a byte every few
    seconds, or stops reading an upload, would hold a client for ever. ``post`` registers its socket
    with ``use``; ``cut`` shuts it down, so the call blocked on it fails at once and the thread doing
    the request ends, instead of being left behind.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def left(self) -> float:
        """Seconds left, never negative; a socket's own timeout is set to this, the cut does the rest."""
        return max(0.0, self.end - time.monotonic())

    def use(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired and sock is not None:
                _shutdown(sock)

    def cut(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a blocked send/recv on it returns at once
    except OSError:
        pass


def run_with_deadline(work: Callable[[Deadline], T], seconds: float, tick: Callable[[], None] | None = None,
                      period: float = 0.1) -> T:
    """``work(deadline)`` in a worker thread, ``tick()`` every ``period`` s in this one while it runs.

    Why a thread: a call blocked on a socket cannot move GIMP's progress bar, so the calling thread
    pulses it. At the deadline the work's socket is cut and ``DeadlineExceeded`` raised once the worker
    has stopped (within ``_CUT_GRACE_S``); otherwise the work's result, or its exception.
    """
    deadline = Deadline(seconds)
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work(deadline))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=target, name="request-with-deadline", daemon=True)
    worker.start()
    while worker.is_alive():
        left = deadline.left()
        if left <= 0:
            deadline.cut()
            worker.join(_CUT_GRACE_S)
            raise DeadlineExceeded(f"no answer within {seconds:g} s")
        worker.join(min(period, left))
        if tick is not None and worker.is_alive():
            tick()
    if failure:
        raise failure[0]
    return result[0]


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of any status; ``headers`` is looked up without regard to case."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def post(url: str, body: bytes, headers: Mapping[str, str], deadline: Deadline,
         connection: http.client.HTTPConnection | None = None) -> tuple[Answer, http.client.HTTPConnection]:
    """POST ``body`` to ``url`` within ``deadline``; return the answer and the connection, which the
    caller may pass back for its next request (keep-alive) unless the server closed it.

    Proxies are never used: the photo goes to the server named and nowhere else (an ``http_proxy``
    would also break a 127.0.0.1 server). A kept-alive connection that the server has meanwhile
    closed is replaced once by a new one; a new connection that fails raises (``ConnectionRefusedError``
    when nothing listens, ``ConnectionResetError``/``RemoteDisconnected``/``BrokenPipeError`` when the
    server hung up, ``TimeoutError``/``OSError`` when the deadline cut it).
    """
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reused = connection is not None and connection.sock is not None
    if not reused:
        connection = _connect(parts, deadline)
    try:
        return _exchange(connection, path, body, headers, deadline), connection
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        connection.close()
        if not reused or deadline.expired:
            raise
    connection = _connect(parts, deadline)  # the kept-alive connection had been closed by the server
    try:
        return _exchange(connection, path, body, headers, deadline), connection
    except BaseException:
        connection.close()
        raise


def _connect(parts: urllib.parse.SplitResult, deadline: Deadline) -> http.client.HTTPConnection:
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=max(deadline.left(), 0.001))
    connection.connect()
    return connection


def _exchange(connection: http.client.HTTPConnection, path: str, body: bytes, headers: Mapping[str, str],
              deadline: Deadline) -> Answer:
    try:
        connection.sock.settimeout(max(deadline.left(), 0.001))
        deadline.use(connection.sock)
        connection.request("POST", path, body=body, headers=dict(headers))
        answer = connection.getresponse()
        data = answer.read()
        return Answer(answer.status, answer.reason, answer.headers, data)
    except BaseException:
        connection.close()  # never reuse a connection left in an unknown state
        raise
    finally:
        deadline.use(None)
