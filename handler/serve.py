"""Start, check and stop a TorchServe instance for the person segmenter.

    python -m handler.serve start        # what `make serve` runs after `make mar`
    python -m handler.serve status
    python -m handler.serve key          # print the current inference key (for curl)
    python -m handler.serve rotate-key   # new inference key (keys expire after 60 minutes)
    python -m handler.serve stop         # what `make stop` runs

Each instance lives in one working folder (default ``./serve``): TorchServe writes its key file
(``key_file.json``) to its working directory and its pid file to ``$TMPDIR``, so the folder holds
both (``tmp/``), the logs (``logs/``), the generated ``config.properties`` and ``server.json``
(what ``stop`` needs). Several instances, e.g. tests next to ``make serve``, run side by side
with their own folders and ports. ``start_server`` is the reusable entry point: it returns a
``Server`` handle once the model's workers are READY according to the management API (``/ping``
answers "Healthy" even while workers crash-loop, so it is not a readiness check).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import requests

from handler import contract

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config.properties"
DEFAULT_WORKDIR = REPO / contract.SERVE_FOLDER
DEFAULT_MODEL_STORE = REPO / "model_store"
DEFAULT_MODEL = contract.MODEL_NAME
STATE_NAME = contract.SERVER_STATE_NAME  # clients read it to find this instance's URLs (contract.server_state)
KEY_FILE_NAME = contract.KEY_FILE_NAME
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# TorchServe's own defaults, used when config.properties does not name a port.
DEFAULT_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082, "grpc_inference": 7070,
                 "grpc_management": 7071}


class ServeError(RuntimeError):
    """Starting or stopping failed; the message says why and what to do."""


# --- config.properties -------------------------------------------------------------------------

def read_properties(path: str | Path) -> dict[str, str]:
    """``key=value`` pairs of a Java properties file (comments and blank lines skipped)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_config(base: str | Path, dst: str | Path, overrides: Mapping[str, str | None]) -> Path:
    """Copy ``base`` to ``dst`` with keys replaced (None removes a key), comments kept.

    The repository's config.properties stays the single source of settings; an instance only
    changes what must differ (ports, model store, models to load).
    """
    pending = dict(overrides)
    out = []
    for line in Path(base).read_text().splitlines():
        stripped = line.strip()
        key = stripped.split("=", 1)[0].strip() if "=" in stripped and not stripped.startswith("#") else None
        if key in pending:
            value = pending.pop(key)
            if value is not None:
                out.append(f"{key}={value}")
            continue
        out.append(line)
    out += [f"{k}={v}" for k, v in pending.items() if v is not None]
    dst = Path(dst)
    dst.write_text("\n".join(out) + "\n")
    return dst


def _port(url: str) -> int:
    parsed = urlparse(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def free_port() -> int:
    """A loopback TCP port that is free right now (for tests)."""
    return free_ports(["port"])["port"]


def free_ports(names: Iterable[str]) -> dict[str, int]:
    """Distinct loopback TCP ports, free right now, one per name (tests, benchmarks).

    Each socket stays bound until all are chosen: asked one at a time, the kernel handed the same
    ephemeral port out twice, and TorchServe, given one port for two APIs, stopped at start-up
    (seen in a CI run: inference and metrics both on 48809).
    """
    with ExitStack() as stack:
        socks = {name: stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for name in names}
        for sock in socks.values():
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in socks.items()}


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# --- the running instance ----------------------------------------------------------------------

def read_keys(key_file: str | Path) -> dict:
    """The parsed key file: ``{"management": {"key", "expiration time"}, "inference": {...}, "API": {...}}``."""
    return contract.read_key_file(key_file)


@dataclass
class Server:
    """A TorchServe instance: URLs, key file and the process group to stop.

    Keys are read from the key file on every access because ``rotate-key`` rewrites it.
    """

    workdir: Path
    inference_url: str
    management_url: str
    metrics_url: str
    model_name: str
    pid: int
    create_time: float
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
        stop_server(self.workdir, timeout)

    def state(self) -> dict:
        return {"pid": self.pid, "create_time": self.create_time, "inference_url": self.inference_url,
                "management_url": self.management_url, "metrics_url": self.metrics_url,
                "model_name": self.model_name, "workdir": str(self.workdir)}

    @classmethod
    def from_state(cls, workdir: str | Path) -> Server | None:
        """The instance recorded in ``workdir/server.json`` if its process is still alive."""
        path = Path(workdir) / STATE_NAME
        if not path.is_file():
            return None
        st = json.loads(path.read_text())
        server = cls(Path(st["workdir"]), st["inference_url"], st["management_url"], st["metrics_url"],
                     st["model_name"], int(st["pid"]), float(st["create_time"]))
        return server if _group_alive(server.pid, server.workdir) else None


