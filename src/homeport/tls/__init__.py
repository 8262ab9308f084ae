"""Automatic TLS: ACME v2 issuing, the certificate directory, challenges, the le:/lets: endpoint.

``store`` reads and writes the directory of ``<hostname>.pem`` files; ``challenges`` answers
http-01 and tls-alpn-01; ``issuer`` is the Service that gets and renews certificates with
certbot's ``acme`` library in a thread; ``endpoint`` serves TLS with SNI from the directory.

``serverFromString`` builds an :class:`~.endpoint.AcmeEndpoint` through the plugin, with
no access to the daemon's objects.  So instead of a global registry, :func:`build` gets
every ``--http`` endpoint string, parses them, picks out the AcmeEndpoints and, per
certificate directory, shares one SNI map between them and starts one
:class:`~.issuer.AcmeIssuingService` bound to that same map.  The endpoint objects are
the meeting point: explicit, per daemon, and nothing left behind between tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.application.service import MultiService
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.web.resource import Resource

from ..errors import StartupError
from ..part import IHomeportReactor, Part, attach

if TYPE_CHECKING:
    from .challenges import Challenges
    from .endpoint import AcmeEndpoint


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: The ACME directory URL; None: each le:/lets: endpoint's own (Let's Encrypt's).
    acme_directory: str | None = None
    #: An extra trust root (PEM file) for the ACME server's HTTPS.
    ca_file: str | None = None
    email: str | None = None
    #: ``--empty-file``: created empty unless they exist (a name to get a certificate for).
    empty_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listening:
    """One ``--http`` endpoint and the factory it serves."""

    description: str
    endpoint: IStreamServerEndpoint
    factory: IProtocolFactory
    exposed: bool


@dataclass(frozen=True, kw_only=True)
class TLSPart(Part):
    listeners: tuple[Listening, ...]


Endpoints = Sequence[tuple[str, IStreamServerEndpoint, bool]]


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    http: Sequence[str],
    site: IProtocolFactory,
    make_site: Callable[[Resource], IProtocolFactory],
) -> TLSPart:
    """Answer ACME challenges, start issuing, and choose each listener's factory.

    Every endpoint in *http* serves *site*, except that with an le:/lets: listener in
    use a plain TCP listener reachable from outside gets a site that answers http-01
    and redirects everything else to HTTPS.  Loopback and UNIX listeners keep serving
    plain HTTP (local tools and reverse proxies talk to them).  Each issuing service's
    directory check runs on SIGHUP, so a new empty file is seen at once rather than at
    the next daily check.
    """
    from twisted.internet.endpoints import serverFromString

    from ..http.listen import exposed_interfaces
    from .challenges import Challenges, RedirectToHTTPS, WellKnown

    _create_empty_files(settings.empty_files)  # before the endpoints read their directories
    endpoints = [(d, serverFromString(reactor, d), exposed_interfaces(d)) for d in http]
    challenges = Challenges()
    service = MultiService()
    checks, https_port = _issue(settings, reactor, endpoints, challenges, service)
    factories = [site for _ in endpoints]
    if checks:
        redirect = make_site(RedirectToHTTPS(challenges, https_port))
        factories = [redirect if _plain_exposed(e, x) else site for _, e, x in endpoints]
    listeners = tuple(
        Listening(description, endpoint, factory, exposed)
        for (description, endpoint, exposed), factory in zip(endpoints, factories, strict=True)
    )
    return TLSPart(
        service=service,
        resources={b".well-known": WellKnown(challenges)},
        on_hangup=tuple(checks),
        exposed=any(listening.exposed for listening in listeners),
        listeners=listeners,
    )


def _plain_exposed(endpoint: IStreamServerEndpoint, exposed: bool) -> bool:
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    return exposed and isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)


def _issue(
    settings: Settings,
    reactor: IHomeportReactor,
    endpoints: Endpoints,
    challenges: Challenges,
    parent: MultiService,
) -> tuple[list[Callable[[], None]], Callable[[], int | None]]:
    """One issuing service per certificate directory of the le:/lets: endpoints: their
    checks (none: no ACME endpoint), and where HTTPS is served once it listens."""
    acme = _acme_endpoints(endpoints)
    if not acme:
        return [], lambda: None
    from .authority import AcmeAuthority
    from .endpoint import SNIMap
    from .issuer import HTTP_01, TLS_ALPN_01, AcmeIssuingService

    # http-01 needs a plain listener the CA can reach; otherwise lead with tls-alpn-01.
    if any(_plain_exposed(e, exposed) for _, e, exposed in endpoints):
        preference = (HTTP_01, TLS_ALPN_01)
    else:
        preference = (TLS_ALPN_01, HTTP_01)
    checks: list[Callable[[], None]] = []
    maps: dict[Path, SNIMap] = {}
    for endpoint in acme:
        first = endpoint.directory not in maps
        sni = maps.setdefault(endpoint.directory, endpoint.sni)
        endpoint.sni = sni
        sni.challenges = challenges
        if first:
            authority = AcmeAuthority(
                settings.acme_directory or endpoint.acme_directory,
                endpoint.store.account_key,
                email=settings.email,
                ca_file=settings.ca_file,
            )
            issuing = AcmeIssuingService(endpoint.store, sni, authority, reactor, preference)
            attach(parent, issuing)
            checks.append(issuing.check)

    def https_port() -> int | None:
        for endpoint in acme:
            if endpoint.port is not None:
                return int(getattr(endpoint.port.getHost(), "port", 443))
        return None

    return checks, https_port


def _acme_endpoints(endpoints: Endpoints) -> list[AcmeEndpoint]:
    """The le:/lets: endpoints.  Only parsing one of those imports :mod:`.endpoint`
    (the plugin's parser does), so with none parsed it is not imported here either."""
    module = sys.modules.get(f"{__name__}.endpoint")
    if module is None:
        return []
    kind: type[AcmeEndpoint] = module.AcmeEndpoint
    return [endpoint for _, endpoint, _ in endpoints if isinstance(endpoint, kind)]


def _create_empty_files(paths: Sequence[str]) -> None:
    """``--empty-file``: create each file empty unless it exists.

    Exclusive create: an existing file, a certificate already issued for instance, is
    left exactly as it is.  A new one is 0600 whatever the umask (it will hold the key)
    and missing parent directories are made 0700 (it is usually the certificate
    directory).
    """
    for name in paths:
        path = Path(name)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        except OSError as e:
            raise StartupError(f"--empty-file {name!r}: {e.strerror}") from None
