"""The process group of one TorchServe instance: who belongs to it, and ending it.

TorchServe starts in its own session, so its launcher, Java frontend and Python workers share one
process group whose id is the launcher's pid; ``server.json`` records it. Processes are found by
that group id and the instance folder, never by name, so other servers are never touched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def members(pgid: int, workdir: Path | None = None) -> list:
    """Live (non-zombie) ``psutil.Process`` objects of process group ``pgid``.

    With ``workdir``, none unless one of them names that instance folder in its command line (the
    launcher's ``--ts-config``, the frontend's ``java.io.tmpdir``, the workers' sockets): a
    ``server.json`` left by a crash or a reboot must not make ``make stop`` kill, or ``make serve``
    wait for, an unrelated process group that got the same number. A recorded start time cannot
    tell them apart, as it follows wall-clock updates (docs/SERVING.md, the instance folder).
    """
    import psutil  # a torchserve dependency

    found, ours = [], workdir is None
    needle = f"{workdir}{os.sep}"
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
                ours = ours or any(needle in arg for arg in proc.info["cmdline"] or ())
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found if ours else []


def alive(pgid: int, workdir: Path | None = None) -> bool:
    """Whether group ``pgid`` (of the instance in ``workdir``, when given) has a live process."""
    return bool(members(pgid, workdir))


def wait_gone(pgid: int, workdir: Path | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the group to end; True once none of it is left."""
    deadline = time.monotonic() + timeout
    while alive(pgid, workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not alive(pgid, workdir)


def end(pgid: int, workdir: Path | None, grace: float) -> bool:
    """Give the group ``grace`` s to exit by itself, then SIGTERM, then SIGKILL (5 s each); True if it ended."""
    if wait_gone(pgid, workdir, grace):
        return True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        if wait_gone(pgid, workdir, 5.0):
            return True
    return False


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if this process started it, so no zombie stays behind."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
