"""Misbehaving TCP servers on 127.0.0.1 for the client-side timeout and disconnect tests.

A real TorchServe only misbehaves this way by accident (a stuck worker, a stop mid-request, a
proxy in between), so these give the failures on demand, at the socket level, with no HTTP
library in between that could tidy them up:

- ``silent``: accepts and reads the whole request, never answers (a stuck server);
- ``deaf``: completes the TCP handshake (kernel backlog) but never reads, so a large upload
  blocks in ``send`` once the socket buffers are full;
- ``trickle``: answers the status line, then one header byte every 0.2 s forever, so every
  single read returns well within any per-read timeout (urllib's and requests' timeouts are
  per socket operation, not per request);
- ``close``: reads the request head, then closes the connection (what a stopping server does);
- ``reset``: the same with an RST (SO_LINGER 0), as TorchServe's ``--stop`` was seen to do;
- ``ok``: a well-behaved keep-alive server answering every request with ``answer`` (default: 200 and
  an 8-byte PNG signature), e.g. TorchServe's JSON for a worker that died.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

BEHAVIOURS = ("silent", "deaf", "trickle", "close", "reset", "ok")
OK_BODY = b"\x89PNG\r\n\x1a\n"


class RawServer:
    """``with RawServer("silent") as srv: ... srv.url``; every connection is closed on exit."""

    def __init__(self, behaviour: str, answer: tuple[int, str, bytes] = (200, "image/png", OK_BODY)) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(behaviour)
        self.behaviour = behaviour
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)  # the accept loop polls ``stopping``
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, name=f"raw-{behaviour}", daemon=True)

    def __enter__(self) -> RawServer:
        if self.behaviour != "deaf":  # deaf: the kernel's backlog accepts; we never do
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for conn in [*self.connections, self.sock]:
            try:
                conn.close()
            except OSError:
                pass
        if self.thread.is_alive():
            self.thread.join(5)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_head(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data and not self.stopping.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        try:
            if self.behaviour in ("close", "reset"):
                self._read_head(conn)
                if self.behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if self.behaviour == "ok":
                self._answer_ok(conn)
                return
            if self.behaviour == "trickle":
                self._read_head(conn)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: ")
            while not self.stopping.is_set():
                try:
                    if self.behaviour == "trickle":
                        conn.sendall(b"a")
                        time.sleep(0.2)
                    elif not conn.recv(1 << 20):  # silent: read everything, answer nothing
                        return
                except TimeoutError:
                    continue
        except OSError:
            return

    def _answer_ok(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        while not self.stopping.is_set():
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(data) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            data = data[length:]
            status, ctype, body = self.answer
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
