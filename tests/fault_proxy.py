"""A fault-injecting HTTP/1.1 proxy for the network-fault tests.

:class:`FaultProxy` listens on 127.0.0.1 and forwards each request to an upstream server (the
moto S3 server), except those its schedule picks, which get one of the faults of :data:`KINDS`:

``reset``
    the client connection is closed with ``SO_LINGER`` 0, so the client sees a TCP reset
    instead of an answer.
``stall``
    no answer for ``stall_seconds`` (longer than the client's timeout), then the connection
    is closed.
``slowdown``
    an S3 ``503 SlowDown`` XML error, without asking the upstream server.
``truncate``
    the upstream response's headers (with its full ``Content-Length``) and half of its body,
    then the connection is closed.

Requests are framed (Content-Length or chunked), so faults hit single requests on kept-alive
connections, as they do behind a real load balancer. Each request is forwarded on a new
upstream connection: the proxy never mixes two clients' requests on one socket.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("reset", "stall", "slowdown", "truncate")

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>fault-proxy</RequestId></Error>"
)


class _Closed(Exception):
    """The peer closed the connection before a whole message arrived."""


@dataclass
class Rule:
    """Inject ``kind`` into matching requests.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    times
        How many faults to inject; None for every matching request, forever.
    every
        Inject into every ``every``-th matching request (1: each one); the others are
        forwarded, so a retry can get through.
    method
        Only requests with this method (``"GET"``, ``"PUT"``, ...); None for all.
    path_contains
        Only requests whose path contains this text; None for all.
    """

    kind: str
    times: int | None = 1
    every: int = 1
    method: str | None = None
    path_contains: str | None = None
    seen: int = field(default=0, init=False)
    injected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {KINDS}")

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.injected >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        return self.path_contains is None or self.path_contains in path


class _Request:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.method, self.path, _ = [*request_line.split(" ", 2), "", ""][:3]


class FaultProxy:
    """A threaded TCP proxy on 127.0.0.1 that injects faults into HTTP requests.

    Parameters
    ----------
    upstream
        The server to forward to, as ``http://host:port``.
    stall_seconds
        How long a ``stall`` holds a request before closing its connection (it also ends
        when the client gives up and closes, or when the proxy stops).

    Use it as a context manager, which stops it (and every connection) on exit; ``url`` is
    the endpoint to give clients, ``injected`` counts faults by kind and ``forwarded`` the
    requests that reached the upstream server.
    """

    def __init__(self, upstream: str, *, stall_seconds: float = 5.0) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self._upstream = (host, int(port or 80))
        self.stall_seconds = stall_seconds
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.requests = 0
        self.log: list[tuple[str, str, str]] = []  # (fault or "forward", method, path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._acceptor.start()

    # -- schedule ----------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        times: int | None = 1,
        every: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> Rule:
        """Add a rule (see :class:`Rule`); rules are tried in the order they were added."""
        rule = Rule(kind, times, every, method, path_contains)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forward everything from now on."""
        with self._lock:
            self._rules.clear()

    @property
    def total_injected(self) -> int:
        """Faults injected so far, of every kind."""
        with self._lock:
            return sum(self.injected.values())

    def summary(self) -> str:
        """One line: faults injected by kind and requests forwarded."""
        with self._lock:
            kinds = ", ".join(f"{kind} {self.injected[kind]}" for kind in KINDS)
            total = sum(self.injected.values())
            return (
                f"{total} faults injected ({kinds}); {self.forwarded} of {self.requests} "
                "requests forwarded"
            )

    def _pick(self, request: _Request) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self._rules:
                if not rule.matches(request.method, request.path):
                    continue
                rule.seen += 1
                if rule.seen % rule.every:
                    continue
                if rule.kind == "truncate" and request.method != "GET":
                    continue  # only answers with a body can be cut short
                rule.injected += 1
                return rule
            return None

    def _count(self, kind: str, request: _Request) -> None:
        with self._lock:
            if kind == "forward":
                self.forwarded += 1
            else:
                self.injected[kind] += 1
            self.log.append((kind, request.method, request.path))

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the threads."""
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._connections.add(client)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    # -- one client connection ---------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        reader = _Reader(client)
        try:
            while not self._stop.is_set():
                try:
                    head = reader.head()
                except _Closed:
                    return
                if _header(head, b"expect") == b"100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _drop_header(head, b"expect")
                request = _Request(head, reader.body(head, request=True))
                rule = self._pick(request)
                fault = rule.kind if rule is not None else None
                if fault == "reset":
                    self._count("reset", request)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fault == "stall":
                    self._count("stall", request)
                    self._hold(client)
                    return
                if fault == "slowdown":
                    self._count("slowdown", request)
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        b"Content-Length: %d\r\nx-amz-request-id: fault-proxy\r\n\r\n%s"
                        % (len(_SLOWDOWN_BODY), _SLOWDOWN_BODY)
                    )
                    continue
                response_head, response_body, keep_open = self._forward(request)
                if fault == "truncate" and len(response_body) >= 2:
                    self._count("truncate", request)
                    client.sendall(response_head + response_body[: len(response_body) // 2])
                    return
                if rule is not None and fault == "truncate":
                    with self._lock:  # nothing to cut: the rule gets another go
                        rule.injected -= 1
                self._count("forward", request)
                client.sendall(response_head + response_body)
                if not keep_open:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _hold(self, client: socket.socket) -> None:
        """Answer nothing until ``stall_seconds`` pass, the client hangs up or we stop."""
        deadline = threading.Event()
        timer = threading.Timer(self.stall_seconds, deadline.set)
        timer.start()
        try:
            while not (deadline.is_set() or self._stop.is_set()):
                readable, _, _ = select.select([client], [], [], 0.1)
                if readable and not client.recv(65536, socket.MSG_PEEK):
                    return
                if readable:
                    client.recv(65536)  # a pipelined request: drop it, it gets no answer
        finally:
            timer.cancel()

    def _forward(self, request: _Request) -> tuple[bytes, bytes, bool]:
        """Send ``request`` upstream on a new connection; the response's head and (raw)
        body, and whether the client connection may stay open."""
        with socket.create_connection(self._upstream, timeout=30) as upstream:
            upstream.sendall(request.head + request.body)
            reader = _Reader(upstream)
            head = reader.head()
            status = int(head.split(b" ", 2)[1])
            if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                body = b""
            else:
                body = reader.body(head, request=False)
        framed = (
            _header(head, b"content-length") is not None
            or _header(head, b"transfer-encoding") == b"chunked"
            or not body
        )
        keep_open = framed and _header(head, b"connection") != b"close"
        if not framed:
            # An answer ended by closing: give the client a length so it knows where it ends.
            head = head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
        return head, body, keep_open


class _Reader:
    """Buffered reads of HTTP/1.1 messages from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _more(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise _Closed
        self._buffer += data

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._more()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._more()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def head(self) -> bytes:
        """The request or status line and headers, up to and including the blank line."""
        while b"\r\n\r\n" not in self._buffer:
            self._more()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def body(self, head: bytes, *, request: bool) -> bytes:
        """The raw body after ``head`` (chunked bodies stay chunked)."""
        if _header(head, b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size_line = self._line()
                parts.append(size_line)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to the blank line
                        line = self._line()
                        parts.append(line)
                        if line == b"\r\n":
                            return b"".join(parts)
                parts.append(self._take(size + 2))
        length = _header(head, b"content-length")
        if length is not None:
            return self._take(int(length))
        if request:
            return b""
        with contextlib.suppress(_Closed):
            while True:
                self._more()
        data, self._buffer = self._buffer, b""
        return data


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().lower() if name != b"content-length" else value.strip()
    return None


def _drop_header(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [lines[0]] + [
        line for line in lines[1:] if line.partition(b":")[0].strip().lower() != name
    ]
    return b"\r\n".join(kept)


@contextlib.contextmanager
def fault_proxy(upstream: str, **options: Any) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` for the duration of a ``with`` block."""
    with FaultProxy(upstream, **options) as proxy:
        yield proxy
