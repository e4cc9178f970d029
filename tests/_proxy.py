"""A fault-injection TCP proxy on 127.0.0.1 that lets tests cut, reset or black-hole a server path."""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

_LOCALHOST = "127.0.0.1"
_CHUNK = 65536
_HIGH_WATER = 1 << 20  # stop reading a side while this much is still queued for the other side
_CONNECT_TIMEOUT = 2.0
_CALL_TIMEOUT = 10.0
_JOIN_TIMEOUT = 10.0
# Query parameters that would send libpq/psycopg past the proxy.
_ROUTING_PARAMS = frozenset({"host", "hostaddr", "port"})


class _Mode(enum.Enum):
    FORWARD = "forward"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Pair:
    """One proxied connection: the accepted client socket and, once connected, the upstream one."""

    __slots__ = ("client", "closed", "to_client", "to_upstream", "upstream")

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.closed = False

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]


class _Wake:
    """Selector marker for the wake-up socket."""


class _Listen:
    """Selector marker for the listening socket."""


_WAKE = _Wake()
_LISTEN = _Listen()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that can cut, reset, black-hole and restore the path to a server."""

    def __init__(self, target_host: str = _LOCALHOST, target_port: int = 5432) -> None:
        if target_host not in (_LOCALHOST, "localhost"):
            raise ValueError(f"FaultProxy only forwards to 127.0.0.1, not {target_host!r}")
        self.target_host = _LOCALHOST
        self.target_port = target_port
        self.port = 0
        self._mode = _Mode.FORWARD
        self._pairs: dict[int, _Pair] = {}
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[[], None], threading.Event, list[BaseException]]] = []
        self._stopping = False
        self._closed = False

    # -- public API -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind an ephemeral port on 127.0.0.1 and start forwarding; returns self."""
        if self._closed:
            raise RuntimeError("FaultProxy is closed")
        if self._thread is not None:
            return self
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._open_listener()
        self._thread = threading.Thread(
            target=self._run, name=f"FaultProxy:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def url(self, url: str) -> str:
        """Rewrite a postgresql:// URL to go through the proxy, keeping user, password, db and query."""
        if not self.port:
            raise RuntimeError("FaultProxy is not started")
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{_LOCALHOST}:{self.port}"
        # The query is kept byte for byte (libpq reads "+" literally), less any routing keys.
        query = "&".join(
            part
            for part in parts.query.split("&")
            if part and unquote(part.partition("=")[0]) not in _ROUTING_PARAMS
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def cut(self) -> None:
        """Close every connection cleanly (FIN both ways) and refuse new ones until restore()."""
        self._call(self._do_cut)

    def reset(self) -> None:
        """Close every connection with RST on both sides; new connections are still accepted."""
        self._call(self._do_reset)

    def blackhole(self) -> None:
        """Keep every socket open but drop all bytes both ways; new connections hang the same way."""
        self._call(self._do_blackhole)

    def restore(self) -> None:
        """Go back to normal forwarding on the same port."""
        self._call(self._do_restore)

    def close(self) -> None:
        """Stop the proxy: close every socket and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        thread = self._thread
        if thread is not None:
            self._wake()
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():  # pragma: no cover - the loop never blocks that long
                raise RuntimeError("FaultProxy thread did not stop")
        # The thread has gone (or never ran): whatever is left is ours to close.
        self._close_all_pairs(rst=False)
        self._close_listener()
        if self._selector is not None:
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        with self._lock:
            calls, self._calls = self._calls, []
        for _, done, errors in calls:
            errors.append(RuntimeError("FaultProxy is closed"))
            done.set()

    @property
    def connections(self) -> int:
        """Number of currently open client connections."""
        return len(self._pairs)

    # -- calls into the loop thread ---------------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()
        errors: list[BaseException] = []
        with self._lock:
            if self._closed or self._thread is None:
                raise RuntimeError("FaultProxy is not running")
            self._calls.append((fn, done, errors))
        self._wake()
        if not done.wait(_CALL_TIMEOUT):
            raise RuntimeError("FaultProxy thread did not answer")
        if errors:
            raise errors[0]

    def _wake(self) -> None:
        if self._wake_w is None:
            return
        # A full buffer means a wake-up is already pending; an error, that the proxy is closing.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run_calls(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, done, errors in calls:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        while not self._stopping:
            for key, mask in selector.select():
                if self._stopping:
                    break
                data: object = key.data
                if data is _WAKE:
                    self._run_calls()
                elif data is _LISTEN:
                    if key.fileobj is self._listener:
                        self._accept()
                elif isinstance(data, tuple):
                    pair, is_client = data
                    assert isinstance(pair, _Pair)
                    if not pair.closed:
                        self._service(pair, bool(is_client), mask)
        self._close_all_pairs(rst=False)
        self._close_listener()

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None and self._selector is not None
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        client.setblocking(False)
        pair = _Pair(client)
        if self._mode is _Mode.FORWARD and not self._connect_upstream(pair):
            self._close_pair(pair, rst=False)
            return
        self._pairs[id(pair)] = pair
        self._selector.register(client, selectors.EVENT_READ, (pair, True))
        if pair.upstream is not None:
            self._selector.register(pair.upstream, selectors.EVENT_READ, (pair, False))

    def _connect_upstream(self, pair: _Pair) -> bool:
        try:
            upstream = socket.create_connection(
                (self.target_host, self.target_port), timeout=_CONNECT_TIMEOUT
            )
        except OSError:
            return False
        upstream.setblocking(False)
        pair.upstream = upstream
        return True

    def _service(self, pair: _Pair, is_client: bool, mask: int) -> None:
        sock = pair.client if is_client else pair.upstream
        if sock is None:
            return
        if mask & selectors.EVENT_WRITE and not self._flush(pair, to_client=is_client):
            return
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_pair(pair, rst=False)
                return
            if not data:
                self._on_eof(pair, is_client)
                return
            if self._mode is not _Mode.FORWARD:
                return  # black-holed: the bytes are dropped, never delivered later
            (pair.to_upstream if is_client else pair.to_client).extend(data)
            if not self._flush(pair, to_client=not is_client):
                return
        self._update_interest(pair)

    def _on_eof(self, pair: _Pair, is_client: bool) -> None:
        if self._mode is _Mode.BLACKHOLE:
            if is_client or pair.upstream is None:
                self._close_pair(pair, rst=False)
            else:
                # A black hole passes no FIN either: drop the upstream, leave the client hanging.
                self._discard_upstream(pair)
            return
        # Forward what is still queued for the other side (best effort), then close both.
        self._flush(pair, to_client=not is_client)
        self._close_pair(pair, rst=False)

    def _flush(self, pair: _Pair, *, to_client: bool) -> bool:
        """Send what is queued towards one side; False when the pair had to be closed."""
        sock = pair.client if to_client else pair.upstream
        buf = pair.to_client if to_client else pair.to_upstream
        if sock is None or pair.closed:
            return not pair.closed
        while buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_pair(pair, rst=False)
                return False
            del buf[:sent]
        return True

    def _update_interest(self, pair: _Pair) -> None:
        if pair.closed or self._selector is None:
            return
        dropping = self._mode is not _Mode.FORWARD
        for sock, is_client in ((pair.client, True), (pair.upstream, False)):
            if sock is None:
                continue
            outgoing = pair.to_client if is_client else pair.to_upstream
            incoming = pair.to_upstream if is_client else pair.to_client
            events = 0
            if dropping or len(incoming) < _HIGH_WATER:  # back-pressure: pause while full
                events |= selectors.EVENT_READ
            if outgoing:
                events |= selectors.EVENT_WRITE
            self._watch(sock, events, (pair, is_client))

    def _watch(self, sock: socket.socket, events: int, data: tuple[_Pair, bool]) -> None:
        """Set the events to wait for on one pair socket; none at all unregisters it."""
        assert self._selector is not None
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, data)
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, data)

    # -- faults (run on the loop thread) ----------------------------------------------------

    def _do_cut(self) -> None:
        self._mode = _Mode.CUT
        self._close_listener()
        self._close_all_pairs(rst=False)

    def _do_reset(self) -> None:
        if self._mode is _Mode.CUT:
            self._open_listener()
        self._mode = _Mode.FORWARD
        self._close_all_pairs(rst=True)

    def _do_blackhole(self) -> None:
        if self._mode is _Mode.CUT:
            self._open_listener()
        self._mode = _Mode.BLACKHOLE
        for pair in list(self._pairs.values()):
            pair.to_client.clear()
            pair.to_upstream.clear()
            self._update_interest(pair)

    def _do_restore(self) -> None:
        previous, self._mode = self._mode, _Mode.FORWARD
        if previous is _Mode.CUT:
            self._open_listener()
        elif previous is _Mode.BLACKHOLE:
            for pair in list(self._pairs.values()):
                # Connections accepted while black-holed never reached the server, and those whose
                # server went away cannot resume: close both kinds rather than splice mid-stream.
                if pair.upstream is None:
                    self._close_pair(pair, rst=False)
                else:
                    self._update_interest(pair)

    # -- sockets ----------------------------------------------------------------------------

    def _open_listener(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((_LOCALHOST, self.port))
            listener.listen(128)
            listener.setblocking(False)
            if self._selector is not None:
                self._selector.register(listener, selectors.EVENT_READ, _LISTEN)
        except BaseException:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._unregister(listener)
        listener.close()

    def _unregister(self, sock: socket.socket) -> None:
        if self._selector is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _discard_upstream(self, pair: _Pair) -> None:
        upstream, pair.upstream = pair.upstream, None
        pair.to_upstream.clear()
        if upstream is not None:
            self._unregister(upstream)
            _close_socket(upstream, rst=False)

    def _close_pair(self, pair: _Pair, *, rst: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.pop(id(pair), None)
        for sock in pair.sockets():
            self._unregister(sock)
            _close_socket(sock, rst=rst)
        pair.to_client.clear()
        pair.to_upstream.clear()

    def _close_all_pairs(self, *, rst: bool) -> None:
        for pair in list(self._pairs.values()):
            self._close_pair(pair, rst=rst)


def _close_socket(sock: socket.socket, *, rst: bool) -> None:
    """Close with RST (SO_LINGER 0), or cleanly with a FIN after draining unread bytes."""
    try:
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            # Linux answers close() with RST while unread bytes sit in the receive queue.
            sock.setblocking(False)
            try:
                while sock.recv(_CHUNK):
                    pass
            except OSError:
                pass
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
