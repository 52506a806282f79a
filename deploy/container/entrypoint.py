"""Start TorchServe in the container: inference on 0.0.0.0:8080, one shared key checked by the handler.

TorchServe 0.12 makes a random key per process and has no option to supply one, so two replicas
never share a key. Here TorchServe's own token authorization is off and the handler checks
``Authorization: Bearer <key>`` against one key instead (``handler/shared_key.py``):

- ``REPLACE_BACKGROUND_KEY`` (in a cluster, from a Secret) or ``REPLACE_BACKGROUND_KEY_FILE`` (a
  file holding it) gives the key: every replica given the same key accepts it, and nothing else;
- without it a random key is made at each start and written, in TorchServe's ``key_file.json``
  layout, into the mounted folder ``/srv/replace-background`` with a ``server.json`` naming the
  published address: mount a project's ``serve/`` folder there and the GIMP plug-in and
  ``handler.client`` find the key with every option at its default (docs/DEPLOY.md).

The management API stays on 127.0.0.1 inside the container (the health check reads it); metrics
are published on 0.0.0.0:8082 only when ``REPLACE_BACKGROUND_METRICS=1``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

APP = Path(__file__).resolve().parent
BASE_CONFIG = APP / "config.properties"
MODEL_STORE = APP / "model_store"
MODEL_NAME = "person_segmenter"
KEY_FOLDER = Path(os.environ.get("REPLACE_BACKGROUND_KEY_FOLDER", "/srv/replace-background"))
PUBLIC_URL = os.environ.get("REPLACE_BACKGROUND_URL", "http://127.0.0.1:8080")
KEY_FILE_ENV = "REPLACE_BACKGROUND_KEY_FILE"  # read by handler/shared_key.py in every worker
KEY_ENV = "REPLACE_BACKGROUND_KEY"
METRICS_ENV = "REPLACE_BACKGROUND_METRICS"


def log(message: str) -> None:
    print(f"replace-background: {message}", file=sys.stderr, flush=True)


def settings(metrics: bool, gpus: str | None) -> dict[str, str]:
    """What the container changes in the project's config.properties (the sizes and timeouts stay)."""
    changed = {
        "inference_address": "http://0.0.0.0:8080",
        "management_address": "http://127.0.0.1:8081",
        "metrics_address": f"http://{'0.0.0.0' if metrics else '127.0.0.1'}:8082",
        "disable_token_authorization": "true",  # the handler checks the shared key instead
        "enable_model_api": "false",  # the image's model only: nothing is registered at run time
        "model_store": str(MODEL_STORE),
        "load_models": f"{MODEL_NAME}.mar",
    }
    if gpus is not None:
        changed["number_of_gpu"] = gpus
    return changed


def write_config(base: Path, changed: dict[str, str], target: Path) -> None:
    """``base`` with each key of ``changed`` set (replaced in place, or appended); number_of_gpu is
    dropped unless given, so that TorchServe counts the GPUs the container was given itself."""
    lines, seen = [], set()
    for line in base.read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key == "number_of_gpu" and key not in changed:
            continue
        if key in changed:
            lines.append(f"{key}={changed[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in changed.items() if k not in seen]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` so that a reader never sees half a file (clients poll the key file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def shared_key(work: Path) -> tuple[str, bool]:
    """(path of the key file the handler reads, whether the key was made here)."""
    path = work / "key"
    value = os.environ.get(KEY_ENV, "").strip()
    given = os.environ.get(KEY_FILE_ENV, "").strip()
    if value or KEY_ENV in os.environ:
        if not value:
            sys.exit(f"replace-background: {KEY_ENV} is set but empty")
        _write_private(path, value)  # the workers read a file: the key stays out of their environment
        return str(path), False
    if given:
        try:
            if not Path(given).read_text(encoding="utf-8").strip():
                sys.exit(f"replace-background: {KEY_FILE_ENV}={given} is empty")
        except OSError as exc:
            sys.exit(f"replace-background: cannot read {KEY_FILE_ENV}={given}: {exc.strerror or exc}")
        return given, False
    _write_private(path, secrets.token_urlsafe(32))
    return str(path), True


def _write_private(path: Path, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key)


def publish_key(key: str) -> list[Path]:
    """Write key_file.json and server.json into the mounted folder; the files written (to remove at exit)."""
    try:
        KEY_FOLDER.mkdir(parents=True, exist_ok=True)
        key_file, state = KEY_FOLDER / "key_file.json", KEY_FOLDER / "server.json"
        write_json(key_file, {"inference": {"key": key, "expiration time": "never (until the container stops)"}})
        write_json(state, {"inference_url": PUBLIC_URL.rstrip("/"), "model_name": MODEL_NAME})
    except OSError as exc:
        log(f"cannot write the key into {KEY_FOLDER} ({exc.strerror or exc}): clients will not find it. Mount a "
            "folder this container's user can write (docs/DEPLOY.md), or give the key with "
            f"{KEY_FILE_ENV}")
        return []
    log(f"requests need the key in {key_file} (Authorization: Bearer <key>)")
    return [key_file, state]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="torchserve-"))
    (work / "tmp").mkdir()
    metrics = os.environ.get(METRICS_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    config = work / "config.properties"
    write_config(BASE_CONFIG, settings(metrics, os.environ.get("REPLACE_BACKGROUND_GPUS") or None), config)
    key_path, made_here = shared_key(work)
    written = publish_key(Path(key_path).read_text(encoding="utf-8").strip()) if made_here else []
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update({KEY_FILE_ENV: key_path, "TMPDIR": str(work / "tmp"), "TEMP": str(work / "tmp"),
                              "LOG_LOCATION": str(work / "logs"), "METRICS_LOCATION": str(work / "logs")})
    cmd = ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", str(config),
           "--model-store", str(MODEL_STORE)]
    server = subprocess.Popen(cmd, cwd=work, env=env)

    def stop(signum: int, _frame: FrameType | None) -> None:
        # tini -g already signals the whole group; this also covers a plain `kill` of this process.
        if server.poll() is None:
            server.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = server.wait()
    for path in written:
        path.unlink(missing_ok=True)
    return 0 if code in (-signal.SIGTERM, -signal.SIGINT, 143, 130) else code


if __name__ == "__main__":
    sys.exit(main())
