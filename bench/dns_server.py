"""Run homeport's DNSService alone on a small catalog, for bench/dns.sh.

The catalog mirrors the records bench/dns.sh gives dnsmasq, so both servers answer
the same names with the same data.  Prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor

from homeport.catalog.model import Catalog, Node, Service
from homeport.dns.server import DNSService


def build_catalog() -> Catalog:
    catalog = Catalog()
    catalog.register(
        Node("alpha", "10.0.0.1"),
        [
            Service("alpha", "web-1", "web", ("rails",), port=8080),
            Service("alpha", "db", "db", address="10.0.0.10", port=5432),
        ],
    )
    catalog.register(Node("beta", "10.0.0.2"), [Service("beta", "web-2", "web", port=8080)])
    catalog.register(Node("gamma", "10.0.0.3"), [Service("gamma", "web-3", "web", port=8080)])
    return catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    service = DNSService(build_catalog(), args.interface, args.port, reactor=reactor)
    service.startService()
    print(f"PORT {service.port}", flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
