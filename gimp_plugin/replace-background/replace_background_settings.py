"""Where the plug-in asks: the shared HTTP contract, the server settings, the key (standard library only).

The plug-in runs in GIMP's own bundled Python (Linux, Windows, macOS, Flatpak), which cannot import
this project and has no numpy or requests. What the server accepts and how keys are read and renewed
is the project's ``handler/contract.py``: the installer (``gimp_plugin/install.py``) copies it next to
this file as ``replace_background_contract.py``; a plug-in run straight from a checkout loads it from
there. This module must not import ``gi``, so that it is tested with a plain Python
(``tests/gimp/test_gimp_plugin_core.py``); ``replace_background_core`` is its public face.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import urllib.parse
from dataclasses import dataclass


def _contract_from_checkout() -> types.ModuleType:
    """``handler/contract.py`` of the checkout this file sits in, for a plug-in run from the checkout.

    GIMP runs the plug-in in its own Python, which cannot import the project; ``install.py`` therefore
    copies the contract into the installed folder. A user who adds ``<project>/gimp_plugin`` to GIMP's
    plug-in folders instead runs this file in place, where the contract is two folders up.
    """
    name = "replace_background_contract"
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(checkout, "handler", "contract.py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"{name}.py is missing next to {__file__} and there is no {path}: "
                          "install the plug-in with `python3 gimp_plugin/install.py` (make install-gimp-plugin)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the contract look their module up by name
    spec.loader.exec_module(module)
    return module


try:  # installed by install.py: the project's handler/contract.py, copied here under this name
    import replace_background_contract as contract
except ImportError:  # run from a checkout (Preferences > Folders > Plug-ins = <project>/gimp_plugin)
    contract = _contract_from_checkout()


DEFAULT_URL = contract.INFERENCE_URL
DEFAULT_MODEL = contract.MODEL_NAME
# The server's limits (docs/API.md): refuse up front instead of uploading 200 MB for a 413.
MAX_PIXELS = contract.MAX_PIXELS
MIN_SIDE = contract.MIN_SIDE
default_blur_radius = contract.default_blur_radius
# install.py writes the project folder it was run from into this file next to the plug-in, so the
# plug-in finds that project's server (serve/server.json) and key (serve/key_file.json) by itself.
PROJECT_RECORD = "replace_background_project.txt"
# The plug-in's Edge option -> what it asks the server for: the model's mask as it is, or the edge stage's
# cut-out (docs/API.md, matting), whose alpha is the soft matte and whose colours are the person's own.
EDGE_MODES = {"off": "mask", "matte": "cutout", "colours": "cutout"}


class PluginError(Exception):
    """A failure the user can act on; ``str(error)`` is the full message (cause and fix)."""


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
    # This project's folder when known (install.py's record): messages name the command that starts it.
    project: str = ""
    # "mask": the model's mask; "cutout": the edge stage's soft matte (alpha) and person colours (RGB).
    mode: str = "mask"
    # a cut-out with the edge stage (Edge = matte or colours), or with the model's mask as alpha (Edge = off)
    matting: bool = True
    # the closer look for small people: "auto" (when the first look finds no tall person), "on", "off"
    zoom: str = contract.DEFAULT_ZOOM
    # the crowd network, trained on groups: "auto" (when the first look shows a group), "on" (every layer:
    # it also finds people behind the main one), "off" (the main network only)
    crowd: str = contract.DEFAULT_CROWD
    # who stays: "x,y;x,y" in the layer's pixels (replace_background_keep); empty: everyone
    keep: str = ""
    # Match light: how far the person's colours move toward the background sent with the request, 0 to 1
    harmonize: float = 0.0


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

    ``install.py`` records the folder it was run from; a plug-in used straight from a checkout
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

