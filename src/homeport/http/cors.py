"""Cross-origin reads for browsers: the ``--cors-origin`` allow-list."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.server import Request

#: Headers a browser script may read from a cross-origin answer (Consul's indexes).
EXPOSED = b"X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact"


class CORS:
    """The ``--cors-origin`` allow-list (``*`` allows any origin)."""

    def __init__(self, origins: Sequence[str] = ()) -> None:
        self.origins = {o.rstrip("/") for o in origins}

    def apply(self, request: Request, methods: bytes = b"GET, POST, OPTIONS") -> bool:
        """Add the CORS headers when the request's ``Origin`` is allowed."""
        origin = request.getHeader(b"origin")
        if not origin or not self.origins:
            return False
        text = origin.decode("latin-1").rstrip("/")
        if "*" not in self.origins and text not in self.origins:
            return False
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        request.setHeader(b"vary", b"Origin")
        request.setHeader(b"access-control-expose-headers", EXPOSED)
        if request.method == b"OPTIONS":
            request.setHeader(b"access-control-allow-methods", methods)
            wanted = request.getHeader(b"access-control-request-headers")
            request.setHeader(
                b"access-control-allow-headers",
                wanted or b"Content-Type, Authorization, X-Consul-Token, Last-Event-ID",
            )
            request.setHeader(b"access-control-max-age", b"600")
        return True
