"""Server control and client pieces that need no running TorchServe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from handler import client, serve
from handler.request import RequestError, parse_options
from handler.serve import hints
from tests.ports import free_port, free_ports

REPO = Path(__file__).resolve().parents[2]


def test_repository_config_limits() -> None:
    """Settings and limits; loopback addresses and token authorization: test_security.py."""
    props = serve.read_properties(REPO / "config.properties")
    assert props["enable_model_api"] == "true"
    assert props["metrics_mode"] == "prometheus" and props["default_workers_per_model"] == "1"
    # a 24-MP RGBA PNG of noise (~96 MB) fits the response limit; so does the 64-MP worst case
    assert int(props["max_response_size"]) > 64_000_000 * 4 * 1.01
    assert int(props["max_request_size"]) > 24_000_000 * 6


def test_write_config_overrides_removes_and_keeps_comments(tmp_path: Path) -> None:
    base = tmp_path / "base.properties"
    base.write_text("# comment\na=1\nb=2\nload_models=x.mar\n")
    out = serve.write_config(base, tmp_path / "out.properties", {"a": "9", "load_models": None, "c": "3"})
    text = out.read_text()
    assert text.startswith("# comment\n")
    assert serve.read_properties(out) == {"a": "9", "b": "2", "c": "3"}


def test_stop_without_a_server_is_harmless(tmp_path: Path) -> None:
    assert serve.stop_server(tmp_path) is False
    assert serve.main(["stop", "--workdir", str(tmp_path)]) == 0
    assert serve.main(["status", "--workdir", str(tmp_path)]) == 1
    run = subprocess.run([sys.executable, "-m", "handler.serve", "status", "--workdir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "TorchServe is not running from" in run.stderr, run.stderr


def test_start_without_archive_says_how_to_build_it(tmp_path: Path) -> None:
    from tests.conftest import skip_without_torchserve

    skip_without_torchserve()
    with pytest.raises(serve.ServeError, match="make mar"):
        serve.start_server(tmp_path / "w", tmp_path)


def test_one_port_for_two_apis_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """TorchServe given one port for two APIs stopped at start-up with exit code 0 (CI): say which."""
    from tests.conftest import skip_without_torchserve

    skip_without_torchserve()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "person_segmenter.mar").write_bytes(b"not started, so never read")
    ports = free_ports(serve.DEFAULT_PORTS)
    ports["metrics"] = ports["inference"]
    with pytest.raises(serve.ServeError, match=rf"port {ports['inference']} is given to both inference and metrics"):
        serve.start_server(tmp_path / "w", tmp_path / "store", ports=ports)
    assert not (tmp_path / "w").exists()  # no state file, logs or config written


def test_free_ports_are_distinct() -> None:
    """Asked one at a time, the kernel once gave inference and metrics the same port."""
    for _ in range(200):
        ports = free_ports(serve.DEFAULT_PORTS)
        assert sorted(ports) == sorted(serve.DEFAULT_PORTS) and len(set(ports.values())) == len(ports)


def test_a_stale_state_file_never_signals_the_group_that_reused_its_number(tmp_path: Path) -> None:
    """``serve/server.json`` outlived its server (a crash, a reboot), and another program's process
    group now has the recorded number: ``make stop`` must leave it alone and ``make serve`` must not
    take it for a running instance. A group whose processes name the instance folder (as TorchServe's
    launcher, frontend and workers all do) is the instance, whatever the wall clock did since. A
    server.json written before it stopped recording the start time still reads, and the time is ignored."""
    import psutil

    from tests.conftest import skip_without_torchserve

    skip_without_torchserve()
    workdir = tmp_path / "w"
    workdir.mkdir()

    def record(proc: subprocess.Popen, start_time: bool = False) -> None:
        server = serve.Server(workdir, "http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9",
                              "person_segmenter", proc.pid)
        state = server.state()
        assert "create_time" not in state
        if start_time:  # the older format, its start time 32 s off as a wall-clock step makes it
            state["create_time"] = psutil.Process(proc.pid).create_time() + 32.0
        (workdir / serve.STATE_NAME).write_text(json.dumps(state))

    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    instance = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--ts-config",
                                 str(workdir / "config.properties")], start_new_session=True)
    try:
        record(other)
        assert serve.Server.from_state(workdir) is None
        assert serve.stop_server(workdir, timeout=2) is False
        assert other.poll() is None and not (workdir / serve.STATE_NAME).exists()
        record(instance, start_time=True)
        assert serve.Server.from_state(workdir) == serve.Server(
            workdir, "http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9", "person_segmenter", instance.pid)
        assert serve.stop_server(workdir, timeout=2) is True
        assert instance.poll() is not None and other.poll() is None
    finally:
        for proc in (other, instance):
            proc.kill()
            proc.wait()


def test_options_validation() -> None:
    assert parse_options({}).mode == "mask"
    o = parse_options({"mode": "Composite", "background": "#0f0", "format": "JPG", "quality": "70"})
    assert (o.mode, o.background, o.format, o.quality, o.content_type) == (
        "composite", (0, 255, 0), "jpeg", 70, "image/jpeg")
    assert parse_options({"mode": "composite", "background": "blur"}, has_background_image=True).background == "image"
    with pytest.raises(RequestError, match="expected one of"):
        parse_options({"refine": "sharp"})


def test_client_output_names_collide_instead_of_overwriting(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.jpg").write_bytes(b"not sent")
    inputs = list(client.find_images([tmp_path / "a", tmp_path / "b"]))
    assert [p.parent.name for p in inputs] == ["a", "b"]

    class Refusing(client.Client):
        def process(self, image, **options):  # the second x.jpg must never be sent
            raise client.ClientError("HTTP 400: nope", 400)

    summary = client.replace_backgrounds(Refusing(), inputs, tmp_path / "out", log=lambda line: None)
    assert len(summary.failed) == 2
    assert "same output name" in summary.failed[0][1] or "same output name" in summary.failed[1][1]
    assert not list((tmp_path / "out").iterdir())


def test_client_without_server_explains(tmp_path: Path) -> None:
    c = client.Client(f"http://127.0.0.1:{free_port()}", key="k", key_file=None, timeout=5)
    with pytest.raises(client.ClientError, match="make serve"):
        c.process(b"abc")
    c = client.Client(key_file=tmp_path / "missing.json")
    with pytest.raises(client.ClientError, match="key file"):
        c.key()


def test_printed_hints_name_the_instance_they_belong_to(tmp_path: Path) -> None:
    """Hints printed for an instance outside ./serve carry its --workdir (`make stop` would stop another)."""
    def server(workdir: Path) -> serve.Server:
        return serve.Server(workdir, "http://127.0.0.1:18080", "http://127.0.0.1:18081", "http://127.0.0.1:18082",
                            "tiny", 1)

    other = server(tmp_path / "w")
    text = hints.describe(other) + hints.curl_example(other)
    assert f"handler.serve key --workdir {tmp_path / 'w'}" in text
    assert f"handler.serve rotate-key --workdir {tmp_path / 'w'}" in text
    assert hints.stop_hint(other.workdir).endswith(f"handler.serve stop --workdir {tmp_path / 'w'}")
    assert "-m handler.serve" in text and "`python -m" not in text  # the venv's python, not a bare one

    default = server(serve.DEFAULT_WORKDIR)
    assert "--workdir" not in hints.describe(default) + hints.curl_example(default)
    assert hints.stop_hint(default.workdir) == "make stop"
