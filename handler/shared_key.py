"""One key for every replica: the check the handler makes when TorchServe's own keys are off.

TorchServe 0.12 makes a random key per process, so replicas behind one address never agree on a
key. The container (``deploy/container/entrypoint.py``) turns TorchServe's token authorization off
and names a file holding one key in ``REPLACE_BACKGROUND_KEY_FILE`` (in a cluster, a Secret); each
worker reads it once and refuses every request whose ``Authorization: Bearer`` is not that key.
Without the variable (``make serve``) nothing changes: TorchServe checks its own keys.
"""

from __future__ import annotations

import hmac
import os

KEY_FILE_ENV = "REPLACE_BACKGROUND_KEY_FILE"
# The clients recognise a refused key by TorchServe's exception name in the body (handler/contract.py).
REFUSED_STATUS = 401
REFUSED_MESSAGE = ("InvalidKeyException: missing or wrong key; send the server's key as "
                   "'Authorization: Bearer <key>' (docs/DEPLOY.md)")


class SharedKeyError(RuntimeError):
    """The key file named by ``REPLACE_BACKGROUND_KEY_FILE`` cannot give a key."""


def load_key(environ: dict[str, str] | None = None) -> str | None:
    """The shared key, or None when no key file is named (TorchServe's own keys are in use).

    A named file that is missing or empty stops the worker: serving without a check because a
    Secret was not mounted would open the server to anyone.
    """
    path = (environ if environ is not None else os.environ).get(KEY_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise SharedKeyError(f"{KEY_FILE_ENV}={path} cannot be read: {exc.strerror or exc}") from None
    if not key:
        raise SharedKeyError(f"{KEY_FILE_ENV}={path} is empty")
    return key


def authorized(header: str | None, key: str) -> bool:
    """True when an ``Authorization`` header carries ``key`` as a bearer token (compared in constant time)."""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8"))
