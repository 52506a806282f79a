"""Standard-library half of the Replace Background GIMP plug-in: ask the server, check its answer.

GIMP runs the plug-in in its own bundled Python (Linux, Windows, macOS, Flatpak), where numpy and
requests are not there, so the whole exchange with the server uses the standard library only, and no
module of this half imports ``gi``: all of it is tested with a plain Python
(``tests/gimp/test_gimp_plugin_core.py``). This module is that half's public face; the server settings
and key live in ``replace_background_settings``, the failure messages in ``replace_background_messages``.

Every failure a user can meet is raised as ``PluginError`` whose text names the cause *and* the fix:
the plug-in shows that text in GIMP's error dialog (or returns it to a script as the procedure's
error), so a message like "HTTP Error 400" alone is a bug here.
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import Callable
from http.client import HTTPException

from replace_background_messages import explain_http_error, explain_url_error, shorten, timeout_message
from replace_background_settings import (
    DEFAULT_MODEL,
    DEFAULT_URL,
    EDGE_MODES,
    MAX_PIXELS,
    MIN_SIDE,
    PROJECT_RECORD,
    PluginError,
    ServerSettings,
    contract,
    default_blur_radius,
    predictions_url,
    project_folder,
    read_key_file,
    resolve_key,
    resolve_server,
)

__all__ = [
    "CUTOUT_KIND",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "EDGE_MODES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "PNG_SIGNATURE",
    "PROJECT_RECORD",
    "PluginError",
    "ServerSettings",
    "RequestPlan",
    "build_mask_request",
    "build_body",
    "check_layer_size",
    "check_mask_format",
    "check_png_complete",
    "contract",
    "default_blur_radius",
    "explain_http_error",
    "explain_url_error",
    "plan_request",
    "predictions_url",
    "project_folder",
    "read_key_file",
    "renewed",
    "request_mask",
    "resolve_key",
    "resolve_server",
    "timeout_message",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every PNG ends with (empty, fixed CRC)
MASK_KIND = "8-bit greyscale"  # what mode=mask answers: docs/API.md
CUTOUT_KIND = "8-bit RGB+alpha"  # what mode=cutout answers: the edge stage's colours, its soft matte as alpha
ANSWER_KIND = {"mask": MASK_KIND, "cutout": CUTOUT_KIND}
_ERROR_BODY_LIMIT = 64 * 1024


_FIX_VERSION = (
    "Fix: check that Server URL points at this project's TorchServe (inference port, 8080 by default) "
    "and that server and plug-in come from the same release."
)


def check_png_complete(data: bytes, url: str) -> None:
    """Refuse an answer that is not a whole PNG before GIMP's PNG loader sees it.

    GIMP's loader fails on a truncated file too, but only after making an image it then leaves
    behind until GIMP quits; a PNG always ends with the same 12-byte IEND chunk, so a cut-off
    answer (the realistic failure: a server or proxy that stopped mid-body) is caught here.
    """
    if not data.startswith(PNG_SIGNATURE):
        head = shorten(data[:80].decode("utf-8", "replace")) or "empty"
        raise PluginError(f"The answer from {url} is not a usable PNG mask: it does not start with the PNG "
                          f"signature (it began with {head!r}). {_FIX_VERSION}")
    if not data.endswith(PNG_END):
        raise PluginError(f"The answer from {url} is not a usable PNG mask: it is truncated (it does not end "
                          f"with the PNG's IEND chunk). {_FIX_VERSION}")


def check_mask_format(kind: str, size: tuple[int, int], layer_size: tuple[int, int], url: str,
                      mode: str = "mask") -> None:
    """Check the answer GIMP decoded: ``kind`` (e.g. "8-bit greyscale") and ``size`` against the layer's.

    The API promises a PNG of the layer's size, 8-bit greyscale for mode=mask and 8-bit RGBA for
    mode=cutout (docs/API.md); anything else means Server URL names another service or server and
    plug-in do not match.
    """
    want = ANSWER_KIND[mode]
    what = "mask" if mode == "mask" else "cut-out"
    if kind != want:
        raise PluginError(f"The server at {url} answered with a {kind} PNG, but the {what} must be an "
                          f"{want} PNG (mode={mode} in docs/API.md). {_FIX_VERSION}")
    if size != layer_size:
        raise PluginError(
            f"The server returned a {size[0]}x{size[1]} {what} for a {layer_size[0]}x{layer_size[1]} layer. "
            f"The {what} must have the layer's size. {_FIX_VERSION}"
        )


def check_layer_size(width: int, height: int) -> None:
    """Refuse layers the server would refuse anyway, before spending time encoding them."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise PluginError(
            f"The layer is {width}x{height} pixels; the server needs at least {MIN_SIDE}x{MIN_SIDE}. "
            "Fix: select a bigger layer (Layer > Layer to Image Size helps for tiny layers)."
        )
    if width * height > MAX_PIXELS:
        raise PluginError(
            f"The layer is {width}x{height} ({width * height / 1e6:.0f} megapixels); the server accepts at "
            f"most {MAX_PIXELS / 1e6:.0f} megapixels. Fix: scale the image down (Image > Scale Image)."
        )



