"""Fixtures for the reliability tests: dedicated TorchServe instances and /proc helpers.

Every serving test here starts its OWN TorchServe (``handler.serve.start_server`` on free loopback
ports, own folder and ``TMPDIR``) instead of the session's ``torchserve_server``: they kill its
worker, stop it mid-request or measure its memory, and none of that may leak into (or be
disturbed by) the other serving and GIMP tests that share the session server.

The served model is a tiny random U-Net (tests/conftest.py ``build_tiny_checkpoint``): these
tests are about the serving stack (frontend, worker life cycle, handler, encoding), and a
tiny network lets 2,000 requests finish in about a minute on the 2-core test machine. The
server gets ``SEGMENTER_TORCH_THREADS=1``: on a machine shared with other jobs, two OpenMP
threads per request ran about 5x slower here (SERVING.md says the same for several workers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODEL_NAME, build_tiny_checkpoint, skip_without_torchserve

WORKER_MARK = "model_service_worker"  # TorchServe's Python worker script, in the worker's command line


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding ``person_segmenter.mar`` built by export.py from a tiny checkpoint."""
    skip_without_torchserve()
    from training.export import export_archive

    root = tmp_path_factory.mktemp("reliability-store")
    export_archive(build_tiny_checkpoint(root / "tiny.pt"), root / "store", MODEL_NAME)
    return root / "store"


def start_dedicated(workdir: Path, store: Path):
    """A TorchServe of our own on free ports, workers READY; the caller stops it."""
    from handler import serve
    from tests.ports import free_ports

    ports = free_ports(serve.DEFAULT_PORTS)
    return serve.start_server(workdir, store, model_name=MODEL_NAME, ports=ports)


@pytest.fixture
def dedicated_server(tmp_path: Path, tiny_model_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A fresh TorchServe for one test, stopped afterwards (if the test has not stopped it already)."""
    from handler import serve
    from handler.serve import group

    monkeypatch.setenv("SEGMENTER_TORCH_THREADS", "1")  # inherited by the frontend and its workers
    server = start_dedicated(tmp_path / "ts", tiny_model_store)
    try:
        yield server
    finally:
        serve.stop_server(server.workdir)
        assert not group.alive(server.pid), "TorchServe processes left behind"


# --- /proc ----------------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    """Parent pid from /proc/<pid>/stat (the command name may hold spaces and parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def state(pid: int) -> str:
    """The one-letter process state (R, S, Z, ...), or '' when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def worker_pids(server) -> list[int]:
    """TorchServe's Python workers of ``server``: descendants of its process whose command runs the worker."""
    return sorted(p for p in descendants(server.pid) if WORKER_MARK in cmdline(p) and state(p) not in ("Z", ""))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
