"""Rules for connections to addresses that users type in (webhooks; later, publishing).

A URL from a form must not become a way into the network Pressroom runs in: the database
on 127.0.0.1:5432, the cloud metadata service at 169.254.169.254, the office's 10.x hosts.
So a URL is checked where it is used, and the connection goes to exactly the address that
was checked:

- `check_url(url, allowed_hosts)` resolves the host once and refuses it unless every
  address it resolves to is globally routable (or the host is named in `allowed_hosts`);
- `pinned.open_connection(target, deadline)` connects to the checked address (no second
  lookup that DNS could answer differently), within one overall deadline.

`static_refusal(url, allowed_hosts)` is the cheap part for a form: it catches `localhost`
and private IP literals in any spelling without looking anything up.

Pure Python and the standard library only: no Flask, so any layer may use it.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Optional, Union
from urllib.parse import quote, urlsplit

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
AllowedHosts = frozenset  # of (host, port or None)
DEFAULT_PORTS = {"http": 80, "https": 443}

NOT_PUBLIC = "not a public address"
NOT_VALID = "not a valid URL"


class Refused(Exception):
    """The URL may not be connected to. `reason` is fit for any page ("not a public
    address"); `detail` names hosts and addresses, for the log only."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to its checked addresses only; send `host` as the Host
    header and the TLS name."""
    scheme: str
    host: str   # lower case, IDNA, no trailing dot; an IP literal in its canonical form
    port: int
    ip: str     # the first checked address
    path: str   # path and query, ready for the request line
    allowed: bool = False  # let through by name (allowed_hosts), not by the address rules
    ips: tuple[str, ...] = ()  # every checked address, in the resolver's order (ip first)


# -- which addresses are public ----------------------------------------------------------

# Written out rather than left to `is_global` alone: its answers differ between Python
# versions (3.11 calls ::ffff:127.0.0.1, ::127.0.0.1 and 224.0.0.1 global).
_REFUSED_V4 = [(ipaddress.ip_network(net), name) for net, name in [
    ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"), ("255.255.255.255/32", "broadcast"),
]]
_REFUSED_V6 = [(ipaddress.ip_network(net), name) for net, name in [
    ("::/128", "unspecified"), ("::1/128", "loopback"),
    # IPv4-compatible addresses (::a.b.c.d) are deprecated and never a real receiver:
    # refused whatever the embedded address (so the embedded v4 needs no separate look).
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo, benchmarking, ORCHID)"),
    ("2001:db8::/32", "documentation"), ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"), ("ff00::/8", "multicast"),
]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> Optional[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 address an IPv6 address carries to, and how: IPv4-mapped (::ffff:a.b.c.d),
    well-known NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::)."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    return None


def refusal(ip: IPAddress) -> Optional[str]:
    """Why `ip` may not be connected to (for the log), or None if it is public."""
    if ip.version == 6 and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).partition("%")[0])
    carried = embedded_ipv4(ip)
    if carried is not None:
        # These reach the embedded IPv4 address, so that address decides.
        inner, how = carried
        reason = refusal(inner)
        return f"{how} form of {inner}: {reason}" if reason else None
    for network, name in (_REFUSED_V4 if ip.version == 4 else _REFUSED_V6):
        if ip in network:
            return name
    for flag in ("is_private", "is_loopback", "is_link_local", "is_multicast",
                 "is_reserved", "is_unspecified"):
        if getattr(ip, flag):
            return flag[3:].replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


# -- hosts: names and literals -----------------------------------------------------------

# One part of an IPv4 address as inet_aton() reads it: hex (0x..), octal (0..) or decimal.
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def _inet_aton(text: str) -> Optional[ipaddress.IPv4Address]:
    """IPv4 in the spellings resolvers accept: 127.1, 2130706433, 0x7f000001, 0177.0.0.1.
    1 to 4 parts; the last one fills the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    numbers = [int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8)
               if p.startswith("0") else int(p) for p in parts]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (24 - 8 * i)
    return ipaddress.IPv4Address(value)


def literal(host: str) -> Optional[IPAddress]:
    """The address if `host` is an IP literal in any spelling (brackets allowed), else None."""
    host = host.strip().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _inet_aton(host)


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA; an IP literal in its canonical spelling.
    Raises ValueError for a host that cannot be a name."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError("empty host")
    address = literal(host)
    if address is not None:
        return str(address)
    return host.encode("idna").decode("ascii")


