"""Standard-library half of the Replace Background GIMP plug-in: HTTP, answer checks, error messages.

This module must not import ``gi``: it holds everything that can be tested with a plain
Python (``tests/gimp/test_gimp_plugin_core.py``), while ``replace-background.py`` next to it does
the GIMP work. Only the standard library is used, because the plug-in runs inside GIMP's own
bundled Python on Linux, Windows, macOS and Flatpak, where numpy or requests are not there.
What the server accepts and how keys are read and renewed is the project's ``handler/contract.py``,
which the server and the batch client import too: ``install.sh`` copies it next to this file as
``replace_background_contract.py``; a plug-in run straight from a checkout loads it from there.

Every failure a user can meet is raised as ``PluginError`` whose text names the cause *and*
the fix: the plug-in shows that text in GIMP's error dialog (or returns it to a script as the
procedure's error), so a message like "HTTP Error 400" alone is a bug here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import socket
import sys
import types
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException


def _contract_from_checkout() -> types.ModuleType:
    """``handler/contract.py`` of the checkout this file sits in, for a plug-in run from the checkout.

    GIMP runs the plug-in in its own Python, which cannot import the project; ``install.sh`` therefore
    copies the contract into the installed folder. A user who adds ``<project>/gimp_plugin`` to GIMP's
    plug-in folders instead runs this file in place, where the contract is two folders up.
    """
    name = "replace_background_contract"
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(checkout, "handler", "contract.py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"{name}.py is missing next to {__file__} and there is no {path}: "
                          "install the plug-in with gimp_plugin/install.sh (make install-gimp-plugin)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the contract look their module up by name
    spec.loader.exec_module(module)
    return module


try:  # installed by install.sh: the project's handler/contract.py, copied here under this name
    import replace_background_contract as contract
except ImportError:  # run from a checkout (Preferences > Folders > Plug-ins = <project>/gimp_plugin)
    contract = _contract_from_checkout()

try:  # a stripped-down bundled Python may lack ssl; plain http:// must still work then
    import ssl
except ImportError:  # pragma: no cover - depends on the GIMP build
    ssl = None  # type: ignore[assignment]

__all__ = [
    "CUTOUT_KIND",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "EDGE_MODES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "PluginError",
    "ServerSettings",
    "build_mask_request",
    "check_layer_size",
    "check_mask_format",
    "check_png_complete",
    "explain_http_error",
    "explain_url_error",
    "predictions_url",
    "project_folder",
    "read_key_file",
    "request_mask",
    "resolve_key",
    "resolve_server",
]

DEFAULT_URL = contract.INFERENCE_URL
DEFAULT_MODEL = contract.MODEL_NAME
# The server's limits (docs/API.md): refuse up front instead of uploading 200 MB for a 413.
MAX_PIXELS = contract.MAX_PIXELS
MIN_SIDE = contract.MIN_SIDE
default_blur_radius = contract.default_blur_radius
# install.sh writes the project folder it was run from into this file next to the plug-in, so the
# plug-in finds that project's server (serve/server.json) and key (serve/key_file.json) by itself.
PROJECT_RECORD = "replace_background_project.txt"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every PNG ends with (empty, fixed CRC)
MASK_KIND = "8-bit greyscale"  # what mode=mask answers: docs/API.md
CUTOUT_KIND = "8-bit RGB+alpha"  # what mode=cutout answers: the edge stage's colours, its soft matte as alpha
# The plug-in's Edge option -> what it asks the server for: the model's mask as it is, or the edge stage's
# cut-out (docs/API.md, matting), whose alpha is the soft matte and whose colours are the person's own.
EDGE_MODES = {"off": "mask", "matte": "cutout", "colours": "cutout"}
ANSWER_KIND = {"mask": MASK_KIND, "cutout": CUTOUT_KIND}
_ERROR_BODY_LIMIT = 64 * 1024


class PluginError(Exception):
    """A failure the user can act on; ``str(error)`` is the full message (cause and fix)."""


# ---------------------------------------------------------------------------------------------
# The mask answer (GIMP's own PNG plug-in encodes the layer and decodes the mask)
# ---------------------------------------------------------------------------------------------

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
        head = _short(data[:80].decode("utf-8", "replace")) or "empty"
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


# ---------------------------------------------------------------------------------------------
# Settings, key, request
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """Where and how to ask for a mask; ``key`` is already resolved (typed, or read from ``key_file``)."""

    url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    key: str = ""
    timeout: float = 120.0
    # "flip": the server also segments the mirrored layer and averages (docs/API.md, option tta);
    # servers older than the option ignore the header, so asking is always safe.
    tta: str = "none"
    # The key file ``key`` came from: on an expired key its API key makes a new one. Empty for a
    # typed key (nothing to renew it with) and for no key.
    key_file: str = ""
    management_url: str = ""
    # This project's folder when known (install.sh's record): messages name the command that starts it.
    project: str = ""
    # "mask": the model's mask; "cutout": the edge stage's soft matte (alpha) and person colours (RGB).
    mode: str = "mask"


def predictions_url(base_url: str, model: str) -> str:
    """``http://host:port`` + model -> the inference URL; a full ``.../predictions/NAME`` URL is kept as is.

    Accepting the full URL too spares users who paste the address from docs/API.md.
    """
    base = (base_url or "").strip()
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PluginError(
            f"Server URL {base!r} is not an http:// or https:// address. "
            f"Fix: enter the server's inference address, e.g. {DEFAULT_URL}."
        )
    model = (model or "").strip()
    if not model and "/predictions/" not in parts.path:
        raise PluginError(f"Model name is empty. Fix: enter the served model's name (default {DEFAULT_MODEL}).")
    return contract.predictions_url(base, model)


def project_folder(plugin_dir: str) -> str:
    """The replace-background project this plug-in belongs to, or "" when it cannot tell.

    ``install.sh`` records the folder it was run from; a plug-in used straight from a checkout
    (Preferences > Folders > Plug-ins = ``<project>/gimp_plugin``) sits two levels under it.
    """
    try:
        with open(os.path.join(plugin_dir, PROJECT_RECORD), encoding="utf-8") as fh:
            recorded = fh.readline().strip()
        if recorded:
            return recorded
    except OSError:
        pass
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(plugin_dir)))
    if os.path.isfile(os.path.join(checkout, "handler", "contract.py")):
        return checkout
    return ""


_KEY_FILE_FIX = (
    f"Fix: point Key file at the server's {contract.KEY_FILE_NAME} (TorchServe writes it into the folder it "
    f"runs from, serve/{contract.KEY_FILE_NAME} for `make serve`), or type the inference key instead."
)


def read_key_file(path: str) -> str:
    """Return the ``"inference"."key"`` of a TorchServe ``key_file.json``."""
    try:
        return contract.key_of(contract.read_key_file(path), "inference", path)
    except contract.KeyFileError as exc:
        text = str(exc)
        if "is not TorchServe's key file" in text:
            text = text.replace("is not TorchServe's key file", "cannot be read as JSON")
        raise PluginError(f"{text[0].upper()}{text[1:]}. {_KEY_FILE_FIX}") from None


def resolve_key(typed_key: str, key_file: str | None) -> str:
    """The typed key wins; else the key file's inference key; else no key (a server without token auth)."""
    typed_key = (typed_key or "").strip()
    if typed_key:
        return typed_key
    if key_file:
        return read_key_file(key_file)
    return ""


