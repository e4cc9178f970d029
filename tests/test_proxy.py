"""Tests for the fault-injection TCP proxy the connection-loss tests run through."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _proxy import FaultProxy

_TICK = 0.05


class _EchoServer:
    """A tiny threaded echo server on 127.0.0.1 that closes every socket it made on stop()."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(_TICK)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(_TICK)
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
                except TimeoutError:
                    continue
                except OSError:
                    return

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(target_port=echo.port) as p:
        yield p


@pytest.fixture
def connect(proxy: FaultProxy) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def _connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        opened.append(sock)
        return sock

    try:
        yield _connect
    finally:
        for sock in opened:
            sock.close()


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_forwards_both_ways(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    """Verify that bytes pass through the proxy both ways and connections are counted."""
    a, b = connect(), connect()
    assert _roundtrip(a, b"hello") == b"hello"
    big = bytes(range(256)) * 8192  # 2 MiB: exercises partial sends and back-pressure
    assert _roundtrip(b, big) == big
    assert _wait_for(lambda: proxy.connections == 2)
    a.close()
    assert _wait_for(lambda: proxy.connections == 1)


def test_cut_closes_and_refuses(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    """Verify that cut() gives open clients EOF and refuses new connections."""
    sock = connect()
    assert _roundtrip(sock, b"ping") == b"ping"
    proxy.cut()
    assert sock.recv(1) == b""
    assert proxy.connections == 0
    with pytest.raises(ConnectionRefusedError):
        connect()


def test_restore_after_cut_reuses_port(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    """Verify that restore() after cut() accepts again on the same port."""
    port = proxy.port
    assert _roundtrip(connect(), b"before") == b"before"
    proxy.cut()
    proxy.restore()
    assert proxy.port == port
    assert _roundtrip(connect(), b"after") == b"after"


def test_reset_sends_rst(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    """Verify that reset() gives open clients ConnectionResetError and keeps accepting."""
    reader, writer = connect(), connect()
    assert _roundtrip(reader, b"r") == b"r"
    assert _roundtrip(writer, b"w") == b"w"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        reader.recv(1)
    with pytest.raises(ConnectionResetError):
        writer.send(b"x")
    assert _roundtrip(connect(), b"again") == b"again"


def test_blackhole_drops_bytes(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    """Verify that blackhole() makes clients time out and drops bytes instead of delaying them."""
    sock = connect()
    assert _roundtrip(sock, b"ping") == b"ping"
    proxy.blackhole()
    sock.sendall(b"lost")
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    late = connect()  # accepted, but nothing gets through
    late.settimeout(0.2)
    late.sendall(b"hello?")
    with pytest.raises(TimeoutError):
        late.recv(1)
    proxy.restore()
    sock.settimeout(2)
    assert _roundtrip(sock, b"back") == b"back"  # "lost" never arrives
    late.settimeout(2)
    assert late.recv(1) == b""  # never reached the server, so restore() closes it
    assert _roundtrip(connect(), b"new") == b"new"


def test_close_is_idempotent(echo: _EchoServer) -> None:
    """Verify that close() works while black-holed or cut, twice, and before start()."""
    FaultProxy(target_port=echo.port).close()
    for fault in ("blackhole", "cut"):
        proxy = FaultProxy(target_port=echo.port).start()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
            assert _roundtrip(sock, b"x") == b"x"
            getattr(proxy, fault)()
            proxy.close()
            proxy.close()
            assert sock.recv(1) == b""
        assert proxy.connections == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        with pytest.raises(RuntimeError):
            proxy.restore()


def test_url_points_at_proxy(proxy: FaultProxy) -> None:
    """Verify that url() swaps host and port and keeps user, password, database and query."""
    url = "postgresql://alice:s3cret@db.example:6543/tracks?sslmode=disable&host=/tmp&port=1&options=-c%20a%3Db+c"
    assert proxy.url(url) == (
        f"postgresql://alice:s3cret@127.0.0.1:{proxy.port}/tracks?sslmode=disable&options=-c%20a%3Db+c"
    )
    assert proxy.url("postgresql:///tracks") == f"postgresql://127.0.0.1:{proxy.port}/tracks"


def test_rejects_remote_targets() -> None:
    """Verify that the proxy refuses to forward anywhere but 127.0.0.1."""
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        FaultProxy(target_host="10.0.0.1")
