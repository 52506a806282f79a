"""Podman for the container tests: the commands, the project's containers.conf, the local base image
and the pip options a build needs on a machine whose package sources are its own.

Everything here is test plumbing. A user builds with a plain ``docker build .`` / ``podman build .``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
IMAGE = "localhost/replace-background:1.0.0"  # the name deploy/kubernetes/deployment.yaml uses
HOST_CA = "/run/host-ca.crt"


def env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless the caller chose one."""
    return dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)))


def podman(*args: str, timeout: float = 120, check: bool = True, input: bytes | None = None,
           ) -> subprocess.CompletedProcess[bytes]:
    """Run ``podman ARGS``; on failure the error names the command and its output."""
    proc = subprocess.run(["podman", *args], capture_output=True, timeout=timeout, env=env(), input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout.decode(errors='replace')[-3000:]}\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def unavailable() -> str | None:
    """Why podman cannot run containers here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (make container-test installs it when run as root with apt)"
    try:
        proc = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return "podman info timed out"
    if proc.returncode != 0:
        return f"podman cannot run here: {proc.stderr.decode(errors='replace').strip()[-500:]}"
    return None


def base_image(containerfile: Path) -> str:
    """The image the Containerfile's FROM line names."""
    match = re.search(r"^FROM\s+(\S+)", containerfile.read_text(encoding="utf-8"), re.MULTILINE)
    if not match:
        raise AssertionError(f"{containerfile} has no FROM line")
    return match.group(1)


def has_image(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def pip_options() -> tuple[list[str], str]:
    """(podman build volume options, extra pip options) that give the build this machine's pip sources.

    This machine's pip reads local wheel folders, local indexes and a CA bundle from its own
    configuration; a build sees none of it unless it is mounted and named. Elsewhere this is empty.
    """
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    volumes: list[str] = []
    extra: list[str] = []
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        option = name.rsplit(".", 1)[-1]
        for item in value.split():
            path = item.removeprefix("file://")
            if option in ("find-links", "extra-index-url") and path.startswith("/") and Path(path).exists():
                root = "/" + "/".join(Path(path).parts[1:3])  # e.g. /opt/pypi: the index links into ../../files
                if f"{root}:{root}:ro" not in volumes:
                    volumes += ["-v", f"{root}:{root}:ro"]
                extra += [f"--{option}", item]
            elif option == "cert" and Path(path).is_file() and HOST_CA not in extra:
                volumes += ["-v", f"{path}:{HOST_CA}:ro"]
                extra += ["--cert", HOST_CA]
    return volumes, " ".join(extra)


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_ports(container: str) -> dict[int, str]:
    """Port -> address of every TCP socket listening inside ``container`` (from its /proc/net/tcp)."""
    text = podman("exec", container, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true").stdout.decode()
    ports: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "sl" or fields[3] != "0A" or ":" not in fields[1]:  # 0A: LISTEN
            continue
        address, port = fields[1].rsplit(":", 1)
        ports[int(port, 16)] = _address(address)
    return ports


def _address(hex_address: str) -> str:
    """/proc/net/tcp's hex address as text; an IPv4-mapped IPv6 address (Java's sockets) as its IPv4."""
    if len(hex_address) == 32 and hex_address.upper().startswith("0000000000000000FFFF0000"):
        hex_address = hex_address[24:]
    if len(hex_address) == 8:  # one 32-bit word, host (little-endian) byte order
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address
