"""DNS interface to the catalog (Consul's ``<service>.service.consul`` names).

:mod:`homeport.dns.answer` is the pure part: a catalog snapshot and a query packet in,
reply bytes out, with the precomputed reply cache that makes it fast.
:mod:`homeport.dns.server` is the thin transport part: :class:`~homeport.dns.server.DNSService`
owns a UDP and a TCP port on the same ``HOST:PORT`` and answers from that cache.
"""
