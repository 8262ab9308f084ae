from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon import Daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[type[Daemon]]:
    """Start daemons in this test's temp dir; all are stopped afterwards."""
    started: list[Daemon] = []

    class _Daemon(Daemon):
        def start(self, extra: list[str] | None = None, timeout: float = 20.0) -> Daemon:
            started.append(self)
            return super().start(extra, timeout)

    def make(args: list[str] | None = None, **kw: object) -> Daemon:
        return _Daemon(workdir=tmp_path, args=args or [], **kw)  # type: ignore[arg-type]

    yield make  # type: ignore[misc]
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def daemon(daemon_factory: type[Daemon]) -> Daemon:
    """A running daemon on a free loopback port with an empty data dir."""
    return daemon_factory().start()  # type: ignore[call-arg]