def _instance_env(workdir: Path) -> dict[str, str]:
    tmp = workdir / "tmp"
    return dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(workdir / "logs"),
                METRICS_LOCATION=str(workdir / "logs"))


def find_tool(name: str) -> str | None:
    """A command installed beside the running Python (the project's .venv) or else on PATH.

    The venv's own copy first: ``make serve`` must run the pinned TorchServe even when another one
    is on PATH, and a venv that is not activated has its commands only beside its python.
    """
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _torchserve() -> str:
    found = find_tool("torchserve")
    if not found:
        raise ServeError("torchserve not found; run `make setup` (installs requirements.txt into .venv)")
    return found


def check_prerequisites() -> None:
    """Java and torchserve must be there; raise ``ServeError`` naming what is missing."""
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise ServeError("java not found: TorchServe's frontend needs a Java 11+ runtime "
                         "(e.g. `apt-get install openjdk-17-jre-headless`)")
    _torchserve()
    try:
        import yaml  # noqa: F401  (undeclared torchserve dependency: workers die without it)
    except ImportError:
        raise ServeError("PyYAML is missing: TorchServe workers import it; run `make setup`") from None


def _group_members(pgid: int, workdir: Path | None = None) -> list:
    """Live (non-zombie) processes of process group ``pgid``.

    With ``workdir``, none unless one of them names that instance folder in its command line (the
    launcher's ``--ts-config``, the frontend's ``java.io.tmpdir``, the workers' sockets). A
    ``server.json`` left by a crash or a reboot must not make ``make stop`` kill, or ``make serve``
    wait for, an unrelated process group that got the same number (pid_max is 32768 on many
    machines, this one included). The recorded start time cannot tell: psutil adds the wall-clock
    boot time to it, and a clock update moved it (a full test run here left two servers running
    when it was compared).
    """
    import psutil  # a torchserve dependency

    members, ours = [], workdir is None
    needle = f"{workdir}{os.sep}"
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
                ours = ours or any(needle in arg for arg in proc.info["cmdline"] or ())
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members if ours else []


def _group_alive(pgid: int, workdir: Path | None = None) -> bool:
    return bool(_group_members(pgid, workdir))


def _log_tail(workdir: Path, lines: int = 30) -> str:
    for name in ("ts_log.log", "console.log", "model_log.log"):
        path = workdir / "logs" / name
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            return f"last lines of {path}:\n" + "\n".join(text)
    return f"(no log in {workdir / 'logs'})"


