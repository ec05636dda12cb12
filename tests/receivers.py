"""Local HTTP receivers for the webhook tests: they record what arrives and answer as told.

A Receiver listens on 127.0.0.1 on a port of its own. It counts every connection (so a
test can prove that nothing reached it, not only that no POST was read), records every
POST, and answers with scripted statuses, a redirect, or a slow drip: a status line, then
one header byte every `drip_every` seconds for as long as the client stays.
"""
from __future__ import annotations

import http.server
import select
import threading
import time
from typing import Optional


class Receiver:
    """A local HTTP endpoint that records every POST and answers with scripted statuses."""

    def __init__(self, path: str = "/hooks/pressroom"):
        self.posts: list[dict] = []
        self.statuses: list[int] = []
        self.connections = 0
        self.redirect_to: Optional[str] = None  # answer 302 with this Location
        self.drip = False
        self.drip_every = 1.0
        self.drip_started_at: Optional[float] = None  # time.monotonic() of the dripped POST
        self.drip_cut_at: Optional[float] = None  # when the client hung up on the drip
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    # The headers object itself: its lookups ignore case.
                    receiver.posts.append({"path": self.path, "headers": self.headers,
                                           "body": body})
                    location = receiver.redirect_to
                    status = receiver.statuses.pop(0) if receiver.statuses else \
                        (302 if location else 200)
                    drip = receiver.drip
                if drip:
                    self._drip()
                    return
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _drip(self):
                """A response that never completes: its headers never end."""
                self.close_connection = True
                receiver.drip_started_at = time.monotonic()
                sock = self.connection
                try:
                    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while not receiver._stopping.is_set():
                        readable, _, _ = select.select([sock], [], [], receiver.drip_every)
                        if readable and not sock.recv(1):
                            break  # the client closed its end
                        if not readable:
                            sock.sendall(b"a")
                except OSError:
                    pass  # reset by the client
                receiver.drip_cut_at = time.monotonic()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                with receiver.lock:
                    receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> int:
        with self.lock:
            return len(self.posts)

    def reset(self) -> None:
        with self.lock:
            self.posts.clear()
            self.statuses.clear()
            self.connections = 0
            self.redirect_to = None
            self.drip = False
            self.drip_started_at = self.drip_cut_at = None

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