def resolve_server(url: str, model: str, typed_key: str, key_file: str | None, project: str = "",
                   timeout: float = 120.0, tta: str = "none", mode: str = "mask") -> ServerSettings:
    """The settings a run uses: the options as given, and for options left at their defaults, this
    project's running server (``project``/serve: its address, model and key file).

    A typed key wins and is used as it is. A chosen Key file is read, and renewed from when it
    expires. With neither, the project's own key file is used, but only for the project's own
    server (Server URL left at the default, or the address the server recorded): its key must not
    go to a server the user typed in.
    """
    url, model = (url or "").strip(), (model or "").strip()
    typed_key = (typed_key or "").strip()
    found = ""
    if project:
        candidate = os.path.join(project, contract.SERVE_FOLDER, contract.KEY_FILE_NAME)
        state = contract.server_state(candidate)
        own_url = state.get("inference_url", DEFAULT_URL)
        if url.rstrip("/") in (DEFAULT_URL, own_url):  # this project's server
            url = own_url
            model = state.get("model_name", model) if model == DEFAULT_MODEL else model
            if not typed_key and not key_file and os.path.isfile(candidate):
                found = candidate
    source = "" if typed_key else (key_file or found)
    key = resolve_key(typed_key, source or None)
    management = contract.management_url_for(source, url) if source and url.startswith("http") else ""
    return ServerSettings(url=url, model=model, key=key, timeout=timeout, tta=tta, key_file=source,
                          management_url=management, project=project, mode=mode)


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


