"""Connections to an address that netguard.check_url() has checked, within one deadline.

The connection goes to exactly the checked address (no second lookup that DNS could answer
differently), keeps the name for the Host header, SNI and the certificate check, and gives
every send and read only the time left before one overall deadline, so a peer that trickles
a byte a second cannot hold a worker for ever.

Pure Python and the standard library only: no Flask, so any layer may use it.
"""
from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from typing import Optional

from .netguard import Target


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (time.monotonic()); TimeoutError when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Reads of the socket, each allowed only the time left (not a fresh timeout per read,
    which a peer sending one byte a second would renew for ever)."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(remaining(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client sees as its socket: sends and the response reader keep to the
    deadline; everything else goes to the real socket."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def sendall(self, data) -> None:
        # Since Python 3.5 a socket timeout bounds the whole sendall().
        self._sock.settimeout(remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _connect(target: Target, deadline: float) -> socket.socket:
    """A TCP connection to one of the checked addresses, tried in order; each try gets an
    equal share of the time left, so one address that never answers (an IPv6 address on
    an IPv4-only network) does not use up the deadline."""
    ips = target.ips or (target.ip,)
    error: OSError = OSError(f"no address to connect to for {target.host}")
    for i, ip in enumerate(ips):
        share = remaining(deadline) / (len(ips) - i)
        try:
            sock = socket.create_connection((ip, target.port), timeout=share)
        except OSError as exc:
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the checked address; the Host header still names the host."""

    def __init__(self, target: Target, deadline: float):
        super().__init__(target.host, target.port, timeout=remaining(deadline))
        self.target, self.deadline = target, deadline

    def connect(self) -> None:
        self.sock = _DeadlineSocket(_connect(self.target, self.deadline), self.deadline)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked address; SNI and the certificate check use the host name."""

    def __init__(self, target: Target, deadline: float,
                 context: Optional[ssl.SSLContext] = None):
        super().__init__(target.host, target.port, timeout=remaining(deadline),
                         context=context or ssl.create_default_context())
        self.target, self.deadline = target, deadline

    def connect(self) -> None:
        raw = _connect(self.target, self.deadline)
        try:
            # The handshake as a whole is bounded by this timeout (CPython's _ssl keeps
            # one deadline across its reads), so it too ends by the deadline.
            raw.settimeout(remaining(self.deadline))
            tls = self._context.wrap_socket(raw, server_hostname=self.target.host)
        except BaseException:
            raw.close()
            raise
        self.sock = _DeadlineSocket(tls, self.deadline)


def open_connection(target: Target, deadline: float,
                    context: Optional[ssl.SSLContext] = None) -> http.client.HTTPConnection:
    """An HTTP(S) connection to a checked address that ends by `deadline` (monotonic).

    Nothing is sent until the first request; redirects are the caller's business
    (http.client follows none)."""
    if target.scheme == "https":
        return PinnedHTTPSConnection(target, deadline, context)
    return PinnedHTTPConnection(target, deadline)
