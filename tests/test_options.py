"""Options from the command line and from HOMEPORT_* environment variables."""

from __future__ import annotations

from typing import Any

import pytest

from homeport.tap import Options


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
            "HOMEPORT_DNS": "none",
            "HOMEPORT_DNS_TTL": "30",
            "HOMEPORT_HTTP": "tcp:8500 tcp:8080:interface=127.0.0.1",
            "HOMEPORT_CORS_ORIGIN": "https://a.example https://b.example",
            "HOMEPORT_ACCESS_LOG": "true",
            "HOMEPORT_HEALTHCHECK_URL": "http://127.0.0.1:8500/",  # not an option: ignored
        },
    )
    assert options["token"] == "s3cret"
    assert options["data-dir"] == "/var/lib/hp"
    assert options["dns"] is None and options["dns-ttl"] == 30
    assert options["http"] == ["tcp:8500", "tcp:8080:interface=127.0.0.1"]
    assert options["cors-origin"] == ["https://a.example", "https://b.example"]
    assert options["access-log"]


def test_the_command_line_wins_over_the_environment() -> None:
    environ = {
        "HOMEPORT_DATACENTER": "env-dc",
        "HOMEPORT_HTTP": "tcp:1",
        "HOMEPORT_ACCESS_LOG": "0",
    }
    options = parse(["--datacenter", "cli-dc", "--http=tcp:2"], environ)
    assert options["datacenter"] == "cli-dc"
    assert options["http"] == ["tcp:2"]  # the list is replaced, not extended
    assert not options["access-log"]
    assert parse([], environ)["datacenter"] == "env-dc"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HOMEPORT_DNS_TTL": "soon"}, "--dns-ttl 'soon': expected a whole number of seconds"),
        ({"HOMEPORT_ACCESS_LOG": "maybe"}, "HOMEPORT_ACCESS_LOG='maybe': expected 1 or 0"),
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

    from homeport.tap import ThreadPoolService

    from .memory import ThreadedMemoryReactor

    reactor = ThreadedMemoryReactor()
    pool = ThreadPool(minthreads=1, maxthreads=1)
    service = ThreadPoolService(pool, reactor)
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
