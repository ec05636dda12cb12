"""What the local fake servers (tests/fakeai.py, tests/fakewp.py) have in common.

Each fake is an HTTP server on 127.0.0.1 run in a daemon thread, a handler class that answers
like the real service, and a live log of the requests it saw. This module holds the parts that
do not depend on the service: starting and stopping the server (also as a context manager and
as a foreground process), abandoning running requests on stop(), reading a request body, a
pause that notices the client leaving, and waiting on the log (``wait_for``, ``wait_idle``).

Standard library only.
"""

from __future__ import annotations

import contextlib
import http.server
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, Self, TypeVar

__all__ = ["DISCONNECT_ERRORS", "ClientGone", "Stopping", "FakeHTTPServer", "FakeHandler",
           "FakeServer"]

# Errors that mean "the client went away"; never worth a traceback.
DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Timed(Protocol):
    end: float | None  # time.monotonic() when answered; None while in flight


Record = TypeVar("Record", bound=_Timed)


class ClientGone(Exception):
    """The client closed the connection."""


class Stopping(Exception):
    """The server is shutting down; abandon the request."""


class FakeHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    # Disconnects are expected (cancelled streams, timeouts): no traceback for these.
    # Anything else is a bug in the fake, so do show it.
    quiet_errors: tuple[type[BaseException], ...] = DISCONNECT_ERRORS + (Stopping,
                                                                          socket.timeout)
    fake: FakeServer[Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], self.quiet_errors):
            return
        super().handle_error(request, client_address)


class FakeHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 so that streams can use chunked encoding: a stream that ends without the
    # terminating zero-length chunk is then an error on the client side (httpx raises
    # RemoteProtocolError), which is what a cut stream must look like. With "Connection:
    # close" and no length, an early close would look like a normal end of body.
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every response.
    disable_nagle_algorithm = True
    sys_version = ""
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: no per-request logging

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # httpx sends an upload of unknown length (a file upload from a stream, say)
            # chunked, without Content-Length.
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    @contextlib.contextmanager
    def _answering(self, record: Any) -> Iterator[None]:
        """Around the answer to a logged request: a client that left is noted, a stop() ends
        the answer quietly, and either way the request stops counting as in flight."""
        fake = self.server.fake
        try:
            yield
        except ClientGone:
            fake._mark_disconnected(record)
            self.close_connection = True
        except Stopping:
            self.close_connection = True
        finally:
            fake._end(record)

    def _pause_until(self, deadline: float) -> None:
        """Send nothing until ``deadline``, noticing a client disconnect or a stop().

        While waiting we watch the socket: the request has been read in full, so it only
        becomes readable when the client closes it (recv returns b""). That lets a cancelled
        request be seen as disconnected promptly instead of at the next write.
        """
        stopping = self.server.fake._stopping
        sock = self.connection
        watch = True
        while True:
            if stopping.is_set():
                raise Stopping()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(remaining, 0.05)  # also bounds how late we see stop()
            if not watch:
                stopping.wait(step)
                continue
            try:
                readable, _, _ = select.select([sock], [], [], step)
                gone = bool(readable) and not sock.recv(1, socket.MSG_PEEK)
            except (OSError, ValueError):  # reset by peer, or socket already closed
                gone = True
            if gone:
                raise ClientGone()
            if readable:
                # The client sent more bytes (pipelining); select would keep firing, so
                # fall back to plain sleeping for this request.
                watch = False


class FakeServer(Generic[Record]):
    """A fake's server thread and request log. A subclass names its ``_server_class`` and
    ``_handler_class``, passes its lock, and calls ``_log`` (under the lock) when a request
    arrives and ``_end`` when it is answered; ``in_flight`` and ``wait_idle`` count on that."""

    _server_class: type[FakeHTTPServer] = FakeHTTPServer
    _handler_class: type[FakeHandler]

    def __init__(self, host: str, port: int, lock: threading.Lock | threading.RLock) -> None:
        self._host = host
        self._port = port
        self._lock = lock
        # Notified on every state change so wait_for() wakes promptly.
        self._changed = threading.Condition(lock)
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._requests: list[Record] = []
        self._in_flight = 0
        self._max_concurrent = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = self._server_class((self._host, self._port), self._handler_class)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{server.server_address[1]}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving. Requests still running (hangs, slow answers, held ones) are abandoned
        within ~50 ms and their connections closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._on_stop()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _on_stop(self) -> None:
        """Let go of what running requests wait on besides the stopping event."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._server.server_address[1]

    def serve_until_interrupted(self) -> None:
        """Serve in the foreground (``python -m tests.<fake>``): print ``_banner()`` (its first
        line is the address a parent process reads), then run until SIGTERM or Ctrl-C."""
        # Turn SIGTERM (what a benchmark's Popen.terminate() sends) into a clean stop.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        self.start()
        for line in self._banner():
            print(line, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _banner(self) -> Iterable[str]:
        raise NotImplementedError

    # -- the request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[Record]:
        """Snapshot of the log, oldest first. Records are live: an in-flight request's record
        gets its answer (end, status, ...) filled in later."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_concurrent(self) -> int:
        with self._lock:
            return self._max_concurrent

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, message: str | None = None
    ) -> Any:
        """Wait until ``predicate()`` is truthy and return its value; raise TimeoutError after
        ``timeout`` seconds. Wakes on every request event, and re-checks at least every 20 ms
        for outside conditions."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()  # called without the lock: it may use our properties
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(message or f"condition not met within {timeout}s")
            with self._changed:
                self._changed.wait(min(remaining, 0.02))

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no logged request is in flight."""
        self.wait_for(lambda: self.in_flight == 0, timeout, "requests still in flight")

    def _clear_log(self) -> None:
        # Caller holds the lock (or is in __init__). Requests still running keep counting.
        self._requests = []
        self._max_concurrent = self._in_flight

    def _log(self, record: Record) -> None:
        # Caller holds the lock, and notifies once the record is complete.
        self._requests.append(record)
        self._in_flight += 1
        self._max_concurrent = max(self._max_concurrent, self._in_flight)

    def _mark_disconnected(self, record: Record) -> None:
        raise NotImplementedError

    def _end(self, record: Record) -> None:
        with self._lock:
            record.end = time.monotonic()
            self._in_flight -= 1
            self._changed.notify_all()
