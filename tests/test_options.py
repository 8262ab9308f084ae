"""Options from the command line and from HOMEPORT_* environment variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.interfaces import IReactorFromThreads

from homeport.options import Options


def parse(argv: list[str], environ: dict[str, str]) -> Options:
    options = Options()
    options.environ = environ
    options.parseOptions(argv)
    return options


def test_every_option_can_come_from_the_environment() -> None:
    options = parse(
        [],
        {
            "HOMEPORT_TOKEN": "s3cret",
            "HOMEPORT_DATA_DIR": "/var/lib/hp",
            "HOMEPORT_DNS": "127.0.0.1:5353",
            "HOMEPORT_DNS_TTL": "30",
            "HOMEPORT_HTTP": "tcp:8500 tcp:8080:interface=127.0.0.1",
            "HOMEPORT_CORS_ORIGIN": "https://a.example https://b.example",
            "HOMEPORT_ACCESS_LOG": "true",
            "HOMEPORT_HEALTHCHECK_URL": "http://127.0.0.1:8500/",  # not an option: ignored
        },
    )
    settings = options.settings
    assert settings.token == "s3cret"
    assert settings.data_dir == Path("/var/lib/hp")
    assert settings.dns is not None
    assert (settings.dns.host, settings.dns.port, settings.dns.ttl) == ("127.0.0.1", 5353, 30)
    assert settings.http == ("tcp:8500", "tcp:8080:interface=127.0.0.1")
    assert settings.push.cors_origins == ("https://a.example", "https://b.example")
    assert settings.catalog.cors_origins == settings.push.cors_origins
    assert settings.access_log
    assert settings.logs.token == settings.push.token == settings.web.token == "s3cret"


def test_the_command_line_wins_over_the_environment() -> None:
    environ = {
        "HOMEPORT_DATACENTER": "env-dc",
        "HOMEPORT_HTTP": "tcp:1",
        "HOMEPORT_ACCESS_LOG": "0",
    }
    options = parse(["--datacenter", "cli-dc", "--http=tcp:2"], environ)
    assert options.settings.catalog.datacenter == "cli-dc"
    assert options.settings.http == ("tcp:2",)  # the list is replaced, not extended
    assert not options.settings.access_log
    assert parse([], environ).settings.catalog.datacenter == "env-dc"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HOMEPORT_DNS_TTL": "soon"}, "--dns-ttl 'soon': expected a whole number of seconds"),
        ({"HOMEPORT_ACCESS_LOG": "maybe"}, "HOMEPORT_ACCESS_LOG='maybe': expected 1 or 0"),
        ({"HOMEPORT_CORS_ORIGIN": "ci.example"}, "--cors-origin 'ci.example': expected an origin"),
        (
            {"HOMEPORT_DOMAIN": "a" * 64 + ".example"},
            "--domain '" + "a" * 64 + ".example': not a DNS name",
        ),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        parse([], environ)
    assert exit.value.code == 1
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and message in line
    variable = next(iter(environ))
    assert variable in line


def test_stopping_the_dashboard_pool_does_not_wait_on_a_worker_that_waits_on_the_reactor() -> None:
    """A WSGI worker in blockingCallFromThread needs the reactor; the pool used to be
    joined on the reactor thread, so stopping the daemon mid-request hung for ever."""
    import threading

    from twisted.python.threadpool import ThreadPool

    from homeport.web.pool import ThreadPoolService

    from .memory import ThreadedMemoryReactor

    reactor = ThreadedMemoryReactor()
    pool = ThreadPool(minthreads=1, maxthreads=1)
    service = ThreadPoolService(pool, cast(IReactorFromThreads, reactor))
    service.startService()
    answered = threading.Event()
    inside = threading.Event()

    def request() -> None:  # what blockingCallFromThread does: ask, then wait
        inside.set()
        reactor.callFromThread(answered.set)
        answered.wait()

    pool.callInThread(request)
    assert inside.wait(5)
    returned: list[Any] = []
    stopper = threading.Thread(target=lambda: returned.append(service.stopService()))
    try:
        stopper.start()
        stopper.join(5)
        assert returned, "stopService blocked on the worker (the old deadlock)"
    finally:
        answered.set()  # so that a failure here does not leave the worker hanging
    [stopping] = returned
    reactor.drain(until=lambda: stopping.called)  # the reactor runs: worker done, joined
    assert stopping.called


def test_help_opens_with_the_command_a_user_types() -> None:
    """``twist homeport --help`` starts with one clean usage line, then the description."""
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == "Usage: twist [--log-format=text|json] homeport [options]"
    assert "plugin_options" not in result.stdout
    assert "--data-dir=" in rest and "HOMEPORT_<OPTION>" in rest


def test_a_container_advertising_its_own_address_is_warned_about(tmp_path: Path) -> None:
    """In a container, the auto-detected address is the bridge's (10.88.x.y): nobody
    else can reach it, so start-up says how to set the host's."""
    from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

    from homeport.catalog.api import Agent
    from homeport.tap import announce, container_runtime

    (tmp_path / "run").mkdir()
    assert container_runtime(tmp_path) is None
    (tmp_path / "run" / ".containerenv").write_text("")
    assert container_runtime(tmp_path) == "podman"
    agent = Agent("node", "id", "dc1", "10.88.0.7", 0.0)
    seen: list[LogEvent] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    try:
        for argv in ([], ["--advertise", "192.0.2.10"]):
            options = Options()
            options.parseOptions(["--data-dir", str(tmp_path / "d"), *argv])
            announce(options.settings, agent, tmp_path, exposed=False, root=tmp_path)
    finally:
        globalLogPublisher.removeObserver(observer)
    warnings = [formatEvent(e) for e in seen if "--advertise" in formatEvent(e)]
    assert warnings == [
        "Advertising 10.88.0.7, this podman container's own address, which other hosts "
        "cannot reach: give the host's address with --advertise (or HOMEPORT_ADVERTISE)"
    ]


