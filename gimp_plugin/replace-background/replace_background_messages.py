"""Every failure to reach or use the server, as a message with its cause and its fix (standard library only).

The plug-in shows these texts in GIMP's error dialog (or returns them to a script as the procedure's
error), so a message like "HTTP Error 400" alone is a bug here: each names what happened, where, and
what the user does next. No ``gi`` import: tested outside GIMP (``tests/gimp/test_gimp_plugin_core.py``).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import urllib.error
from http.client import HTTPException

from replace_background_settings import DEFAULT_MODEL, DEFAULT_URL, ServerSettings, contract, predictions_url

try:  # a stripped-down bundled Python may lack ssl; plain http:// must still work then
    import ssl
except ImportError:  # pragma: no cover - depends on the GIMP build
    ssl = None  # type: ignore[assignment]


def shorten(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters: a server's error page must not flood GIMP's error dialog."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_fields(body: bytes) -> tuple[str, str]:
    """(error type, message) of a JSON error body: ours ``{"error"}`` or TorchServe's ``{"type", "message"}``."""
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return "", shorten(text)
    if not isinstance(doc, dict):
        return "", shorten(text)
    kind = str(doc.get("type") or "")
    msg = doc.get("error") or doc.get("message") or doc.get("detail") or text
    return kind, shorten(str(msg))


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

