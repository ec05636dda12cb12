"""The outbound address rules (webapp/netguard.py): which addresses are public, how hosts
are spelled, the allow-list; and the pinned connection with its one deadline (pinned.py).

No Redis, worker or database. Where a name must resolve somewhere, check_url is given a
resolver (the stand-in for socket.getaddrinfo); the connections are real, to servers on
127.0.0.1 started here.
"""
from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from webapp import netguard, pinned

LOOPBACK = ipaddress.ip_address("127.0.0.1")

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.255",
    "0.0.0.0", "0.1.2.3", "192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9",
    "198.18.0.1", "198.19.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.88.99.1",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1",
    "2001:db8::1", "3fff::1", "100::1", "2001::1", "2001:2::1", "64:ff9b:1::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    "::127.0.0.1", "::8.8.8.8", "::10.0.0.1",
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.1.2.3",
    "2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",
    "1000::1", "4000::1", "fe00::1",
]
PUBLIC_ADDRESSES = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1", "192.169.0.1",
    "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_addresses_that_are_not_public_are_refused(address):
    assert netguard.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address):
    assert netguard.refusal(ipaddress.ip_address(address)) is None


def test_the_reason_names_the_embedded_address():
    reason = netguard.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert "NAT64" in reason and "169.254.169.254" in reason
    assert "loopback" in netguard.refusal(ipaddress.ip_address("::ffff:127.0.0.1"))


LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001",
                      "0X7F000001", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "017700000001",
                      "127.0.0.1.", "[127.0.0.1]"]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_ipv4_spelling_is_read_as_the_resolver_reads_it(spelling):
    assert netguard.literal(spelling) == LOOPBACK
    try:  # the C library's reading, where it accepts the spelling at all
        assert socket.inet_ntoa(socket.inet_aton(spelling.strip("[]"))) == "127.0.0.1"
    except OSError:
        pass


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.256", "08.1.1.1",
                                  "1.2.3.4x", "4294967296", "example.com", "0x1g", "", "."])
def test_what_is_not_an_ip_literal(host):
    assert netguard.literal(host) is None


REFUSED_URLS = [
    "http://127.0.0.1/", "http://127.0.0.1:5432/", "http://127.1/", "http://2130706433/",
    "http://0x7f000001/", "http://0177.0.0.1/", "http://0x7f.1/", "http://127.0.0.1./",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::1]:8080/", "http://[::]/", "http://0/", "http://0.0.0.0/",
    "http://localhost/", "http://LOCALHOST./", "http://LocalHost:8000/x",
    "http://foo.localhost/", "https://a.b.LOCALHOST/hook",
    "http://169.254.169.254/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://[::127.0.0.1]/",
    "http://10.0.0.5/", "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
    "http://[fc00::1]/", "http://[fd12::1]/", "http://[fe80::1%25eth0]/", "http://[ff02::1]/",
    "http://224.0.0.1/", "http://198.18.0.1/", "http://192.0.2.1/", "http://[2001:db8::1]/",
    "http://240.0.0.1/", "http://255.255.255.255/", "HTTP://user:pw@127.1:80/x?y=1",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_static_refusal_catches_local_hosts_in_any_spelling(url):
    assert netguard.static_refusal(url) is not None
    with pytest.raises(netguard.Refused) as refused:
        netguard.check_url(url, resolver=_no_lookup)
    assert refused.value.reason == netguard.NOT_PUBLIC


@pytest.mark.parametrize("url", ["https://hooks.example.com/x", "http://8.8.8.8/",
                                 "http://[2606:4700:4700::1111]:8443/", "https://ok.example/h",
                                 "http://[::ffff:8.8.8.8]/", "http://localhost.example.com/"])
def test_static_refusal_leaves_names_and_public_literals_alone(url):
    assert netguard.static_refusal(url) is None


@pytest.mark.parametrize("url", ["http://[::1", "ftp://x.example/", "http://x.example:99999/",
                                 "http://:80/", "https://", "javascript:alert(1)",
                                 "//x.example/hook"])
def test_urls_that_are_not_valid(url):
    with pytest.raises(netguard.Refused) as refused:
        netguard.static_refusal(url)
    assert refused.value.reason == netguard.NOT_VALID


def test_allowed_hosts_match_host_and_port():
    allowed = "127.0.0.1:8080, Hooks.Internal.:8443, receiver.corp, [::1]:9000, fd00::5"
    assert netguard.parse_allowed(allowed) == frozenset({
        ("127.0.0.1", 8080), ("hooks.internal", 8443), ("receiver.corp", None),
        ("::1", 9000), ("fd00::5", None)})
    passes = ["http://127.0.0.1:8080/", "http://127.1:8080/x", "http://0x7f000001:8080/",
              "https://HOOKS.internal.:8443/", "http://receiver.corp/",
              "https://receiver.corp:1234/", "http://[::1]:9000/", "http://[fd00::5]/"]
    for url in passes:
        assert netguard.static_refusal(url, allowed) is None, url
        target = netguard.check_url(url, allowed, resolver=lambda host, port: ["10.0.0.7"])
        assert target.allowed, url
    still_refused = ["http://127.0.0.1:8081/", "http://127.0.0.1/", "http://[::1]:9001/",
                     "http://127.0.0.2:8080/", "http://localhost:8080/"]
    for url in still_refused:
        assert netguard.static_refusal(url, allowed) is not None, url
    # A name on another port than the allowed one: only its addresses can tell.
    for url in ("https://hooks.internal/", "https://hooks.internal:9999/"):
        assert netguard.static_refusal(url, allowed) is None
        with pytest.raises(netguard.Refused):
            netguard.check_url(url, allowed, resolver=lambda host, port: ["10.0.0.7"])