def start_server(workdir: str | Path = DEFAULT_WORKDIR, model_store: str | Path = DEFAULT_MODEL_STORE,
                 models: Mapping[str, str] | None = None, model_name: str = DEFAULT_MODEL,
                 config: str | Path = DEFAULT_CONFIG, ports: Mapping[str, int] | None = None,
                 overrides: Mapping[str, str | None] | None = None,
                 ready_timeout: float = READY_TIMEOUT_S) -> Server:
    """Start TorchServe in the background and return once ``model_name``'s workers are READY.

    ``models`` maps names to archives to load at start (default ``{model_name: model_name.mar}``;
    an empty mapping loads none and skips the readiness wait). ``ports`` may set ``inference``,
    ``management``, ``metrics``, ``grpc_inference``, ``grpc_management`` (default: config's).
    The process runs in its own session so ``stop`` can end every process it started.
    """
    check_prerequisites()
    workdir = Path(workdir).resolve()
    model_store = Path(model_store).resolve()
    if models is None:
        models = {model_name: f"{model_name}.mar"}
    for archive in models.values():
        if not (model_store / archive).is_file():
            raise ServeError(f"{model_store / archive}: model archive not found; build it with `make mar` "
                             "(python training/export.py; needs segmenter/weights/person_unet.pt or "
                             "--checkpoint runs/<run>/best.pt from `python training/train.py`)")
    running = Server.from_state(workdir)
    if running is not None:
        raise ServeError(f"a TorchServe instance from {workdir} is already running (pid {running.pid}); "
                         f"stop it first (`{_stop_hint(workdir)}`)")
    props = read_properties(config)
    ports = dict(ports or {})
    urls = {}
    for kind in ("inference", "management", "metrics"):
        address = props.get(f"{kind}_address", f"http://127.0.0.1:{DEFAULT_PORTS[kind]}")
        host = urlparse(address).hostname or "127.0.0.1"
        urls[kind] = f"http://{host}:{ports.get(kind, _port(address))}"
    grpc = {k: ports.get(k, int(props.get(f"{k}_port", DEFAULT_PORTS[k])))
            for k in ("grpc_inference", "grpc_management")}
    chosen = [*((k, _port(u)) for k, u in urls.items()), *grpc.items()]
    for (kind, port), (other, same) in itertools.combinations(chosen, 2):
        if port == same:
            raise ServeError(f"port {port} is given to both {kind} and {other}: TorchServe needs one port per API "
                             f"(check {config} and the ports passed in)")
    for kind, port in chosen:
        if _port_in_use(port):
            raise ServeError(f"port {port} ({kind}) is already in use: another TorchServe "
                             "(`make stop`, or `python -m handler.serve status`) or another program")

    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / KEY_FILE_NAME).unlink(missing_ok=True)
    settings: dict[str, str | None] = {
        **{f"{k}_address": u for k, u in urls.items()},
        "grpc_inference_port": str(grpc["grpc_inference"]),
        "grpc_management_port": str(grpc["grpc_management"]),
        "model_store": str(model_store),
        "load_models": ",".join(f"{n}={a}" for n, a in models.items()) or None,
        **(overrides or {}),
    }
    cfg = write_config(config, workdir / "config.properties", settings)
    cmd = [_torchserve(), "--start", "--foreground", "--ncs", "--ts-config", str(cfg),
           "--model-store", str(model_store)]
    console = open(workdir / "logs" / "console.log", "ab")  # noqa: SIM115 (the child keeps it)
    try:
        proc = subprocess.Popen(cmd, cwd=workdir, env=_instance_env(workdir), stdin=subprocess.DEVNULL,
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        console.close()
    import psutil

    server = Server(workdir, urls["inference"], urls["management"], urls["metrics"], model_name, proc.pid,
                    psutil.Process(proc.pid).create_time(), proc)
    (workdir / STATE_NAME).write_text(json.dumps(server.state(), indent=2) + "\n")
    try:
        wait_ready(server, model_name if model_name in models else None, ready_timeout)
    except BaseException:
        stop_server(workdir)
        raise
    return server


def wait_ready(server: Server, model_name: str | None, timeout: float = READY_TIMEOUT_S) -> dict | None:
    """Wait for the key file and, if ``model_name``, for all its workers READY; return its description."""
    deadline = time.monotonic() + timeout
    description = None
    while True:
        if server.process is not None and server.process.poll() is not None:
            raise ServeError(f"TorchServe exited with code {server.process.returncode} during start-up\n"
                             + _log_tail(server.workdir))
        if server.key_file.is_file():
            try:
                if model_name is None:
                    requests.get(f"{server.management_url}/models", headers=server.auth("management"),
                                 timeout=5).raise_for_status()
                    return None
                r = requests.get(f"{server.management_url}/models/{model_name}",
                                 headers=server.auth("management"), timeout=5)
                if r.status_code == 200:
                    description = r.json()[0]
                    workers = description.get("workers", [])
                    if workers and all(w.get("status") == "READY" for w in workers) \
                            and len(workers) >= int(description.get("minWorkers", 1)):
                        return description
            except (requests.RequestException, contract.KeyFileError, ValueError, KeyError, IndexError):
                pass
        if time.monotonic() > deadline:
            state = json.dumps(description.get("workers")) if description else "model not registered"
            raise ServeError(f"{model_name or 'TorchServe'} not ready after {timeout:.0f} s ({state})\n"
                             + _log_tail(server.workdir))
        time.sleep(0.25)


def stop_server(workdir: str | Path = DEFAULT_WORKDIR, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the instance of ``workdir`` and every process it started; False if none was running.

    ``torchserve --stop`` (same TMPDIR and working directory) lets the frontend shut its workers
    down and deletes the key file; whatever is left of the process group after ``timeout`` is
    terminated, then killed. Processes are found by the group id recorded at start, never by name.
    """
    workdir = Path(workdir).resolve()
    state_path = workdir / STATE_NAME
    if not state_path.is_file():
        return False
    st = json.loads(state_path.read_text())
    pgid = int(st["pid"])
    was_running = _group_alive(pgid, workdir)
    if was_running:
        try:
            subprocess.run([_torchserve(), "--stop"], cwd=workdir, env=_instance_env(workdir),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        except (subprocess.TimeoutExpired, ServeError):
            pass
        deadline = time.monotonic() + timeout
        for sig, wait_s in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait_s
            while _group_alive(pgid, workdir) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _group_alive(pgid, workdir):
                break
    try:  # reap our own child, if this process started it
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    if _group_alive(pgid, workdir):
        raise ServeError(f"processes of TorchServe group {pgid} survived SIGKILL")
    state_path.unlink(missing_ok=True)
    (workdir / KEY_FILE_NAME).unlink(missing_ok=True)
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


# --- command line ------------------------------------------------------------------------------

def _expiry(server: Server, kind: str = "inference") -> str:
    try:
        text = read_keys(server.key_file)[kind]["expiration time"]
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        left = (when - datetime.now(timezone.utc)).total_seconds() / 60
        return f"{when:%H:%M:%S} UTC ({left:.0f} min from now)" if left > 0 else f"{when:%H:%M:%S} UTC (EXPIRED)"
    except (contract.KeyFileError, KeyError, TypeError, ValueError):
        return "unknown"


def _command(workdir: str | Path, command: str) -> str:
    """The ``handler.serve`` command line for this instance, as printed in hints.

    This interpreter (``.venv/bin/python``: a bare ``python`` may lack the dependencies), and
    ``--workdir`` for an instance outside ``./serve``, so a hint never acts on another server.
    """
    py = os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable
    workdir = Path(workdir).resolve()
    return f"{py} -m handler.serve {command}" + ("" if workdir == DEFAULT_WORKDIR else f" --workdir {workdir}")


def _stop_hint(workdir: str | Path) -> str:
    return "make stop" if Path(workdir).resolve() == DEFAULT_WORKDIR else _command(workdir, "stop")


def _curl_example(server: Server) -> str:
    return (f'curl -sS -H "Authorization: Bearer $({_command(server.workdir, "key")})" \\\n'
            f'     -H "Content-Type: image/jpeg" -H "X-Mode: composite" -H "X-Background: #2E7D32" \\\n'
            f'     --data-binary @photo.jpg -o composite.png {server.predictions_url}')


def _describe(server: Server) -> str:
    return "\n".join([
        f"  predictions  {server.predictions_url}",
        f"  management   {server.management_url}   metrics {server.metrics_url}/metrics",
        f"  key file     {server.key_file}",
        f"               inference key expires at {_expiry(server)}; handler.client and the GIMP plug-in "
        f"renew it themselves, for curl: `{_command(server.workdir, 'rotate-key')}`",
        f"  logs         {server.log_dir}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["start", "stop", "status", "key", "rotate-key"])
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="instance folder (default: ./serve)")
    p.add_argument("--model-store", type=Path, default=DEFAULT_MODEL_STORE)
    p.add_argument("--model-name", default=DEFAULT_MODEL)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TorchServe config.properties")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for READY workers")
    args = p.parse_args(argv)
    prog = "handler.serve"
    try:
        if args.command == "start":
            running = Server.from_state(args.workdir)
            if running is not None:
                print(f"{prog}: TorchServe is already running (pid {running.pid}); `{_stop_hint(args.workdir)}` "
                      f"first to reload a new archive.\n{_describe(running)}")
                return 0
            t0 = time.monotonic()
            print(f"{prog}: starting TorchServe from {args.workdir.resolve()} ...", flush=True)
            server = start_server(args.workdir, args.model_store, model_name=args.model_name, config=args.config,
                                  ready_timeout=args.timeout)
            print(f"{prog}: {server.model_name} is READY after {time.monotonic() - t0:.1f} s "
                  f"(pid {server.pid})\n{_describe(server)}\n\nTry it:\n{_curl_example(server)}\n\n"
                  f"Stop it with `{_stop_hint(server.workdir)}`.")
        elif args.command == "stop":
            stopped = stop_server(args.workdir)
            print(f"{prog}: " + ("TorchServe stopped." if stopped else "TorchServe was not running."))
        else:
            server = Server.from_state(args.workdir)
            if server is None:
                print(f"{prog}: TorchServe is not running from {args.workdir.resolve()} (`make serve`)",
                      file=sys.stderr)
                return 1
            if args.command == "key":
                print(server.inference_key)
            elif args.command == "rotate-key":
                rotate_key(server)
                print(f"{prog}: new inference key written to {server.key_file}; expires at {_expiry(server)}")
            else:
                r = requests.get(f"{server.management_url}/models/{server.model_name}",
                                 headers=server.auth("management"), timeout=10)
                workers = [w.get("status") for w in r.json()[0].get("workers", [])] if r.ok else r.text.strip()
                print(f"{prog}: running (pid {server.pid}); workers: {workers}\n{_describe(server)}")
    except (ServeError, contract.KeyFileError, OSError, requests.RequestException) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