def renewed(settings: ServerSettings) -> ServerSettings | None:
    """``settings`` with a working key after the server refused ``settings.key``, or None when the key
    was typed (nothing to renew it with). TorchServe's keys expire; the key file's API key does not."""
    if not settings.key_file:
        return None
    management = settings.management_url or contract.management_url_for(settings.key_file, settings.url)
    try:
        key = contract.fresh_inference_key(settings.key_file, settings.key, management, min(settings.timeout, 30.0))
    except contract.KeyFileError as exc:
        raise PluginError(
            f"The server refused the inference key from {settings.key_file} and a new one could not be made: "
            f"{exc}. Fix: check that Key file and Server URL belong to the same server, or type the key."
        ) from None
    return dataclasses.replace(settings, key=key)


@dataclasses.dataclass(frozen=True)
class RequestPlan:
    """What one run asks the server for, from the Edge option and whether Match light is on.

    ``colours`` says where the person layer takes the answer's colours: "" nowhere (the photo's own
    pixels under the mask), "edge" where the matte is soft (the person's own colours at the outline),
    "person" wherever the person shows (the light-matched colours, which change the whole person).
    """

    mode: str
    matting: bool
    colours: str


def plan_request(edge: str, light: bool) -> RequestPlan:
    """The request for Edge = ``edge`` ("colours", "matte", "off"); ``light``: Match light is on.

    Match light needs the person's colours from the server, so it asks for a cut-out even with
    Edge = off (then without the edge stage: the model's mask as alpha).
    """
    if edge not in EDGE_MODES:
        raise PluginError(f"Unknown Edge refinement {edge!r}. Fix: choose one of {', '.join(EDGE_MODES)}.")
    if light:
        return RequestPlan("cutout", edge != "off", "person")
    return RequestPlan(EDGE_MODES[edge], edge != "off", "edge" if edge == "colours" else "")


def build_mask_request(settings: ServerSettings) -> tuple[str, dict[str, str]]:
    """The URL and headers of the ``mode=mask`` (or ``cutout``) request of docs/API.md: a raw PNG body,
    ``X-`` options.

    A raw body is simpler and cheaper than multipart for a single image; ``Content-Type`` is
    mandatory because TorchServe treats a body without one as a form and fails. A cut-out asks for
    the edge stage by name, so that a server whose default changes still answers with the soft matte.
    Servers older than an option ignore its header, so the options are always safe to send.
    """
    option = contract.OPTION_HEADERS
    headers = {"Content-Type": "image/png", option["mode"]: settings.mode, option["zoom"]: settings.zoom,
               option["crowd"]: settings.crowd, "Accept": "image/png, application/json"}
    if settings.mode == "cutout":
        headers[option["matting"]] = "on" if settings.matting else "off"
    if settings.tta != "none":
        headers[option["tta"]] = settings.tta
    if settings.keep:
        headers[option["keep"]] = settings.keep
    if settings.harmonize > 0:
        headers[option["harmonize"]] = format(round(settings.harmonize, 3), "g")
    if settings.key:
        headers["Authorization"] = "Bearer " + settings.key
    return predictions_url(settings.url, settings.model), headers


