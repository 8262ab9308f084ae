"""Which ``Host`` names may reach the site, and which ``Origin`` may write to it.

DNS rebinding: a page on ``evil.example`` has its name re-pointed at 127.0.0.1 and then
reads homeport as "its own" origin; the request still says ``Host: evil.example``.  So a
request naming a host that is not one of ours is refused, the way Consul's agent,
Jupyter, Vite and webpack-dev-server refuse one.  What passes:

- IP literals (``127.0.0.1``, ``[::1]``): no name, nothing to rebind;
- ``localhost`` and ``*.localhost`` (browsers resolve those to loopback themselves);
- single-label names (``myhost``): a page's origin on the web is a dotted public name,
  and a search domain's names are the local network's, not an attacker's;
- the node's names (``--node``, the host's name and FQDN, ``<node>.node.<domain>``) and
  whatever ``--allow-host`` adds (``.example.com`` allows every name under it, ``*`` any).

Cross-site writes: a page may send a "simple" ``POST`` anywhere without a preflight, so
a write whose ``Origin`` is neither this site's own (the ``Host`` it was sent to) nor one
``--allow-origin`` (or ``--cors-origin``) names is refused.  Requests with no ``Origin``
(curl, Consul's clients, ``HTTPHandler``: nothing a page can make) are not browsers'.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: Methods that only read: every other one is a write.
READS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Host values remembered as allowed (the few a site is reached by, so a scan of names
#: cannot grow it beyond this).
MEMO = 256


def split_host(value: str) -> tuple[str, int | None]:
    """``"Example.com:8500"`` -> ``("example.com", 8500)``; ``"[::1]"`` -> ``("::1", None)``."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        return name, port
    name, colon, digits = value.rpartition(":")
    if colon and digits.isdigit() and ":" not in name:
        return name.rstrip("."), int(digits)
    return value.rstrip("."), None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return False
    return True


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """``"https://a.example"`` -> ``("https", "a.example", 443)``; None for ``null`` or junk."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in DEFAULT_PORTS or not rest or "/" in rest.rstrip("/"):
        return None
    name, port = split_host(rest.rstrip("/"))
    return (scheme, name, port if port is not None else DEFAULT_PORTS[scheme]) if name else None


def same_origin(origin: bytes, host: bytes | None) -> bool:
    """Is *origin* the origin of a page served from *host* (the request's ``Host``)?

    Compared by name and port, a missing port being the origin scheme's default, so a
    TLS-terminating proxy in front (``Origin: https://a.example``, ``Host: a.example``)
    still counts as the same origin."""
    parsed = parse_origin(origin.decode("latin-1"))
    if parsed is None or not host:
        return False
    scheme, name, port = parsed
    host_name, host_port = split_host(host.decode("latin-1"))
    return (host_name, host_port if host_port is not None else DEFAULT_PORTS[scheme]) == (
        name,
        port,
    )


class Names:
    """The ``Host`` names and write ``Origin`` s this site accepts (see the module)."""

    def __init__(self, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        names = {split_host(h)[0] for h in hosts if h}
        self.any_host = "*" in names
        self.suffixes = tuple(n for n in names if n.startswith("."))
        self.hosts = frozenset(n for n in names if not n.startswith("."))
        self.any_origin = "*" in origins
        self.origins = frozenset(p for p in map(parse_origin, origins) if p is not None)
        self.seen: set[bytes] = set()

    def name_allowed(self, name: str) -> bool:
        return bool(
            self.any_host
            or not name
            or "." not in name
            or name == "localhost"
            or name.endswith(".localhost")
            or name in self.hosts
            or name.endswith(self.suffixes)
            or is_ip(name)
        )

    def host_allowed(self, host: bytes | None) -> bool:
        """May a request with this ``Host`` header be answered?  (None: no header.)"""
        if host is None or host in self.seen:
            return True
        allowed = self.name_allowed(split_host(host.decode("latin-1"))[0])
        if allowed and len(self.seen) < MEMO:
            self.seen.add(host)
        return allowed

    def origin_allowed(self, origin: bytes | None, host: bytes | None) -> bool:
        """May a write with this ``Origin`` (None: no header) sent to *host* go ahead?"""
        if origin is None or self.any_origin or same_origin(origin, host):
            return True
        return parse_origin(origin.decode("latin-1")) in self.origins

    def refusal(self, method: bytes, host: bytes | None, origin: bytes | None) -> str | None:
        """Why a request is refused (one line), or None to answer it."""
        if not self.host_allowed(host):
            shown = (host or b"").decode("latin-1")
            return (
                f"Host {shown!r} is not a name of this homeport "
                "(a DNS-rebinding defence; add it with --allow-host)"
            )
        if method not in READS and not self.origin_allowed(origin, host):
            shown = (origin or b"").decode("latin-1")
            return (
                f"Origin {shown!r} may not write here "
                "(writes from a browser must come from this origin or an --allow-origin one)"
            )
        return None
