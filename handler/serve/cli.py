"""Start, check and stop a TorchServe instance for the person segmenter.

    python -m handler.serve start        # what `make serve` runs after `make mar`
    python -m handler.serve status
    python -m handler.serve key          # print the current inference key (for curl)
    python -m handler.serve rotate-key   # new inference key (keys expire after 60 minutes)
    python -m handler.serve stop         # what `make stop` runs

Each instance lives in one working folder (default ./serve) with its key file, logs, generated
config.properties and server.json; several instances, e.g. tests next to `make serve`, run side
by side with their own folders and ports (--workdir, and the ports in --config).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from handler import contract
from handler.serve.control import rotate_key, start_server, stop_server
from handler.serve.errors import ServeError
from handler.serve.hints import curl_example, describe, expiry, stop_hint
from handler.serve.instance import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    DEFAULT_MODEL_STORE,
    DEFAULT_WORKDIR,
    READY_TIMEOUT_S,
    Server,
)

PROG = "handler.serve"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["start", "stop", "status", "key", "rotate-key"])
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="instance folder (default: ./serve)")
    p.add_argument("--model-store", type=Path, default=DEFAULT_MODEL_STORE)
    p.add_argument("--model-name", default=DEFAULT_MODEL)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TorchServe config.properties")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for READY workers")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 done, 1 no server running (status, key, rotate-key), 2 error."""
    args = parse_args(argv)
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "stop":
            stopped = stop_server(args.workdir)
            print(f"{PROG}: " + ("TorchServe stopped." if stopped else "TorchServe was not running."))
            return 0
        server = Server.from_state(args.workdir)
        if server is None:
            print(f"{PROG}: TorchServe is not running from {args.workdir.resolve()} (`make serve`)", file=sys.stderr)
            return 1
        if args.command == "key":
            print(server.inference_key)
        elif args.command == "rotate-key":
            rotate_key(server)
            print(f"{PROG}: new inference key written to {server.key_file}; expires at {expiry(server)}")
        else:
            _status(server)
    except (ServeError, contract.KeyFileError, OSError, requests.RequestException) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _start(args: argparse.Namespace) -> int:
    """Start unless this folder's instance already runs (then say so: a new archive needs a stop first)."""
    running = Server.from_state(args.workdir)
    if running is not None:
        print(f"{PROG}: TorchServe is already running (pid {running.pid}); `{stop_hint(args.workdir)}` "
              f"first to reload a new archive.\n{describe(running)}")
        return 0
    t0 = time.monotonic()
    print(f"{PROG}: starting TorchServe from {args.workdir.resolve()} ...", flush=True)
    server = start_server(args.workdir, args.model_store, model_name=args.model_name, config=args.config,
                          ready_timeout=args.timeout)
    print(f"{PROG}: {server.model_name} is READY after {time.monotonic() - t0:.1f} s "
          f"(pid {server.pid})\n{describe(server)}\n\nTry it:\n{curl_example(server)}\n\n"
          f"Stop it with `{stop_hint(server.workdir)}`.")
    return 0


def _status(server: Server) -> None:
    r = requests.get(f"{server.management_url}/models/{server.model_name}",
                     headers=server.auth("management"), timeout=10)
    workers = [w.get("status") for w in r.json()[0].get("workers", [])] if r.ok else r.text.strip()
    print(f"{PROG}: running (pid {server.pid}); workers: {workers}\n{describe(server)}")