def test_the_homeport_command_is_twist_homeport_with_twist_s_log_options_moved() -> None:
    from homeport.cli import twist_argv

    assert twist_argv(["--dns", "none"]) == ["homeport", "homeport", "--dns", "none"]
    assert twist_argv(["--http", "tcp:1", "--log-format", "json", "--log-level=warn"]) == [
        "homeport",
        "--log-format",
        "json",
        "--log-level=warn",
        "homeport",
        "--http",
        "tcp:1",
    ]


def test_catalog_etcd_options_become_the_catalog_s_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    options = parse(
        ["--catalog", "etcd://10.0.0.1:2379,etcd-2.lan:2379", "--etcd-ca", str(ca)],
        {"HOMEPORT_ETCD_PREFIX": "/team-a/", "HOMEPORT_AGENT_TTL": "5s"},
    )
    catalog = options.settings.catalog
    assert catalog.etcd_endpoints == ("https://10.0.0.1:2379", "https://etcd-2.lan:2379")
    assert (catalog.etcd_prefix, catalog.etcd_ca, catalog.agent_ttl) == ("/team-a/", ca, 5.0)
    assert catalog.reap_after == 72 * 3600
    plain = parse(["--catalog", "etcd://127.0.0.1:2379", "--reap-after", "30m"], {})
    assert plain.settings.catalog.etcd_endpoints == ("http://127.0.0.1:2379",)
    assert plain.settings.catalog.reap_after == 1800
    assert parse([], {}).settings.catalog.etcd_endpoints == ()  # SQLite, as before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--catalog", "consul://x:1"], "--catalog 'consul://x:1': use 'sqlite' or etcd://"),
        (["--catalog", "etcd://nohost"], "'nohost' is not HOST:PORT"),
        (["--catalog", "etcd://a:1", "--etcd-prefix", "homeport"], "--etcd-prefix 'homeport'"),
        (["--catalog", "etcd://a:1", "--etcd-cert", "/nonexistent"], "--etcd-cert '/nonexistent'"),
        (["--catalog", "etcd://a:1", "--agent-ttl", "1s"], "--agent-ttl '1s': from 2s to 1h"),
        (["--catalog", "etcd://a:1", "--reap-after", "soon"], "--reap-after 'soon': expected"),
    ],
)
def test_bad_etcd_options_are_one_line_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(argv, {})
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("homeport: error: ") and message in line


def test_host_networking_is_not_warned_about_and_a_veth_is(tmp_path: Path) -> None:
    """With ``--network host`` the detected address is on one of the host's interfaces
    (ifindex == iflink); in a bridged container it is on a veth end (they differ)."""
    from homeport.catalog.api import default_advertise
    from homeport.tap import interface_of, on_container_network

    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("192.0.2.254") is None  # nobody's
    assert on_container_network("192.0.2.254", tmp_path)  # unknown: warn
    address = default_advertise()
    name = interface_of(address)
    if name is None:
        pytest.skip("this machine has no routable IPv4 address")
    link = tmp_path / name
    link.mkdir()
    (link / "ifindex").write_text("4\n")
    (link / "iflink").write_text("4\n")
    assert not on_container_network(address, tmp_path)  # the host's own interface
    (link / "iflink").write_text("9\n")
    assert on_container_network(address, tmp_path)  # a veth pair's end
    (link / "iflink").write_text("4\n")
    (link / "tun_flags").write_text("0x1002\n")
    assert on_container_network(address, tmp_path)  # rootless networking's tun device
