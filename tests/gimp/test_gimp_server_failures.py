"""A real GIMP 3 runs the plug-in against servers that hang, trickle or hang up: a clear error, the
image untouched, and GIMP gets its answer at the plug-in's Timeout, not whenever the server pleases.

The servers are the socket-level ones of tests/reliability/raw_servers.py (the real TorchServe
stopped mid-request gives the connection reset that ``reset`` gives; tests/reliability checks that
against the real server outside GIMP). One headless GIMP start runs all cases.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from gimp_harness import GimpRun, assert_failed_cleanly, in_job, run_gimp, skip_unless_gimp

from tests.reliability.raw_servers import RawServer

pytestmark = pytest.mark.gimp

PHOTO = Path(__file__).resolve().parent / "data" / "astronaut.jpg"
TIMEOUT_S = 2
# The GIMP side measures the PDB call alone; past the Timeout, the plug-in only finishes its
# last progress tick and returns. A hang would take as long as the server (for ever here).
SLACK_S = 8


@pytest.fixture(scope="module")
def failures_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[GimpRun, dict[str, str]]:
    skip_unless_gimp()
    job = tmp_path_factory.mktemp("gimp-server-failures")
    photo = in_job(job, PHOTO)
    with ExitStack() as stack:
        servers = {b: stack.enter_context(RawServer(b)) for b in ("silent", "trickle", "reset")}
        cases = [{"name": f"server_{b}", "input": photo, "setup": {"old_mask": True},
                  "args": {"server-url": srv.url, "inference-key": "k", "timeout": TIMEOUT_S}}
                 for b, srv in servers.items()]
        run = run_gimp(job, cases, timeout=300)
        return run, {b: srv.url for b, srv in servers.items()}


@pytest.mark.parametrize("behaviour,needles", [
    ("silent", [f"did not answer within {TIMEOUT_S} s", "raise Timeout"]),
    ("trickle", [f"did not answer within {TIMEOUT_S} s", "raise Timeout"]),
    ("reset", ["closed the connection without an answer", "stopped or restarted", "Fix:"]),
])
def test_server_failure_is_a_clear_error_and_changes_nothing(failures_batch, behaviour: str,
                                                             needles: list[str]) -> None:
    run, urls = failures_batch
    case = run.case(f"server_{behaviour}")
    assert_failed_cleanly(case, [urls[behaviour], *needles], hint=False)  # "Fix:" is a needle where it is due
    assert case["seconds"] < TIMEOUT_S + SLACK_S, f"GIMP waited {case['seconds']} s with a {TIMEOUT_S} s Timeout"
    print(f"\n{behaviour}: {case['seconds']:.1f} s: {case['error'][:160]}")
