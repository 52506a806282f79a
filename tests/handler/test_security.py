"""Security properties, checked on a real TorchServe wherever one can be started:

- token authorization is on, in the repository's config.properties and in what ``handler.serve`` writes;
- requests without a key, with a wrong key, with the other API's key and with an expired key are refused;
- nothing the server runs listens beyond loopback (read from /proc, not from the config);
- keys and ``Authorization`` headers never reach a log or any file of the instance but the key file;
- no pickled code runs: checkpoints load with ``weights_only=True`` (a malicious one raises and its
  payload never runs), and a pickle sent as a photo or background is just a bad image.

The in-process counterpart of the log check (the handler's Python logging) is
test_handler.py::test_authorization_header_is_never_logged.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import pickle
import stat
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import torch

from handler import serve
from handler.person_handler import PersonSegmenterHandler
from handler.serve import group, properties
from segmenter import checkpoint
from tests.conftest import skip_without_torchserve
from tests.handler import images
from tests.handler.fakes import worker_context
from tests.handler.served import as_image, post
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
PNG = images.encode(images.subject_photo())
INVALID_KEY = "InvalidKeyException"
# Long enough to find in a log, unique per run so an old log line cannot match.
WRONG_KEY = f"wrong-key-{uuid.uuid4().hex[:12]}"


def _refused(r: requests.Response) -> bool:
    return r.status_code in (400, 401) and INVALID_KEY in r.text


# --- token authorization ----------------------------------------------------------------------------

def _assert_safe_properties(props: dict[str, str]) -> None:
    for kind in ("inference", "management", "metrics"):
        assert props[f"{kind}_address"].startswith("http://127.0.0.1:"), props[f"{kind}_address"]
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "false"


def test_token_auth_is_on_in_the_repository_config() -> None:
    _assert_safe_properties(serve.read_properties(REPO / "config.properties"))


@pytest.mark.serve
def test_token_auth_is_on_in_what_serve_writes(torchserve_server) -> None:
    """The instance's config (the repository's with ports and paths replaced) and its key file."""
    _assert_safe_properties(serve.read_properties(torchserve_server.workdir / "config.properties"))
    keys = serve.read_keys(torchserve_server.key_file)
    assert set(keys) == {"inference", "management", "API"}
    assert all(keys[kind]["expiration time"] for kind in ("inference", "management"))
    assert stat.S_IMODE(torchserve_server.key_file.stat().st_mode) == 0o600  # only its owner can read it


@pytest.mark.serve
@pytest.mark.parametrize("auth", ["none", "wrong", "management key", "API key", "no Bearer"])
def test_inference_needs_the_inference_key(torchserve_server, auth: str) -> None:
    header = {"none": None, "wrong": f"Bearer {WRONG_KEY}",
              "management key": f"Bearer {torchserve_server.management_key}",
              "API key": f"Bearer {torchserve_server.api_key}",
              "no Bearer": torchserve_server.inference_key}[auth]
    headers = {"Content-Type": "image/png", **({"Authorization": header} if header else {})}
    r = requests.post(torchserve_server.predictions_url, data=PNG, headers=headers, timeout=30)
    assert _refused(r), (r.status_code, r.text[:200])
    assert WRONG_KEY not in r.text
    r = requests.get(f"{torchserve_server.inference_url}/ping", headers=headers, timeout=30)
    assert _refused(r), (r.status_code, r.text[:200])


@pytest.mark.serve
@pytest.mark.parametrize("auth", ["none", "inference key"])
def test_management_needs_the_management_key(torchserve_server, auth: str) -> None:
    headers = {"Authorization": f"Bearer {torchserve_server.inference_key}"} if auth == "inference key" else {}
    r = requests.get(f"{torchserve_server.management_url}/models", timeout=30, headers=headers)
    assert _refused(r), (r.status_code, r.text[:200])


def _expiry(key_file: Path, kind: str) -> datetime:
    text = serve.read_keys(key_file)[kind]["expiration time"]  # e.g. 2026-11-25T15:09:07.105522842Z
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00")


@pytest.mark.serve
def test_expired_keys_are_refused_and_rotation_renews(tmp_path: Path, served_model_store: Path) -> None:
    """A server of its own whose keys live 12 s: TorchServe reads ``token_expiration_min`` as a
    fraction of minutes (0.2) and records the exact expiry in the key file. The same key works
    before it and is refused after it; a rotation (the API key never expires) gives a working key.
    No model is loaded: the key check comes first (a valid key for an absent model is 404, not 400).
    """
    skip_without_torchserve()
    ports = free_ports(serve.DEFAULT_PORTS)
    started = datetime.now(timezone.utc)
    server = serve.start_server(tmp_path / "ts", served_model_store, models={}, ports=ports,
                                overrides={"token_expiration_min": "0.2"}, ready_timeout=60)
    try:
        expires = {kind: _expiry(server.key_file, kind) for kind in ("inference", "management")}
        written = datetime.fromtimestamp(server.key_file.stat().st_mtime, timezone.utc)  # keys made just before
        for when in expires.values():
            assert when > started and abs((when - written).total_seconds() - 12) < 1.5, (started, written, when)
        key, mkey = server.inference_key, server.management_key
        auth = {"Authorization": f"Bearer {key}"}
        ping = f"{server.inference_url}/ping"
        assert requests.get(ping, headers=auth, timeout=10).status_code == 200, "key refused before expiry"
        r = requests.post(server.predictions_url, data=PNG, headers={**auth, "Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 404 and "ModelNotFoundException" in r.text, r.text[:200]

        wait = (max(expires.values()) - datetime.now(timezone.utc)).total_seconds() + 1.0
        time.sleep(max(0.0, wait))
        assert _refused(requests.get(ping, headers=auth, timeout=10))
        assert _refused(requests.post(server.predictions_url, data=PNG, timeout=10,
                                      headers={**auth, "Content-Type": "image/png"}))
        assert _refused(requests.get(f"{server.management_url}/models", timeout=10,
                                     headers={"Authorization": f"Bearer {mkey}"}))

        new = serve.rotate_key(server)
        assert new != key and _expiry(server.key_file, "inference") > datetime.now(timezone.utc)
        assert requests.get(ping, headers=server.auth(), timeout=10).status_code == 200
        _assert_no_secret_in_files(server, [key, mkey, new, server.api_key])
    finally:
        server.stop()


# --- network exposure ---------------------------------------------------------------------------------

def _socket_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/{tcp,udp}[6] writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv4Address(words) if len(raw) == 4 else ipaddress.IPv6Address(words)


def _is_loopback(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def _bound_sockets(inodes: set[int]) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(table, address, port) of every listening TCP socket and every bound UDP socket among ``inodes``."""
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if inode not in inodes or (table.startswith("tcp") and state != "0A"):  # 0A = LISTEN
                continue
            host, port = local.split(":")
            found.append((table, _address(host), int(port, 16)))
    return found


