"""How ``makeService`` connects le:/lets: endpoints, the issuing service and the HTTP site.

``serverFromString`` builds an :class:`~homeport.tls.endpoint.AcmeEndpoint` through the
plugin, with no access to the daemon's objects.  So instead of a global registry,
``makeService`` hands every parsed ``--http`` endpoint to :func:`wire_tls`, which picks out
the AcmeEndpoints and, per certificate directory, shares one SNI map between them and starts
one :class:`~homeport.tls.issuer.AcmeIssuingService` bound to that same map.  The endpoint
objects are the meeting point: explicit, per daemon, and nothing left behind between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.web.resource import Resource

from .challenges import Challenges, RedirectToHTTPS, WellKnown
from .endpoint import AcmeEndpoint, SNIMap


def wire_tls(
    listeners: Sequence[tuple[str, Any, bool]],
    root: Resource,
    site: Any,
    make_site: Callable[[Resource], Any],
    parent: IServiceCollection,
    reactor: Any,
    acme_directory: str | None = None,
    ca_file: str | None = None,
    email: str | None = None,
    on_hangup: list[Callable[[], None]] | None = None,
) -> list[Any]:
    """Answer ACME challenges, start issuing, and choose each listener's factory.

    *listeners* are ``(description, endpoint, exposed)`` for every ``--http``.  Returns the
    factory for each, in order: *site*, except that with an le:/lets: listener in use a
    plain TCP listener reachable from outside (*exposed*) gets a site that answers http-01
    and redirects everything else to HTTPS.  Loopback and UNIX listeners keep serving
    plain HTTP (local tools and reverse proxies talk to them).  Each issuing service's
    directory check is added to *on_hangup* (run on SIGHUP), so a new empty file is
    seen at once rather than at the next daily check.
    """
    from .issuer import HTTP_01, TLS_ALPN_01, AcmeAuthority, AcmeIssuingService

    challenges = Challenges()
    root.putChild(b".well-known", WellKnown(challenges))
    acme = [endpoint for _, endpoint, _ in listeners if isinstance(endpoint, AcmeEndpoint)]
    if not acme:
        return [site for _ in listeners]

    def plain_exposed(endpoint: Any, exposed: bool) -> bool:
        return exposed and isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)

    # http-01 needs a plain listener the CA can reach; otherwise lead with tls-alpn-01.
    if any(plain_exposed(e, exposed) for _, e, exposed in listeners):
        preference = (HTTP_01, TLS_ALPN_01)
    else:
        preference = (TLS_ALPN_01, HTTP_01)

    maps: dict[Path, SNIMap] = {}
    for endpoint in acme:
        first = endpoint.directory not in maps
        sni = maps.setdefault(endpoint.directory, endpoint.sni)
        endpoint.sni = sni
        sni.challenges = challenges
        if first:
            authority = AcmeAuthority(
                acme_directory or endpoint.acme_directory,
                endpoint.store.account_key,
                email=email,
                ca_file=ca_file,
            )
            issuing = AcmeIssuingService(endpoint.store, sni, authority, reactor, preference)
            issuing.setServiceParent(parent)
            if on_hangup is not None:
                on_hangup.append(issuing.check)

    def https_port() -> int | None:
        for endpoint in acme:
            if endpoint.port is not None:
                return int(getattr(endpoint.port.getHost(), "port", 443))
        return None

    redirect = make_site(RedirectToHTTPS(challenges, https_port))
    return [
        redirect if plain_exposed(endpoint, exposed) else site for _, endpoint, exposed in listeners
    ]
