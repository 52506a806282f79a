"""What the command line prints about an instance: its URLs, key expiry and the commands that act on it.

Every printed command names the instance it belongs to (``--workdir`` outside ``./serve``), so
following a hint never acts on another server.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from handler import contract
from handler.serve.instance import DEFAULT_WORKDIR, REPO, Server, read_keys


def command(workdir: str | Path, name: str) -> str:
    """The ``handler.serve`` command line ``name`` for this instance.

    This interpreter (``.venv/bin/python``: a bare ``python`` may lack the dependencies), and
    ``--workdir`` for an instance outside ``./serve``.
    """
    py = os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable
    workdir = Path(workdir).resolve()
    return f"{py} -m handler.serve {name}" + ("" if workdir == DEFAULT_WORKDIR else f" --workdir {workdir}")


def stop_hint(workdir: str | Path) -> str:
    """``make stop`` for the default instance, else its own stop command."""
    return "make stop" if Path(workdir).resolve() == DEFAULT_WORKDIR else command(workdir, "stop")


def expiry(server: Server, kind: str = "inference") -> str:
    """When the ``kind`` key expires, in UTC and minutes from now; "unknown" without a readable key file."""
    try:
        text = read_keys(server.key_file)[kind]["expiration time"]
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        left = (when - datetime.now(timezone.utc)).total_seconds() / 60
        return f"{when:%H:%M:%S} UTC ({left:.0f} min from now)" if left > 0 else f"{when:%H:%M:%S} UTC (EXPIRED)"
    except (contract.KeyFileError, KeyError, TypeError, ValueError):
        return "unknown"


def curl_example(server: Server) -> str:
    """A ready-to-paste request that replaces a photo's background."""
    return (f'curl -sS -H "Authorization: Bearer $({command(server.workdir, "key")})" \\\n'
            f'     -H "Content-Type: image/jpeg" -H "X-Mode: composite" -H "X-Background: #2E7D32" \\\n'
            f'     --data-binary @photo.jpg -o composite.png {server.predictions_url}')


def describe(server: Server) -> str:
    """The instance's URLs, key file, key expiry and logs, one per line."""
    return "\n".join([
        f"  predictions  {server.predictions_url}",
        f"  management   {server.management_url}   metrics {server.metrics_url}/metrics",
        f"  key file     {server.key_file}",
        f"               inference key expires at {expiry(server)}; handler.client and the GIMP plug-in "
        f"renew it themselves, for curl: `{command(server.workdir, 'rotate-key')}`",
        f"  logs         {server.log_dir}",
    ])
