# Lazy: importing this file must not import homeport.tls (cryptography, OpenSSL, acme)
# or install a reactor; the parsers import their module when an le:/lets: string is used.
from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _AcmeEndpointParser:
    """``le:<certdir>:<endpoint>`` (Let's Encrypt) and ``lets:...`` (its staging server)."""

    def __init__(self, prefix: str, staging: bool) -> None:
        self.prefix = prefix
        self.staging = staging

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        from homeport.tls.endpoint import parse

        words = [str(a) for a in args]
        return parse(reactor, self.staging, *words, **{k: str(v) for k, v in kwargs.items()})


le = _AcmeEndpointParser("le", staging=False)
lets = _AcmeEndpointParser("lets", staging=True)
