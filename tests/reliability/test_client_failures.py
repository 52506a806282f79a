"""Both clients against servers that hang, trickle, drop the connection or lose their worker.

``handler.client.Client`` and the GIMP plug-in's standard-library core (``request_mask``, as the
plug-in calls it) must give up at their timeout, whatever the server does, and say what happened
in words a user can act on: a dropped connection is not
"cannot connect", a dead worker is not just "out of memory". No TorchServe needed; the real
server stopping mid-request is in test_server_stop.py. Both send through the one transport,
``post`` under ``run_with_deadline`` of handler/contract.py.
"""

from __future__ import annotations

import time

import pytest

from handler.client import Client, ClientError
from tests.plugin_folder import import_core
from tests.reliability.raw_servers import RawServer

TIMEOUT = 1.0
# How far past its timeout a client may return: thread start-up and one last 0.2 s poll on a busy
# 2-core machine. A hang would be minutes (or forever, for the trickling server).
SLACK = 5.0
SMALL = b"\x89PNG\r\n\x1a\n" + bytes(2000)
BIG = bytes(48 << 20)  # more than the loopback socket buffers hold, so a server that never reads blocks send()


# The plug-in's stdlib module from a folder install.py filled, as tests/gimp/fake_mask_server.py imports it
# (same module object).
core = import_core()


def plugin_request(url: str, body: bytes, timeout: float = TIMEOUT) -> bytes:
    """What replace-background.py does: ``request_mask``, bounded as a whole by the user's Timeout."""
    return core.request_mask(core.ServerSettings(url=url, key="k", timeout=timeout), body, tick=lambda: None)


def elapsed(fn, *args) -> tuple[BaseException, float]:
    """Run ``fn(*args)``, which must raise; return the exception and the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value, time.monotonic() - t0


@pytest.mark.parametrize("behaviour", ["silent", "deaf", "trickle"])
def test_client_gives_up_at_its_timeout(behaviour: str) -> None:
    body = BIG if behaviour == "deaf" else SMALL
    with RawServer(behaviour) as srv:
        client = Client(srv.url, key="k", key_file=None, timeout=TIMEOUT)
        exc, seconds = elapsed(client.process, body)
    assert isinstance(exc, ClientError), repr(exc)
    assert f"no answer from {srv.url} within 1 s" in str(exc) and exc.status == 0
    assert seconds < TIMEOUT + SLACK, f"returned after {seconds:.1f} s with a {TIMEOUT} s timeout"


@pytest.mark.parametrize("behaviour", ["silent", "deaf", "trickle"])
def test_plugin_gives_up_at_its_timeout(behaviour: str) -> None:
    body = BIG if behaviour == "deaf" else SMALL
    with RawServer(behaviour) as srv:
        exc, seconds = elapsed(plugin_request, srv.url, body)
    assert isinstance(exc, core.PluginError), repr(exc)
    assert f"The server at {srv.url} did not answer within 1 s" in str(exc) and "raise Timeout" in str(exc)
    assert seconds < TIMEOUT + SLACK, f"returned after {seconds:.1f} s with a {TIMEOUT} s timeout"


@pytest.mark.parametrize("behaviour", ["close", "reset"])
@pytest.mark.parametrize("size", ["small", "big"])
def test_client_says_the_server_dropped_the_request(behaviour: str, size: str) -> None:
    """Not "cannot connect ... is the server running?": it was running and hung up mid-request."""
    with RawServer(behaviour) as srv:
        client = Client(srv.url, key="k", key_file=None, timeout=30)
        exc, seconds = elapsed(client.process, SMALL if size == "small" else BIG)
        assert srv.accepted == 1  # it did connect
    assert isinstance(exc, ClientError), repr(exc)
    message = str(exc)
    assert f"the server at {srv.url} closed the connection before answering" in message, message
    assert "handler.serve status" in message and "cannot connect" not in message
    assert seconds < 30


@pytest.mark.parametrize("behaviour", ["close", "reset"])
@pytest.mark.parametrize("size", ["small", "big"])
def test_plugin_says_the_server_dropped_the_request(behaviour: str, size: str) -> None:
    with RawServer(behaviour) as srv:
        exc, _ = elapsed(plugin_request, srv.url, SMALL if size == "small" else BIG, 30)
    assert isinstance(exc, core.PluginError), repr(exc)
    message = str(exc)
    assert f"The server at {srv.url} closed the connection without an answer" in message, message
    assert "stopped or restarted" in message and "Fix:" in message


def test_client_still_says_cannot_connect_when_nothing_listens() -> None:
    with RawServer("silent") as srv:
        url = srv.url
    exc, _ = elapsed(Client(url, key="k", key_file=None, timeout=5).process, SMALL)
    assert isinstance(exc, ClientError) and "cannot connect" in str(exc) and "make serve" in str(exc)



def test_client_works_normally_after_a_cut_request() -> None:
    """The deadline cuts only the stuck request: the same client (same thread, same session) then gets
    answers, keeps its connection alive, and no watchdog thread is left behind."""
    import threading

    with RawServer("trickle") as stuck, RawServer("ok") as good:
        client = Client(stuck.url, key="k", key_file=None, timeout=TIMEOUT)
        with pytest.raises(ClientError, match="within 1 s"):
            client.process(SMALL)
        client.url = good.url
        baseline = threading.active_count()
        for i in range(20):
            assert client.process(SMALL).content.startswith(b"\x89PNG"), i
            if i == 10:
                time.sleep(TIMEOUT + 0.5)  # past the deadline of the earlier requests: nothing fires
        assert threading.active_count() == baseline
        assert good.accepted == 1  # one keep-alive connection for all 20


# TorchServe's answer to the request a worker held when it was killed (seen in test_worker_kill.py).
WORKER_DIED = b'{\n  "code": 507,\n  "type": "InternalServerException",\n  "message": "Worker died."\n}\n'


@pytest.mark.parametrize("status", [507, 500])
def test_a_dead_worker_is_explained_by_both_clients(status: int) -> None:
    """Not just "ran out of memory" or a bare "HTTP 507": the worker died, it is restarted, retry."""
    answer = (status, "application/json", WORKER_DIED.replace(b"507", str(status).encode()))
    with RawServer("ok", answer=answer) as srv:
        with pytest.raises(ClientError) as info:
            Client(srv.url, key="k", key_file=None, timeout=30).process(SMALL)
        plugin, _ = elapsed(plugin_request, srv.url, SMALL, 30)
    assert info.value.status == status
    assert "Worker died." in str(info.value) and "worker died" in str(info.value).split("\n", 1)[1]
    assert "retry" in str(info.value)
    assert isinstance(plugin, core.PluginError)
    assert "model worker died" in str(plugin) and "Worker died." in str(plugin) and "retry" in str(plugin)
