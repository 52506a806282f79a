"""Start, wait for, stop and re-key a TorchServe instance.

``start_server`` is the reusable entry point: it returns a ``Server`` handle once the model's
workers are READY according to the management API (``/ping`` answers "Healthy" even while
workers crash-loop, so it is not a readiness check).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from handler import contract
from handler.serve import group, instance
from handler.serve.errors import ServeError
from handler.serve.hints import stop_hint
from handler.serve.instance import Server, environment, log_tail, read_keys, read_state
from handler.serve.properties import api_addresses, check_ports, read_properties, write_config
from handler.serve.tools import check_prerequisites, torchserve


def start_server(workdir: str | Path = instance.DEFAULT_WORKDIR, model_store: str | Path = instance.DEFAULT_MODEL_STORE,
                 models: Mapping[str, str] | None = None, model_name: str = instance.DEFAULT_MODEL,
                 config: str | Path = instance.DEFAULT_CONFIG, ports: Mapping[str, int] | None = None,
                 overrides: Mapping[str, str | None] | None = None,
                 ready_timeout: float = instance.READY_TIMEOUT_S) -> Server:
    """Start TorchServe in the background and return once ``model_name``'s workers are READY.

    ``models`` maps names to archives to load at start (default ``{model_name: model_name.mar}``;
    an empty mapping loads none and skips the readiness wait). ``ports`` may set ``inference``,
    ``management``, ``metrics``, ``grpc_inference``, ``grpc_management`` (default: config's).
    Everything is checked before anything is written; a start that fails stops what it started.
    """
    check_prerequisites()
    workdir, model_store = Path(workdir).resolve(), Path(model_store).resolve()
    models = {model_name: f"{model_name}.mar"} if models is None else models
    _check_archives(model_store, models)
    _refuse_running(workdir)
    urls, grpc = api_addresses(read_properties(config), ports or {})
    check_ports(urls, grpc, config)
    settings: dict[str, str | None] = {
        **{f"{k}_address": u for k, u in urls.items()},
        **{f"{k}_port": str(p) for k, p in grpc.items()},
        "model_store": str(model_store),
        "load_models": ",".join(f"{n}={a}" for n, a in models.items()) or None,
        **(overrides or {}),
    }
    _prepare_folder(workdir)
    cfg = write_config(config, workdir / "config.properties", settings)
    proc = _launch(workdir, cfg, model_store)
    server = Server(workdir, urls["inference"], urls["management"], urls["metrics"], model_name, proc.pid, proc)
    server.save_state()
    try:
        wait_ready(server, model_name if model_name in models else None, ready_timeout)
    except BaseException:
        stop_server(workdir)
        raise
    return server


def _check_archives(model_store: Path, models: Mapping[str, str]) -> None:
    for archive in models.values():
        if not (model_store / archive).is_file():
            raise ServeError(f"{model_store / archive}: model archive not found; build it with `make mar` "
                             "(python training/export.py; needs segmenter/weights/person_unet.pt or "
                             "--checkpoint runs/<run>/best.pt from `python training/train.py`)")


def _refuse_running(workdir: Path) -> None:
    running = Server.from_state(workdir)
    if running is not None:
        raise ServeError(f"a TorchServe instance from {workdir} is already running (pid {running.pid}); "
                         f"stop it first (`{stop_hint(workdir)}`)")


def _prepare_folder(workdir: Path) -> None:
    """The instance folder with ``logs/`` and ``tmp/``, and no key file of an earlier run to mistake for ours."""
    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / instance.KEY_FILE_NAME).unlink(missing_ok=True)


def _launch(workdir: Path, cfg: Path, model_store: Path) -> subprocess.Popen:
    """Run TorchServe in its own session (its own process group, which ``stop`` ends), output to console.log."""
    cmd = [torchserve(), "--start", "--foreground", "--ncs", "--ts-config", str(cfg),
           "--model-store", str(model_store)]
    console = open(workdir / "logs" / "console.log", "ab")  # noqa: SIM115 (the child keeps it)
    try:
        return subprocess.Popen(cmd, cwd=workdir, env=environment(workdir), stdin=subprocess.DEVNULL,
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        console.close()


def wait_ready(server: Server, model_name: str | None, timeout: float = instance.READY_TIMEOUT_S) -> dict | None:
    """Wait for the key file and, if ``model_name``, for all its workers READY; return its description."""
    deadline = time.monotonic() + timeout
    description = None
    while True:
        if server.process is not None and server.process.poll() is not None:
            raise ServeError(f"TorchServe exited with code {server.process.returncode} during start-up\n"
                             + log_tail(server.workdir))
        if server.key_file.is_file():
            try:
                ready, found = _model_ready(server, model_name)
                if ready:
                    return found
                description = found or description
            except (requests.RequestException, contract.KeyFileError, ValueError, KeyError, IndexError):
                pass
        if time.monotonic() > deadline:
            state = json.dumps(description.get("workers")) if description else "model not registered"
            raise ServeError(f"{model_name or 'TorchServe'} not ready after {timeout:.0f} s ({state})\n"
                             + log_tail(server.workdir))
        time.sleep(0.25)


def _model_ready(server: Server, model_name: str | None) -> tuple[bool, dict | None]:
    """(ready, the model's description): without a model, ready once the management API answers."""
    if model_name is None:
        requests.get(f"{server.management_url}/models", headers=server.auth("management"),
                     timeout=5).raise_for_status()
        return True, None
    r = requests.get(f"{server.management_url}/models/{model_name}", headers=server.auth("management"), timeout=5)
    if r.status_code != 200:
        return False, None
    description = r.json()[0]
    workers = description.get("workers", [])
    ready = bool(workers) and all(w.get("status") == "READY" for w in workers) \
        and len(workers) >= int(description.get("minWorkers", 1))
    return ready, description


def stop_server(workdir: str | Path = instance.DEFAULT_WORKDIR, timeout: float = instance.STOP_TIMEOUT_S) -> bool:
    """Stop the instance of ``workdir`` and every process it started; False if none was running.

    ``torchserve --stop`` (same TMPDIR and working directory) lets the frontend shut its workers
    down and deletes the key file; whatever is left of the process group after ``timeout`` is
    terminated, then killed. Processes are found by the group id recorded at start, never by name.
    """
    workdir = Path(workdir).resolve()
    st = read_state(workdir)
    if st is None:
        return False
    pgid = int(st["pid"])
    was_running = group.alive(pgid, workdir)
    if was_running:
        try:
            subprocess.run([torchserve(), "--stop"], cwd=workdir, env=environment(workdir),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        except (subprocess.TimeoutExpired, ServeError):
            pass
        group.end(pgid, workdir, timeout)
    group.reap(pgid)  # our own child, if this process started it
    if group.alive(pgid, workdir):
        raise ServeError(f"processes of TorchServe group {pgid} survived SIGKILL")
    (workdir / instance.STATE_NAME).unlink(missing_ok=True)
    (workdir / instance.KEY_FILE_NAME).unlink(missing_ok=True)
    return was_running


def rotate_key(server: Server, kind: str = "inference") -> str:
    """Ask the server for a new ``inference`` or ``management`` key (needs the API key); return it.

    TorchServe rewrites the key file; the old key stops working at once.
    """
    r = requests.post(f"{server.management_url}/token", params={"type": kind}, headers=server.auth("API"),
                      timeout=10)
    if r.status_code != 200:
        raise ServeError(f"key rotation failed: HTTP {r.status_code} {r.text.strip()}")
    return read_keys(server.key_file)[kind]["key"]
