"""The one shape every part is built in.

Each part (catalog, dns, logs, push, tls, web) has a frozen, typed ``Settings`` made from
the options in ``tap.py`` and a ``build(settings, reactor, ...) -> Part``: a service to
start and stop with the daemon, and the resources it serves on the one HTTP site.  Nothing
listens or opens a socket until the service starts; a part that cannot start raises
:class:`homeport.errors.StartupError` with one line for the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted.application.service import IService, IServiceCollection
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
)
from twisted.web.resource import IResource


class IHomeportReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorUDP,
    IReactorSSL,
    IReactorThreads,
    IReactorProcess,
    IReactorFDSet,
):
    """The reactor homeport runs on: everything Twisted's default (epoll) reactor does.

    A part that needs one capability takes that interface (``IReactorTime`` for timers);
    one that needs several takes this.
    """


@dataclass(frozen=True, kw_only=True)
class Part:
    """What a part's ``build`` gives the wiring."""

    #: Started and stopped with the daemon (usually a ``MultiService``).
    service: IService
    #: Children of the site's root: ``{b"log": ...}`` is served at ``/log``.
    resources: Mapping[bytes, IResource] = field(default_factory=dict)
    #: Children under ``/v1/``, routed before the Consul API (``{b"logs": ...}``).
    v1: Mapping[bytes, IResource] = field(default_factory=dict)
    #: What SIGHUP reads again (service definitions, certificate directories).
    on_hangup: Sequence[Callable[[], None]] = ()
    #: True when it listens beyond loopback (the no-token warning counts it).
    exposed: bool = False


def attach(parent: IServiceCollection, *children: IService) -> None:
    """Make each of *children* a child of *parent*, in order (started in this order,
    stopped in the reverse)."""
    for child in children:
        child.setServiceParent(parent)