def build_body(png: bytes, background: bytes | None = None) -> tuple[bytes, str]:
    """The request body and its Content-Type: the layer's PNG alone, or with the background as a form.

    Match light sends the exact background GIMP will put under the person (multipart fields
    ``image`` and ``background``, docs/API.md), so that the person's light is matched to what the
    user sees, not to the server's own version of it.
    """
    if background is None:
        return png, "image/png"
    boundary = "replace-background-" + uuid.uuid4().hex
    parts = []
    for name, data in ((contract.IMAGE_FIELD, png), (contract.BACKGROUND_FIELD, background)):
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
                "Content-Type: image/png\r\n\r\n")
        parts += [head.encode("ascii"), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request_mask(settings: ServerSettings, png: bytes, tick: Callable[[], None] | None = None,
                 background: bytes | None = None) -> bytes:
    """POST the PNG and return the answer body, or raise ``PluginError`` with cause and fix.

    The whole exchange is bounded by the user's Timeout (``contract.run_with_deadline``, the transport
    the batch client uses too), and ``tick`` (GIMP's progress pulse) runs in the calling thread while
    it waits. A key from a key file that the server refuses (expired after ``token_expiration_min``,
    or rotated) is renewed with the file's API key and the request sent once more, so a server that
    has run all day still works with no user action. Proxies are never used: the photo goes to the
    server the user named and nowhere else. ``background``: the PNG Match light matches the person to.
    """
    body = build_body(png, background)
    try:
        return contract.run_with_deadline(lambda deadline: _ask(settings, body, deadline), settings.timeout, tick)
    except contract.DeadlineExceeded:
        raise PluginError(timeout_message(settings)) from None


def _ask(settings: ServerSettings, body: tuple[bytes, str], deadline: contract.Deadline) -> bytes:
    try:
        return _post_mask(settings, body, deadline)
    except _RefusedKey as refused:
        fresh = renewed(settings)
        if fresh is None:
            raise PluginError(refused.message) from None
        _log_renewal(settings)
    try:
        return _post_mask(fresh, body, deadline)
    except _RefusedKey as refused:
        raise PluginError(refused.message) from None


class _RefusedKey(Exception):
    """The server refused the key (TorchServe's ``InvalidKeyException``); ``message`` explains it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _log_renewal(settings: ServerSettings) -> None:
    print(f"[replace-background] the inference key was refused (expired or rotated); renewed it through "
          f"{settings.management_url or 'the management API'} with the API key of {settings.key_file}",
          file=sys.stderr, flush=True)


def _post_mask(settings: ServerSettings, body: tuple[bytes, str], deadline: contract.Deadline) -> bytes:
    """One POST of the mask request; ``_RefusedKey`` for a refused key, ``PluginError`` for the rest."""
    url, headers = build_mask_request(settings)
    headers["Content-Type"] = body[1]
    try:
        answer, connection = contract.post(url, body[0], headers, deadline)
        connection.close()
    except (OSError, HTTPException) as exc:
        raise PluginError(explain_url_error(exc, settings)) from None
    if not 200 <= answer.status < 300:
        body = answer.body[:_ERROR_BODY_LIMIT]
        message = explain_http_error(answer.status, body, settings)
        if contract.is_invalid_key_answer(answer.status, body):
            raise _RefusedKey(message)
        raise PluginError(message)
    if not answer.body.startswith(PNG_SIGNATURE):
        ctype = answer.headers.get("Content-Type", "")
        raise PluginError(
            f"The server at {settings.url} answered {ctype or 'without a Content-Type'} instead of a PNG mask "
            f"({shorten(answer.body[:200].decode('utf-8', 'replace')) or 'empty body'!r}). Fix: check that Server URL "
            "is this project's TorchServe inference address (port 8080 by default)."
        )
    check_png_complete(answer.body, settings.url)
    return answer.body