@pytest.mark.serve
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_nothing_listens_beyond_loopback(torchserve_server) -> None:
    """Every socket the server's processes (frontend and workers) listen on is on loopback, and they
    are exactly the five configured ports: nothing unexpected (a debug or JMX port) is open."""
    pids = [p.pid for p in group.members(torchserve_server.pid)]
    assert len(pids) >= 2, "expected the frontend and at least one worker"
    sockets = _bound_sockets(_socket_inodes(pids))
    exposed = [(t, str(a), p) for t, a, p in sockets if not _is_loopback(a)]
    assert not exposed, f"listening beyond loopback: {exposed}"
    props = serve.read_properties(torchserve_server.workdir / "config.properties")
    configured = {properties.port_of(props[f"{k}_address"]) for k in ("inference", "management", "metrics")}
    configured |= {int(props["grpc_inference_port"]), int(props["grpc_management_port"])}
    assert {p for t, _, p in sockets if t.startswith("tcp")} == configured


# --- secrets in logs ----------------------------------------------------------------------------------

def _is_shipped_source(path: Path) -> bool:
    """A module of this repository unpacked from the archive, unchanged: its text may say "Bearer "
    (handler/contract.py builds the header a client sends) without anything having leaked."""
    source = REPO / path.parent.name / path.name
    return path.suffix == ".py" and source.is_file() and source.read_bytes() == path.read_bytes()


def _assert_no_secret_in_files(server: serve.Server, secrets: list[str]) -> None:
    """No file of the instance but the key file holds a secret; that covers every log (logs/ with
    console.log, the server's stdout and stderr), the written config and the unpacked archives."""
    needles = [s.encode() for s in secrets] + [b"Bearer "]
    for path in server.workdir.rglob("*"):
        if path == server.key_file or not path.is_file() or _is_shipped_source(path):
            continue
        data = path.read_bytes()
        leaked = [n.decode() for n in needles if n in data]
        assert not leaked, f"{path} contains {leaked}"


