"""Fixtures of the GIMP tests: a GIMP 3 that can run, and the real TorchServe when it can start."""

from __future__ import annotations

import pytest
from gimp_harness import skip_unless_gimp


@pytest.fixture(scope="module")
def gimp_ready() -> None:
    skip_unless_gimp()


@pytest.fixture(scope="module")
def real_server(request: pytest.FixtureRequest) -> object:
    """tests/conftest.py's ``torchserve_server``; if it cannot start, skip (printed) instead of erroring.

    A server that fails to start is reported by the serving tests; here it only means that the
    plug-in cannot be checked against it.
    """
    try:
        return request.getfixturevalue("torchserve_server")
    except Exception as exc:
        reason = f"the real TorchServe could not start ({type(exc).__name__}: {str(exc)[:300]})"
        print(f"SKIP GIMP real-server tests: {reason}")
        pytest.skip(reason)
