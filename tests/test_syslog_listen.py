"""The syslog listeners in memory: back pressure, drops, idle timeouts, RELP answers."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from homeport.errors import StartupError
from homeport.http.metrics import Metrics
from homeport.logs.record import Record
from homeport.logs.syslog.frames import relp_frame
from homeport.logs.syslog.ingest import Ingest, Limits
from homeport.logs.syslog.listen import (
    Connection,
    StreamFactory,
    SyslogDatagramProtocol,
    UDPListener,
    json_lines_factory,
    parse_udp,
)
from homeport.logs.syslog.relp import OFFERS, RelpConnection, RelpFactory
from homeport.logs.syslog.service import (
    Endpoints,
    check,
    listeners,
    register_metrics,
    stream_description,
)

Done = Callable[[list[int] | BaseException], None]


@dataclass
class FakeStore:
    """``LogStore.add`` that commits only when the test says so."""

    calls: list[tuple[Sequence[Record], Done]] = field(default_factory=list)
    next_id: int = 1
    stopping: bool = False

    def add(self, records: Sequence[Record], done: Done) -> None:
        if self.stopping:
            raise RuntimeError("the log store is stopping")
        self.calls.append((records, done))

    @property
    def records(self) -> list[Record]:
        return [r for records, _ in self.calls for r in records]

    def commit(self, error: BaseException | None = None) -> None:
        calls, self.calls = self.calls, []
        for records, done in calls:
            if error is not None:
                done(error)
                continue
            ids = list(range(self.next_id, self.next_id + len(records)))
            self.next_id += len(records)
            done(ids)


def make(limits: Limits = Limits()) -> tuple[FakeStore, Ingest, Clock]:
    store = FakeStore()
    clock = Clock()
    return store, Ingest(store.add, clock.seconds, limits), clock


def connect(factory: StreamFactory) -> tuple[Connection, StringTransport]:
    connection = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 40000))
    Protocol.makeConnection(connection, transport)
    return connection, transport


# -- TCP ----------------------------------------------------------------------------


def test_tcp_messages_go_to_the_store_with_the_peer() -> None:
    store, ingest, clock = make()
    connection, _ = connect(StreamFactory(ingest, clock))
    connection.dataReceived(b"<13>app: one\n12 <14>app: twothree")
    assert [r.message for r in store.records] == ["one", "two"]
    connection.connectionLost(None)
    assert [r.message for r in store.records][-1] == "three"
    assert {r.extra["peer"] for r in store.records} == {"192.0.2.9"}


def test_a_connection_stops_being_read_while_its_records_wait_and_resumes() -> None:
    store, ingest, clock = make(Limits(max_pending_per_connection=4))
    connection, transport = connect(StreamFactory(ingest, clock))
    connection.dataReceived(b"<13>a\n<13>b\n")
    assert transport.producerState == "producing"
    connection.dataReceived(b"<13>c\n<13>d\n")
    assert transport.producerState == "paused"
    assert ingest.pending == 4
    store.commit()
    assert transport.producerState == "producing"
    assert ingest.pending == 0
    assert ingest.counts.stored == 4


def test_every_connection_waits_while_the_store_is_behind_on_all_of_them() -> None:
    store, ingest, clock = make(Limits(max_pending=6, max_pending_per_connection=100))
    factory = StreamFactory(ingest, clock)
    (one, t1), (two, t2) = connect(factory), connect(factory)
    one.dataReceived(b"<13>a\n<13>b\n<13>c\n")
    two.dataReceived(b"<13>a\n<13>b\n<13>c\n")
    assert (t1.producerState, t2.producerState) == ("producing", "paused")
    one.dataReceived(b"<13>d\n")
    assert t1.producerState == "paused"
    store.commit()
    assert (t1.producerState, t2.producerState) == ("producing", "producing")


def test_a_paused_connection_is_not_idle_and_an_idle_one_is_closed() -> None:
    store, ingest, clock = make(Limits(idle_timeout=30.0, max_pending_per_connection=1))
    factory = StreamFactory(ingest, clock)
    connection, transport = connect(factory)
    connection.dataReceived(b"<13>a\n")
    clock.advance(100)
    assert not transport.disconnecting
    store.commit()
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting  # aborted


def test_too_many_connections_are_refused() -> None:
    _, ingest, clock = make(Limits(max_connections=1))
    factory = StreamFactory(ingest, clock)
    _, first = connect(factory)
    _, second = connect(factory)
    assert not first.disconnecting
    assert second.disconnecting
    assert ingest.counts.connections == 1


def test_a_stopping_store_closes_the_connection() -> None:
    store, ingest, clock = make()
    connection, transport = connect(StreamFactory(ingest, clock))
    store.stopping = True
    connection.dataReceived(b"<13>a\n")
    assert transport.disconnecting
    assert ingest.counts.failed == 1


def test_a_failed_commit_is_counted() -> None:
    store, ingest, clock = make()
    connection, _ = connect(StreamFactory(ingest, clock))
    connection.dataReceived(b"<13>a\n<13>b\n")
    store.commit(RuntimeError("disk full"))
    assert (ingest.counts.failed, ingest.pending) == (2, 0)


def test_json_lines() -> None:
    store, ingest, clock = make()
    connection, _ = connect(json_lines_factory(ingest, clock))
    connection.dataReceived(b'{"MESSAGE": "hi", "PROGRAM": "p"}\n12 not counted\n')
    assert [(r.logger, r.message) for r in store.records] == [
        ("p", "hi"),
        ("syslog", "12 not counted"),
    ]


# -- UDP ----------------------------------------------------------------------------


def test_udp_datagrams_are_batched_per_reactor_turn() -> None:
    store, ingest, clock = make()
    protocol = SyslogDatagramProtocol(ingest, clock)
    for i in range(3):
        protocol.datagramReceived(b"<13>app: %d" % i, ("192.0.2.1", 514))
    assert store.calls == []
    clock.advance(0)
    assert len(store.calls) == 1
    assert [r.message for r in store.records] == ["0", "1", "2"]


def test_udp_drops_and_counts_when_the_store_is_behind() -> None:
    store, ingest, clock = make(Limits(max_pending=5, udp_batch=2))
    metrics = Metrics()
    register_metrics(metrics, ingest)
    protocol = SyslogDatagramProtocol(ingest, clock)
    for i in range(8):
        protocol.datagramReceived(b"<13>app: %d" % i, ("192.0.2.1", 514))
    clock.advance(0)
    assert len(store.records) == 5
    assert ingest.counts.dropped == 3
    store.commit()
    protocol.datagramReceived(b"<13>app: again", ("192.0.2.1", 514))
    clock.advance(0)
    assert ingest.counts.dropped == 3
    text = metrics.render().decode()
    assert "homeport_syslog_dropped_total 3.0" in text
    assert "homeport_syslog_stored_total 5.0" in text


def test_udp_descriptions() -> None:
    assert parse_udp("udp:5514") == (5514, "")
    assert parse_udp("udp:5514:interface=127.0.0.1") == (5514, "127.0.0.1")
    for bad in ("udp:", "udp:70000", "udp:1:backlog=3", "tcp:1"):
        with pytest.raises(ValueError):
            parse_udp(bad)


def test_endpoint_checks() -> None:
    assert stream_description("2514") == "tcp:2514"
    check("--syslog", "udp:5514")
    check("--relp", "2514")
    with pytest.raises(ValueError, match="not a valid endpoint"):
        check("--json-lines", "nonsense:1")
    assert not Endpoints(
        syslog=("udp:1:interface=127.0.0.1",), relp=("tcp:2:interface=127.0.0.1",)
    ).exposed
    assert Endpoints(relp=("2514",)).exposed


def test_a_busy_port_is_a_startup_error_naming_the_option() -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    _, ingest, _ = make()
    description = f"udp:{port}:interface=127.0.0.1"
    listener = UDPListener(f"--syslog {description!r}", description, ingest, global_reactor)
    with pytest.raises(
        StartupError,
        match=r"--syslog 'udp:\d+:interface=127.0.0.1': cannot listen: Address already in use",
    ):
        listener.startService()
    busy.close()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    taken = f"tcp:{tcp.getsockname()[1]}:interface=127.0.0.1"
    (stream,) = listeners(Endpoints(relp=(taken,)), ingest, global_reactor)
    with pytest.raises(
        StartupError, match=r"--relp 'tcp:.*': cannot listen: Address already in use$"
    ):
        stream.startService()
    tcp.close()


# -- RELP ---------------------------------------------------------------------------


def relp_session(
    limits: Limits = Limits(),
) -> tuple[FakeStore, Ingest, RelpConnection, StringTransport]:
    store, ingest, clock = make(limits)
    connection, transport = connect(RelpFactory(ingest, clock))
    assert isinstance(connection, RelpConnection)
    return store, ingest, connection, transport


OPEN = relp_frame(1, "open", b"relp_version=0\nrelp_software=test\ncommands=syslog")


def test_relp_acknowledges_only_once_committed() -> None:
    store, _, connection, transport = relp_session()
    connection.dataReceived(OPEN)
    assert transport.value() == relp_frame(1, "rsp", OFFERS)
    transport.clear()
    connection.dataReceived(
        relp_frame(2, "syslog", b"<13>app: one") + relp_frame(3, "syslog", b"<13>app: two")
    )
    assert transport.value() == b""
    assert [r.message for r in store.records] == ["one", "two"]
    store.commit()
    assert transport.value() == b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n"


def test_relp_close_is_answered_after_the_frames_before_it() -> None:
    store, _, connection, transport = relp_session()
    connection.dataReceived(OPEN + relp_frame(2, "syslog", b"<13>a") + relp_frame(3, "close"))
    transport.clear()
    assert not transport.disconnecting
    store.commit()
    assert transport.value() == b"2 rsp 6 200 OK\n3 rsp 0\n"
    assert transport.disconnecting


def test_relp_failed_commit_is_a_500_and_errors_before_open() -> None:
    store, _, connection, transport = relp_session()
    connection.dataReceived(relp_frame(1, "syslog", b"<13>early"))
    assert transport.value() == b"1 rsp 22 500 session not opened\n"
    transport.clear()
    connection.dataReceived(
        relp_frame(2, "open", b"relp_version=0")
        + relp_frame(3, "syslog", b"<13>a")
        + relp_frame(4, "starttls")
    )
    store.commit(RuntimeError("disk full"))
    assert transport.value().endswith(
        b"\n3 rsp 25 500 not stored: disk full\n4 rsp 25 500 command not supported\n"
    )


def test_broken_relp_framing_closes_with_serverclose() -> None:
    _, _, connection, transport = relp_session()
    connection.dataReceived(b"garbage\n")
    assert transport.value() == b"0 serverclose 0\n"
    assert transport.disconnecting


def test_stopping_answers_what_is_stored_then_serverclose() -> None:
    store, _, connection, transport = relp_session()
    connection.dataReceived(OPEN + relp_frame(2, "syslog", b"<13>a"))
    transport.clear()
    connection.factory.close_all()
    assert not transport.disconnecting
    connection.dataReceived(relp_frame(3, "syslog", b"<13>ignored"))
    assert [r.message for r in store.records] == ["a"]
    store.commit()
    assert transport.value() == b"2 rsp 6 200 OK\n0 serverclose 0\n"
    assert transport.disconnecting


def test_relp_back_pressure() -> None:
    store, _, connection, transport = relp_session(Limits(max_pending_per_connection=2))
    connection.dataReceived(
        OPEN + relp_frame(2, "syslog", b"<13>a") + relp_frame(3, "syslog", b"<13>b")
    )
    assert transport.producerState == "paused"
    store.commit()
    assert transport.producerState == "producing"


# -- options ------------------------------------------------------------------------


def settings_of(argv: list[str]) -> Any:
    from homeport.options import Options

    options = Options()
    options.environ = {}
    options.parseOptions(argv)
    return options.settings.logs


def test_options_make_the_logs_settings(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    tls = f"le:{certs}:tcp:6514"
    logs = settings_of(
        [
            *("--syslog", "udp:5514", "--syslog", "tcp:5514:interface=127.0.0.1"),
            *("--relp", "2514", "--json-lines", "tcp:5515", "--syslog-tls", tls),
        ]
    )
    assert logs.syslog == ("udp:5514", "tcp:5514:interface=127.0.0.1")
    assert (logs.relp, logs.json_lines, logs.syslog_tls) == (("2514",), ("tcp:5515",), (tls,))
    with_le = settings_of(["--http", f"le:{certs}:tcp:443", "--syslog-tls", "6514"])
    assert with_le.syslog_tls == (f"le:{certs}:tcp:6514",)
    assert settings_of([]).syslog == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--syslog", "udp:99999"], "--syslog 'udp:99999': port 99999 is out of range"),
        (["--relp", "udp:2514"], "--relp 'udp:2514': takes TCP only, not udp:"),
        (["--json-lines", "bogus:1"], "--json-lines 'bogus:1': not a valid endpoint"),
        (["--syslog-tls", "6514"], "--syslog-tls '6514': no certificate to serve"),
        (["--syslog-tls", "tcp:6514"], "--syslog-tls 'tcp:6514': not TLS"),
    ],
)
def test_bad_syslog_options_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_of(argv)
    assert exited.value.code == 1
    assert message in capsys.readouterr().err


def test_sighup_reloads_the_certificates_of_le_tls_listeners(tmp_path: Path) -> None:
    from homeport.logs.syslog.service import certificate_reloads

    _, ingest, _ = make()
    tls = f"le:{tmp_path / 'certs'}:tcp:0:interface=127.0.0.1"
    services = listeners(Endpoints(syslog_tls=(tls,), relp=("0",)), ingest, global_reactor)
    (reload,) = certificate_reloads(services)
    reload()  # reads the (empty) directory: the stand-in certificate is served
