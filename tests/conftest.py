from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon, DaemonFactory
from .etcd_cluster import Cluster


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons in this test's temp dir; all are stopped afterwards."""
    started: list[Daemon] = []

    class _Daemon(Daemon):
        def start(self, extra: list[str] | None = None, timeout: float = 20.0) -> Daemon:
            started.append(self)
            return super().start(extra, timeout)

    def make(args: list[str] | None = None, **kw: Any) -> Daemon:
        return _Daemon(workdir=tmp_path, args=args or [], **kw)

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> Daemon:
    """A running daemon on a free loopback port with an empty data dir."""
    return daemon_factory().start()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon shared by a module's tests (each test uses names of its own)."""
    daemon = Daemon(workdir=tmp_path_factory.mktemp("agent")).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A fresh logger that only talks to the handlers a test adds."""
    log = logging.getLogger(f"app.t{uuid.uuid4().hex[:8]}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