def build_mask_request(settings: ServerSettings) -> tuple[str, dict[str, str]]:
    """The URL and headers of the ``mode=mask`` (or ``cutout``) request of docs/API.md: a raw PNG body,
    ``X-`` options.

    A raw body is simpler and cheaper than multipart for a single image; ``Content-Type`` is
    mandatory because TorchServe treats a body without one as a form and fails. A cut-out asks for
    the edge stage by name, so that a server whose default changes still answers with the soft matte.
    """
    headers = {"Content-Type": "image/png", contract.OPTION_HEADERS["mode"]: settings.mode,
               "Accept": "image/png, application/json"}
    if settings.mode == "cutout":
        headers[contract.OPTION_HEADERS["matting"]] = "on"
    if settings.tta != "none":
        headers[contract.OPTION_HEADERS["tta"]] = settings.tta
    if settings.key:
        headers["Authorization"] = "Bearer " + settings.key
    return predictions_url(settings.url, settings.model), headers


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_fields(body: bytes) -> tuple[str, str]:
    """(error type, message) of a JSON error body: ours ``{"error"}`` or TorchServe's ``{"type", "message"}``."""
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return "", _short(text)
    if not isinstance(doc, dict):
        return "", _short(text)
    kind = str(doc.get("type") or "")
    msg = doc.get("error") or doc.get("message") or doc.get("detail") or text
    return kind, _short(str(msg))


def _key_message(said: str, settings: ServerSettings) -> str:
    """Why the server refused the key, by where the key came from, and what to do about it."""
    project_keys = os.path.join(settings.project, contract.SERVE_FOLDER, contract.KEY_FILE_NAME)
    key_cmd = ".venv/bin/python -m handler.serve key"
    if settings.project:
        key_cmd = f"cd {shlex.quote(settings.project)} && {key_cmd}"
    if not settings.key:
        where = ""
        if settings.project:
            where = (
                f" This project's key file {project_keys} does not exist or cannot be read: the server at "
                f"{settings.url} was started elsewhere, or a Flatpak GIMP may not read it (allow it with "
                f"`flatpak override --user --filesystem={os.path.dirname(project_keys)}:ro org.gimp.GIMP`)."
            )
        return (
            f"The server requires an inference key and none was given ({said}).{where} Fix: point Key file at "
            "the server's key_file.json (serve/key_file.json for `make serve`), or type its \"inference\" key "
            "into Inference key."
        )
    if settings.key_file:
        return (
            f"The server rejected the inference key from {settings.key_file} even after renewing it ({said}): "
            f"that key file belongs to another server than {settings.url}. Fix: choose the key_file.json of "
            "the server at Server URL, or correct Server URL."
        )
    return (
        f"The server rejected the inference key typed in Inference key ({said}): it is wrong or expired "
        f"(keys expire after {contract.KEY_LIFETIME_MIN} minutes and change when the server restarts), and a "
        "typed key cannot be renewed. Fix: clear Inference key, so that the plug-in reads the server's "
        "key_file.json and renews the key itself (choose Key file for a server outside this project); or type "
        f"the current key, printed by `{key_cmd}`."
    )


def explain_http_error(status: int, body: bytes, settings: ServerSettings) -> str:
    """Turn a non-2xx answer into a message with cause and fix."""
    kind, msg = _error_fields(body)
    url = predictions_url(settings.url, settings.model)
    said = f"{status} {kind + ': ' if kind else ''}{msg}".strip()
    key_words = ("invalidkey", "token", "authoriz", "unauthori")
    if status in (400, 401, 403) and any(w in (kind + " " + msg).lower() for w in key_words):
        return _key_message(said, settings)
    if status == 404:
        return (
            f"The server at {settings.url} has no model {settings.model!r} ({said}). Fix: set Model name to "
            f"the served model (default {DEFAULT_MODEL}) and check that Server URL is TorchServe's inference "
            "address (port 8080 by default), then that the model is registered (`make serve`)."
        )
    if status == 405:
        return (
            f"{url} does not accept predictions ({said}). Fix: Server URL must be TorchServe's inference "
            "address (port 8080 by default), not the management (8081) or metrics (8082) port."
        )
    if status == 413:
        return (
            f"The layer is too large for the server ({said}). Fix: scale the image down (Image > Scale "
            "Image), or raise max_request_size in the server's config.properties."
        )
    if 400 <= status < 500:
        return (
            f"The server refused the request ({said}). Fix: check the message above; if the layer is a "
            "normal photo, make sure server and plug-in come from the same release."
        )
    if status >= 500 and "worker died" in msg.lower():
        # TorchServe's answer to the requests a worker had in hand when its process ended (507 when
        # killed, as the kernel's OOM killer does; 500 on a response timeout). It starts a new worker.
        return (
            f"The server's model worker died while working on the layer ({said}): it was killed, most often "
            "for lack of memory, or crashed; the server starts a new one. Fix: wait a few seconds and retry; "
            "if it happens again, scale the image down or give the server more memory, and read the server "
            "log (serve/logs/model_log.log)."
        )
    if status == 507:
        return f"The server ran out of memory ({said}). Fix: scale the image down or give the server more memory."
    if status in (502, 503, 504):
        return (
            f"The server could not answer ({said}): the model worker failed or is still starting. Fix: wait "
            "a few seconds and retry; if it persists, read the server log (serve/logs/model_log.log)."
        )
    return f"The server failed ({said}). Fix: read the server log (serve/logs/model_log.log) and retry."