@pytest.mark.serve
def test_keys_and_authorization_headers_never_reach_a_log(torchserve_server) -> None:
    """Send the right keys and a wrong one to every endpoint kind, wait until the access log shows
    these requests (so the logs are flushed), then search every file of the instance."""
    s = torchserve_server
    probe = uuid.uuid4().hex
    url = f"{s.predictions_url}?probe={probe}"  # the query reaches the access log, not the handler
    for key in (s.inference_key, WRONG_KEY):
        for body in (PNG, b"not an image"):
            requests.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                   "Content-Type": "image/png"}, timeout=60)
        requests.get(f"{s.inference_url}/ping", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    for key in (s.management_key, WRONG_KEY):
        requests.get(f"{s.management_url}/models/{s.model_name}", headers={"Authorization": f"Bearer {key}"},
                     timeout=30)
    assert as_image(post(s, PNG)).mode == "L"
    access_log = s.log_dir / "access_log.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and probe.encode() not in access_log.read_bytes():
        time.sleep(0.5)
    assert access_log.read_bytes().count(probe.encode()) >= 4, "the access log never showed the requests"
    _assert_no_secret_in_files(s, [s.inference_key, s.management_key, s.api_key, WRONG_KEY])


# --- pickles --------------------------------------------------------------------------------------------

class _RunsShell:
    """Unpickling this runs ``touch <marker>`` through os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _RunsPython:
    """Unpickling this writes ``marker`` through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _malicious_checkpoints(folder: Path) -> list[tuple[Path, Path]]:
    """(checkpoint, marker) pairs: a shell and a Python payload in torch's zip format, and a shell
    payload in torch's legacy (pre-1.6, non-zip) format, which torch.load reads by another path.
    Each payload sits inside an otherwise well-formed checkpoint dict."""
    out = []
    for i, (payload, zipped) in enumerate([(_RunsShell, True), (_RunsPython, True), (_RunsShell, False)]):
        marker = folder / f"pwned-{i}"
        path = folder / f"evil-{i}.pt"
        obj = {"model": {"weight": torch.zeros(1)}, "config": {"base_filters": 4}, "extra": payload(marker)}
        torch.save(obj, path, _use_new_zipfile_serialization=zipped)
        out.append((path, marker))
    return out


def test_malicious_checkpoint_raises_and_its_payload_never_runs(tmp_path: Path) -> None:
    for path, marker in _malicious_checkpoints(tmp_path):
        with pytest.raises(ValueError, match=r"not a readable checkpoint \(weights-only load refused"):
            checkpoint.load(path)
        with pytest.raises(ValueError, match=r"not a readable checkpoint \(weights-only load refused"):
            checkpoint.load_model(path)
        model_dir = tmp_path / f"archive-{path.stem}"
        model_dir.mkdir()
        (model_dir / "weights.pt").write_bytes(path.read_bytes())
        with pytest.raises(ValueError):
            PersonSegmenterHandler().initialize(worker_context(model_dir))  # what a worker does with an archive
        assert not marker.exists(), f"{path.name}: the payload ran"
    # The payloads are live: loading them the unsafe way runs them (so the absence above means something).
    control = tmp_path / "control"
    control.mkdir()
    for path, marker in _malicious_checkpoints(control):
        torch.load(path, weights_only=False)
        assert marker.exists(), f"{path.name}: the control payload did not run"


def test_every_torch_load_in_the_code_uses_weights_only() -> None:
    """The one way to unpickle in this code base is ``torch.load(..., weights_only=True)``: no other
    ``torch.load``, no pickle/dill/joblib import, no ``np.load(allow_pickle=True)``."""
    problems = []
    for folder in ("segmenter", "handler", "training", "benchmarks", "gimp_plugin"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                    if any(n and n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle", "_pickle")
                           for n in names):
                        problems.append(f"{where}: imports a pickle module")
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                kwargs = {k.arg: k.value for k in node.keywords}
                if owner == "torch" and node.func.attr == "load":
                    flag = kwargs.get("weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                if owner in ("np", "numpy") and node.func.attr == "load":
                    flag = kwargs.get("allow_pickle")
                    if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                        problems.append(f"{where}: np.load with allow_pickle")
    assert not problems, "\n".join(problems)


@pytest.mark.serve
def test_a_pickle_sent_as_a_photo_is_never_unpickled(torchserve_server, tmp_path: Path) -> None:
    """The server runs on this machine, so a payload that ran would leave its marker here."""
    marker = tmp_path / "pwned-by-request"
    payloads = [pickle.dumps(_RunsShell(marker)), _malicious_checkpoints(tmp_path)[0][0].read_bytes()]
    for payload in payloads:
        r = post(torchserve_server, payload)
        assert r.status_code == 400 and "not an image" in r.json()["error"], r.text[:200]
        r = post(torchserve_server, files={"image": ("p.png", PNG, "image/png"), "background": ("b.pt", payload)},
                 fields={"mode": "composite"})
        assert r.status_code == 400 and "background image" in r.json()["error"], r.text[:200]
    time.sleep(0.5)
    assert not marker.exists() and not list(tmp_path.glob("pwned-*"))
