"""One TorchServe instance: its folder, its record (``server.json``) and the ``Server`` handle.

Each instance lives in one working folder (default ``./serve``): TorchServe writes its key file
(``key_file.json``) to its working directory and its pid file to ``$TMPDIR``, so the folder holds
both (``tmp/``), the logs (``logs/``), the generated ``config.properties`` and ``server.json``
(what ``stop`` and ``status`` need, and where clients find the URLs: ``contract.server_state``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from handler import contract
from handler.serve import group

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "config.properties"
DEFAULT_WORKDIR = REPO / contract.SERVE_FOLDER
DEFAULT_MODEL_STORE = REPO / "model_store"
DEFAULT_MODEL = contract.MODEL_NAME
STATE_NAME = contract.SERVER_STATE_NAME
KEY_FILE_NAME = contract.KEY_FILE_NAME
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# server.json's fields; older files may hold more (a start time), which reading ignores
STATE_FIELDS = ("pid", "inference_url", "management_url", "metrics_url", "model_name", "workdir")


def read_keys(key_file: str | Path) -> dict:
    """The parsed key file: ``{"management": {"key", "expiration time"}, "inference": {...}, "API": {...}}``."""
    return contract.read_key_file(key_file)


def read_state(workdir: str | Path) -> dict | None:
    """The fields of ``workdir/server.json``, or None when there is none."""
    path = Path(workdir) / STATE_NAME
    if not path.is_file():
        return None
    st = json.loads(path.read_text())
    return {k: v for k, v in st.items() if k in STATE_FIELDS}


@dataclass
class Server:
    """A TorchServe instance: URLs, key file and the process group to stop (``pid`` is its id).

    Keys are read from the key file on every access because ``rotate-key`` rewrites it.
    """

    workdir: Path
    inference_url: str
    management_url: str
    metrics_url: str
    model_name: str
    pid: int
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def key_file(self) -> Path:
        return self.workdir / KEY_FILE_NAME

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def inference_key(self) -> str:
        return contract.key_of(read_keys(self.key_file), "inference", self.key_file)

    @property
    def management_key(self) -> str:
        return contract.key_of(read_keys(self.key_file), "management", self.key_file)

    @property
    def api_key(self) -> str:
        return contract.key_of(read_keys(self.key_file), "API", self.key_file)

    @property
    def predictions_url(self) -> str:
        return contract.predictions_url(self.inference_url, self.model_name)

    def auth(self, kind: str = "inference") -> dict[str, str]:
        """The ``Authorization`` header for ``inference``, ``management`` or ``API`` calls."""
        key = {"inference": self.inference_key, "management": self.management_key, "API": self.api_key}[kind]
        return {"Authorization": f"Bearer {key}"}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        from handler.serve.control import stop_server  # control builds Servers: imported when used

        stop_server(self.workdir, timeout)

    def state(self) -> dict:
        """What ``server.json`` records."""
        return {"pid": self.pid, "inference_url": self.inference_url, "management_url": self.management_url,
                "metrics_url": self.metrics_url, "model_name": self.model_name, "workdir": str(self.workdir)}

    def save_state(self) -> None:
        (self.workdir / STATE_NAME).write_text(json.dumps(self.state(), indent=2) + "\n")

    @classmethod
    def from_state(cls, workdir: str | Path) -> Server | None:
        """The instance recorded in ``workdir/server.json`` if its process group is still alive."""
        st = read_state(workdir)
        if st is None:
            return None
        server = cls(Path(st["workdir"]), st["inference_url"], st["management_url"], st["metrics_url"],
                     st["model_name"], int(st["pid"]))
        return server if group.alive(server.pid, server.workdir) else None


def environment(workdir: Path) -> dict[str, str]:
    """The instance's environment: its own TMPDIR (pid file, sockets) and log folder, so instances never mix."""
    tmp = workdir / "tmp"
    return dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(workdir / "logs"),
                METRICS_LOCATION=str(workdir / "logs"))


def log_tail(workdir: Path, lines: int = 30) -> str:
    """The end of the first log the instance wrote, for error messages."""
    for name in ("ts_log.log", "console.log", "model_log.log"):
        path = workdir / "logs" / name
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            return f"last lines of {path}:\n" + "\n".join(text)
    return f"(no log in {workdir / 'logs'})"