def explain_url_error(exc: BaseException, settings: ServerSettings) -> str:
    """Turn a connection-level failure (no HTTP status) into a message with cause and fix."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    url = settings.url
    start = f"start it with `{contract.start_command(settings.project)}`"
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"Cannot reach the Replace Background server at {url}: connection refused (no server is "
            f"listening there). Fix: {start}, or correct Server URL."
        )
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return timeout_message(settings)
    if isinstance(reason, socket.gaierror):
        return f"Cannot find the host in Server URL {url} ({reason}). Fix: use {DEFAULT_URL} for a local server."
    if ssl is not None and isinstance(reason, ssl.SSLError):
        return f"TLS failed for {url} ({reason}). Fix: use http:// for a local server, or fix its certificate."
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, HTTPException)):
        return (
            f"The server at {url} closed the connection without an answer ({type(reason).__name__}: {reason}): "
            "it stopped or restarted while working, or refused the upload. Fix: check that it is running "
            "(`.venv/bin/python -m handler.serve status`) and retry; if it keeps happening, read its log "
            "(serve/logs/) and "
            "check that Server URL is this project's TorchServe (very large layers may exceed its "
            "max_request_size)."
        )
    return f"Cannot reach the Replace Background server at {url} ({reason}). Fix: {start} and check Server URL."


def timeout_message(settings: ServerSettings) -> str:
    """The one message for 'no answer in time', whichever layer noticed it."""
    return (
        f"The server at {settings.url} did not answer within {settings.timeout:g} s. Fix: raise Timeout, "
        "or check that the server is running and not overloaded (the first request after a start is slower)."
    )


def request_mask(settings: ServerSettings, png: bytes, tick: Callable[[], None] | None = None) -> bytes:
    """POST the PNG and return the answer body, or raise ``PluginError`` with cause and fix.

    The whole exchange is bounded by the user's Timeout (``contract.run_with_deadline``, the transport
    the batch client uses too), and ``tick`` (GIMP's progress pulse) runs in the calling thread while
    it waits. A key from a key file that the server refuses (expired after ``token_expiration_min``,
    or rotated) is renewed with the file's API key and the request sent once more, so a server that
    has run all day still works with no user action. Proxies are never used: the photo goes to the
    server the user named and nowhere else.
    """
    try:
        return contract.run_with_deadline(lambda deadline: _ask(settings, png, deadline), settings.timeout, tick)
    except contract.DeadlineExceeded:
        raise PluginError(timeout_message(settings)) from None


def _ask(settings: ServerSettings, png: bytes, deadline: contract.Deadline) -> bytes:
    try:
        return _post_mask(settings, png, deadline)
    except _RefusedKey as refused:
        fresh = renewed(settings)
        if fresh is None:
            raise PluginError(refused.message) from None
        _log_renewal(settings)
    try:
        return _post_mask(fresh, png, deadline)
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


def _post_mask(settings: ServerSettings, png: bytes, deadline: contract.Deadline) -> bytes:
    """One POST of the mask request; ``_RefusedKey`` for a refused key, ``PluginError`` for the rest."""
    url, headers = build_mask_request(settings)
    try:
        answer, connection = contract.post(url, png, headers, deadline)
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
            f"({_short(answer.body[:200].decode('utf-8', 'replace')) or 'empty body'!r}). Fix: check that Server URL "
            "is this project's TorchServe inference address (port 8080 by default)."
        )
    check_png_complete(answer.body, settings.url)
    return answer.body