def is_local_name(host: str) -> bool:
    """localhost and every name under it (RFC 6761 reserves them for this machine)."""
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


@lru_cache(maxsize=32)
def parse_allowed(raw: str) -> AllowedHosts:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, comma-separated. Raises ValueError."""
    entries = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        port: Optional[str] = None
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{item!r} is not host or host:port")
                port = rest[1:]
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host = item  # a name, or a bare IPv6 address without a port
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")
        try:
            entries.add((normalize_host(host), int(port) if port is not None else None))
        except (ValueError, UnicodeError) as exc:
            raise ValueError(f"{item!r} is not a host name or address") from exc
    return frozenset(entries)


def _allowed_set(allowed_hosts: Union[str, Iterable, None]) -> AllowedHosts:
    if not allowed_hosts:
        return frozenset()
    if isinstance(allowed_hosts, str):
        return parse_allowed(allowed_hosts)
    return frozenset(allowed_hosts)


def is_allowed(host: str, port: int, allowed_hosts) -> bool:
    """Whether host (and port) are named in the allowed hosts; `host` is normalised."""
    entries = _allowed_set(allowed_hosts)
    return (host, None) in entries or (host, port) in entries


# -- checking a URL ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Parsed:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        host = normalize_host(parts.hostname)
        port = parts.port or DEFAULT_PORTS[scheme]  # .port raises ValueError out of range
    except (ValueError, UnicodeError) as exc:
        raise Refused(NOT_VALID, f"invalid URL: {exc}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # The request line is ASCII: percent-encode anything else, leave the rest as typed.
    path = "".join(c if " " < c < "\x7f" else quote(c, safe="") for c in path)
    return _Parsed(scheme, host, port, path)


def static_refusal(url: str, allowed_hosts=()) -> Optional[str]:
    """Why the URL is refused without any lookup (for a form), or None when only the
    resolver can tell: `localhost`, `*.localhost` and IP literals that are not public.
    Raises Refused for a URL that is not a valid http(s) URL."""
    parsed = _parse(url)
    if is_allowed(parsed.host, parsed.port, allowed_hosts):
        return None
    if is_local_name(parsed.host):
        return f"{parsed.host} names this machine"
    address = literal(parsed.host)
    if address is not None:
        reason = refusal(address)
        if reason:
            return f"{address}: {reason}"
    return None


Resolver = Callable[[str, int], list]


def resolve(host: str, port: int, timeout: Optional[float] = None) -> list[str]:
    """Every address `host` resolves to, within `timeout` seconds.

    getaddrinfo() takes no timeout, so it runs in a helper thread; one that outlives the
    timeout is left to finish on its own (the resolver's own timeouts end it)."""
    outcome: dict = {}

    def run():
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # socket.gaierror included
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="netguard-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"resolving {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return list(dict.fromkeys(info[4][0] for info in outcome["infos"]))


def check_url(url: str, allowed_hosts=(), *, timeout: Optional[float] = None,
              resolver: Optional[Resolver] = None) -> Target:
    """Resolve the URL's host once and check every address; the Target to connect to.

    Raises Refused (address rules, invalid URL), TimeoutError or OSError (resolution).
    A host named in `allowed_hosts` (host, or host and port) skips the address rules.
    """
    parsed = _parse(url)
    allowed = is_allowed(parsed.host, parsed.port, allowed_hosts)
    if not allowed and is_local_name(parsed.host):
        raise Refused(NOT_PUBLIC, f"{parsed.host} names this machine")
    address = literal(parsed.host)
    if address is not None:
        addresses = [address]  # no lookup: the literal is what we connect to
    else:
        found = (resolver(parsed.host, parsed.port) if resolver
                 else resolve(parsed.host, parsed.port, timeout))
        addresses = [ipaddress.ip_address(a) for a in found]
        if not addresses:
            raise OSError(f"{parsed.host} resolved to no address")
    if not allowed:
        # Refuse the host if ANY of its addresses is refused, rather than picking the
        # public ones: a name that mixes both is either a mistake or an attack (DNS
        # rebinding), and refusing leaves no fallback path that could reach inside.
        for candidate in addresses:
            reason = refusal(candidate)
            if reason:
                raise Refused(NOT_PUBLIC, f"{parsed.host} resolves to {candidate}: {reason}")
    ips = tuple(str(a) for a in addresses)
    return Target(parsed.scheme, parsed.host, parsed.port, ips[0], parsed.path, allowed, ips)
