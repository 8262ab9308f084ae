# Lazy: importing this file must not import homeport.tls (cryptography, OpenSSL, acme)
# or install a reactor; the parsers import their module when an le:/lets: string is used.
from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _AcmeEndpointParser:
    """``le:<certdir>:<endpoint>`` (Let's Encrypt) and ``lets:...`` (its staging server)."""

    def __init__(self, prefix: str, staging: bool) -> None:
        self.prefix = prefix
        self.staging = staging

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> Any:
        from homeport.tls.endpoint import parse

        return parse(reactor, self.staging, *args, **kwargs)


le = _AcmeEndpointParser("le", staging=False)
lets = _AcmeEndpointParser("lets", staging=True)
