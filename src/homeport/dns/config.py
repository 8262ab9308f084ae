"""What the DNS side is told at start-up, checked once: :class:`Config`.

A setting that cannot work raises :class:`InvalidConfig`, which names the
:class:`Config` field; the core knows no command line (``homeport.options`` says which
option a field came from).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import error
from .codes import CLASSIC_UDP_SIZE

#: How the message names each field.
_WORDS = {
    "domain": "DNS domain",
    "ttl": "TTL",
    "soa_min_ttl": "SOA minimum TTL",
    "max_udp_size": "max UDP size",
}
_MAX_TTL = 2**31 - 1
_MAX_UDP_SIZE = 65507


@error
class InvalidConfig(ValueError):
    """A DNS setting that cannot work: which :class:`Config` *field*, its *value*, why."""

    field: str
    value: object
    reason: str

    def __str__(self) -> str:
        name = _WORDS.get(self.field, self.field)
        return f"invalid {name} {self.value!r}: {self.reason}"


@dataclass(frozen=True)
class Config:
    """The DNS domain, the TTL of answers, the SOA minimum and the UDP size cap."""

    domain: str = "consul"
    ttl: int = 0
    soa_min_ttl: int = 0
    #: The largest UDP reply we send, whatever size the client's EDNS offers.
    max_udp_size: int = 4096

    def __post_init__(self) -> None:
        labels = self.domain.lower().strip(".").split(".")
        if not all(labels) or any(len(label.encode()) > 63 for label in labels):
            raise InvalidConfig("domain", self.domain, "not a DNS name")
        if not all(label.isascii() for label in labels):
            raise InvalidConfig("domain", self.domain, "not an ASCII DNS name")
        for name, value in (("ttl", self.ttl), ("soa_min_ttl", self.soa_min_ttl)):
            if not 0 <= value <= _MAX_TTL:
                raise InvalidConfig(name, value, "must be between 0 and 2147483647")
        if not CLASSIC_UDP_SIZE <= self.max_udp_size <= _MAX_UDP_SIZE:
            raise InvalidConfig("max_udp_size", self.max_udp_size, "must be 512..65507")
        object.__setattr__(self, "domain", ".".join(labels))

    @property
    def wire_labels(self) -> tuple[bytes, ...]:
        return tuple(label.encode() for label in self.domain.split("."))
