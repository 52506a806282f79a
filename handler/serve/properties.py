"""TorchServe's ``config.properties``: reading it, writing an instance's copy, and the port checks.

The repository's config.properties stays the single source of settings; an instance's copy only
changes what must differ (ports, model store, models to load).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from handler.serve.errors import ServeError

# TorchServe's own defaults, used when config.properties does not name a port.
DEFAULT_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082, "grpc_inference": 7070,
                 "grpc_management": 7071}
HTTP_APIS = ("inference", "management", "metrics")
GRPC_APIS = ("grpc_inference", "grpc_management")


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
    """Copy ``base`` to ``dst`` with keys replaced (None removes a key), comments kept."""
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


def port_of(url: str) -> int:
    """The port of ``url``, the scheme's default when it names none."""
    parsed = urlparse(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def port_in_use(port: int) -> bool:
    """Whether a loopback listener holds ``port`` now (SO_REUSEADDR: a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def api_addresses(props: Mapping[str, str], ports: Mapping[str, int]) -> tuple[dict[str, str], dict[str, int]]:
    """(HTTP API URLs, gRPC ports) of an instance: ``ports`` where given, else the config's, else TorchServe's.

    The host always comes from the config, so a loopback-only setting stays loopback-only.
    """
    urls = {}
    for kind in HTTP_APIS:
        address = props.get(f"{kind}_address", f"http://127.0.0.1:{DEFAULT_PORTS[kind]}")
        host = urlparse(address).hostname or "127.0.0.1"
        urls[kind] = f"http://{host}:{ports.get(kind, port_of(address))}"
    grpc = {k: ports.get(k, int(props.get(f"{k}_port", DEFAULT_PORTS[k]))) for k in GRPC_APIS}
    return urls, grpc


def check_ports(urls: Mapping[str, str], grpc: Mapping[str, int], config: str | Path) -> None:
    """Refuse one port for two APIs, or a port already taken, with a message naming the APIs.

    TorchServe given one port for two APIs stops at start-up without saying why, and one whose
    port is taken fails only after its workers loaded; checking first gives the reason at once.
    """
    chosen = [*((k, port_of(u)) for k, u in urls.items()), *grpc.items()]
    for (kind, port), (other, same) in itertools.combinations(chosen, 2):
        if port == same:
            raise ServeError(f"port {port} is given to both {kind} and {other}: TorchServe needs one port per API "
                             f"(check {config} and the ports passed in)")
    for kind, port in chosen:
        if port_in_use(port):
            raise ServeError(f"port {port} ({kind}) is already in use: another TorchServe "
                             "(`make stop`, or `python -m handler.serve status`) or another program")