@pytest.mark.parametrize("raw", ["host:abc", "host:0", "host:65536", "[::1]x", "[::1]:"])
def test_allowed_hosts_that_are_not_hosts(raw):
    with pytest.raises(ValueError):
        netguard.parse_allowed(raw)


def _no_lookup(host, port):
    raise AssertionError(f"{host} should not have been looked up")


def test_a_name_is_refused_if_any_of_its_addresses_is_not_public():
    def mixed(host, port):
        return ["93.184.216.34", "2606:4700::1", "10.1.2.3"]
    with pytest.raises(netguard.Refused) as refused:
        netguard.check_url("https://hooks.example.com/x", resolver=mixed)
    assert "10.1.2.3" in refused.value.detail and refused.value.reason == netguard.NOT_PUBLIC
    with pytest.raises(netguard.Refused):
        netguard.check_url("https://rebind.example/x", resolver=lambda h, p: ["::ffff:127.0.0.1"])


def test_a_public_name_gives_the_address_to_connect_to():
    seen = []

    def public(host, port):
        seen.append((host, port))
        return ["93.184.216.34", "2606:2800:220:1::1"]
    target = netguard.check_url("https://Hooks.Example.COM./in/é?x=1 2#frag", resolver=public)
    assert seen == [("hooks.example.com", 443)]
    assert (target.scheme, target.host, target.port, target.ip) == \
        ("https", "hooks.example.com", 443, "93.184.216.34")
    assert target.ips == ("93.184.216.34", "2606:2800:220:1::1")
    assert target.path == "/in/%C3%A9?x=1%202" and not target.allowed


def test_literals_and_local_names_are_never_looked_up():
    target = netguard.check_url("http://8.8.8.8:8080/", resolver=_no_lookup)
    assert (target.host, target.ip, target.port) == ("8.8.8.8", "8.8.8.8", 8080)
    for url in ("http://localhost/", "http://x.localhost/"):
        with pytest.raises(netguard.Refused):
            netguard.check_url(url, resolver=_no_lookup)


def test_the_real_resolver_refuses_localhost_spelled_as_a_machine_name():
    """This machine's own name resolves to a loopback address on most systems."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        pytest.skip(f"{name!r} resolves to {addresses}, not only to loopback")
    with pytest.raises(netguard.Refused):
        netguard.check_url(f"http://{name}:5432/", timeout=5)


# -- the pinned connection ------------------------------------------------------------------

class _Server:
    """A TCP server on 127.0.0.1 that records what it reads and answers as told."""

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.received = b""
        self.sni: list = []
        self._answer, self._tls = answer, tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self._listener.accept()
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.settimeout(5)
            # All of the request, body too: closing with unread bytes would reset the
            # connection and could lose the answer.
            while b"\r\n\r\n" not in self.received or not self.received.endswith(b"{}"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                self.received += chunk
            self._answer(conn, self._stop)
        except OSError:
            pass  # the client hung up (the deadline and certificate tests do)
        finally:
            conn.close()

    def close(self):
        self._stop.set()
        self._listener.close()


def _drip(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
    while not stop.wait(0.1):
        conn.sendall(b"a")


def _ok(conn, stop):
    conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


def test_a_dripping_peer_is_cut_at_the_deadline_not_per_read():
    server = _Server(_drip)
    try:
        # "drip.test" resolves nowhere: the connection can only go to the checked address.
        target = netguard.check_url(f"http://drip.test:{server.port}/hook", "drip.test",
                                    resolver=lambda host, port: ["127.0.0.1"])
        started = time.monotonic()
        connection = pinned.open_connection(target, started + 0.8)
        with pytest.raises(TimeoutError):
            connection.request("POST", target.path, body=b"{}")
            connection.getresponse()
        elapsed = time.monotonic() - started
        connection.close()
    finally:
        server.close()
    # A byte every 0.1 s would renew a per-read timeout for ever.
    assert 0.7 <= elapsed < 2.0, elapsed
    assert server.received.startswith(b"POST /hook HTTP/1.1\r\n")
    assert f"Host: drip.test:{server.port}\r\n".encode() in server.received


def test_https_checks_the_certificate_and_sends_sni_for_the_name(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    to_loopback = lambda host, port: ["127.0.0.1"]  # noqa: E731

    server = _Server(_ok, server_tls)
    server_tls.sni_callback = lambda sock, name, ctx: server.sni.append(name)
    try:
        target = netguard.check_url(f"https://pinned.test:{server.port}/x", "pinned.test",
                                    resolver=to_loopback)
        connection = pinned.open_connection(target, time.monotonic() + 5, client_tls)
        connection.request("POST", target.path, body=b"{}")
        assert connection.getresponse().status == 204
        connection.close()
    finally:
        server.close()
    assert server.sni == ["pinned.test"]

    # The same certificate for another name: refused, though the address is the same.
    server = _Server(_ok, server_tls)
    try:
        target = netguard.check_url(f"https://other.test:{server.port}/x", "other.test",
                                    resolver=to_loopback)
        connection = pinned.open_connection(target, time.monotonic() + 5, client_tls)
        with pytest.raises(ssl.SSLCertVerificationError):
            connection.request("POST", target.path, body=b"{}")
        connection.close()
    finally:
        server.close()


def test_the_next_checked_address_is_tried_when_one_refuses():
    server = _Server(_ok)
    try:
        # Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1 only).
        target = netguard.check_url(f"http://two.test:{server.port}/", "two.test",
                                    resolver=lambda host, port: ["127.0.0.2", "127.0.0.1"])
        connection = pinned.open_connection(target, time.monotonic() + 5)
        connection.request("POST", target.path, body=b"{}")
        assert connection.getresponse().status == 204
        connection.close()
    finally:
        server.close()
