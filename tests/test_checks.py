"""Health checks in pieces: who may register script checks, how a script is run and
read, and the redirects an HTTP check follows (Consul's rules, Go's ``http.Client``'s).

Scripts here are real child processes; the API tests run in memory.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from twisted.web.http_headers import Headers

from homeport import catalog
from homeport.catalog import consul
from homeport.catalog.checks import (
    MAX_REDIRECTS,
    OUTPUT_MAX,
    Hop,
    OutputTail,
    ScriptChecksDisabled,
    ScriptPolicy,
    ScriptRunner,
    TooManyRedirects,
    redirect_method,
    redirected,
    script_status,
)
from homeport.catalog.errors import BadRequest
from homeport.catalog.model import CRITICAL, PASSING, WARNING, Check, CheckDefinition, Source

from .memory import APITestCase

REMOTE = (
    "Scripts are disabled on this agent from remote calls; to enable, configure "
    "'enable_script_checks' to true"
)
LOCAL = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)
PY = sys.executable


# -- who may register them ---------------------------------------------------------------


def script(source: Source = "api") -> Check:
    return Check(
        node="n",
        check_id="c",
        name="c",
        definition=CheckDefinition(args=("true",), interval=10.0),
        source=source,
    )


def test_consuls_two_flags_make_the_policy() -> None:
    def policy(remote: bool, local: bool) -> ScriptPolicy:
        settings = catalog.Settings(enable_script_checks=remote, enable_local_script_checks=local)
        return ScriptPolicy.from_settings(settings)

    assert policy(False, False) == ScriptPolicy(remote=False, local=False)
    assert policy(True, False) == ScriptPolicy(remote=True, local=True)
    assert policy(False, True) == ScriptPolicy(remote=False, local=True)
    assert policy(True, True) == ScriptPolicy(remote=True, local=True)


def test_refusals_are_consuls_own_words() -> None:
    off = ScriptPolicy()
    assert str(off.refusal(script("api"))) == REMOTE
    assert str(off.refusal(script("config"))) == LOCAL
    local = ScriptPolicy(local=True)
    assert local.refusal(script("config")) is None
    assert str(local.refusal(script("api"))) == REMOTE
    assert ScriptPolicy(remote=True, local=True).refusal(script("api")) is None
    # Not a script check: nothing to refuse.
    ttl = Check(node="n", check_id="t", name="t", definition=CheckDefinition(ttl=5.0))
    assert off.refusal(ttl) is None
    with pytest.raises(ScriptChecksDisabled):
        off.vet([ttl, script()])


def test_args_and_script_args_make_a_script_check() -> None:
    for body in (
        {"Name": "s", "Args": ["/bin/true"], "Interval": "10s"},
        {"name": "s", "script_args": ["/bin/true"], "interval": "10s"},
        {"Name": "s", "ScriptArgs": ["/bin/true"], "Interval": "10s", "Timeout": "2s"},
    ):
        check = consul.agent_check(consul.CHECK.decode(body), "n")
        assert check.type == "script"
        assert check.definition.args == ("/bin/true",)
        assert check.definition.interval == 10.0
        as_json = consul.check_json(check)
        assert as_json["Type"] == "script"
        assert as_json["Definition"]["ScriptArgs"] == ["/bin/true"]


def test_a_script_check_needs_an_interval() -> None:
    with pytest.raises(BadRequest, match="Interval must be > 0 for Script"):
        consul.agent_check(consul.CHECK.decode({"Name": "s", "Args": ["true"]}), "n")


# -- running them -------------------------------------------------------------------------


def run(args: list[str], timeout: float = 10.0) -> tuple[str, str]:
    return ScriptRunner(reactor=None).run_blocking(args, timeout)


def test_the_exit_code_is_the_status() -> None:
    assert [script_status(code) for code in (0, 1, 2, 127, -9)] == [
        PASSING,
        WARNING,
        CRITICAL,
        CRITICAL,
        CRITICAL,
    ]
    assert run([PY, "-c", "print('all good')"]) == (PASSING, "all good\n")
    assert run(["sh", "-c", "echo slow; exit 1"]) == (WARNING, "slow\n")
    assert run(["sh", "-c", "echo down >&2; exit 2"]) == (CRITICAL, "down\n")
    assert run(["sh", "-c", "kill -9 $$"]) == (CRITICAL, "")


def test_stdout_and_stderr_are_one_output_in_order() -> None:
    code = "import sys; print('a', flush=True); print('b', file=sys.stderr, flush=True); print('c')"
    assert run([PY, "-c", code]) == (PASSING, "a\nb\nc\n")


def test_the_output_keeps_its_last_4_kb() -> None:
    status, output = run([PY, "-c", "print('x' * 5000 + 'END')"])
    assert status == PASSING
    head, _, kept = output.partition("\n...\n")
    assert head == f"Captured {OUTPUT_MAX} of 5004 bytes"
    assert len(kept) == OUTPUT_MAX
    assert kept.endswith("xEND\n")
    tail = OutputTail(4)
    for chunk in (b"ab", b"cdef", b"g"):
        tail.write(chunk)
    assert tail.text() == "Captured 4 of 7 bytes\n...\ndefg"


def test_a_script_that_cannot_start_says_why_as_go_does(tmp_path: Path) -> None:
    assert run(["no-such-command-anywhere"]) == (
        CRITICAL,
        'exec: "no-such-command-anywhere": executable file not found in $PATH',
    )
    missing = tmp_path / "missing"
    assert run([str(missing)]) == (CRITICAL, f"fork/exec {missing}: no such file or directory")
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\nexit 0\n")
    assert run([str(plain)]) == (CRITICAL, f"fork/exec {plain}: permission denied")
    plain.chmod(plain.stat().st_mode | stat.S_IXUSR)
    assert run([str(plain)]) == (PASSING, "")


def gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_timeout_kills_the_script_and_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    shell = f"sleep 60 & echo $! > {pidfile}; echo started; wait"
    began = time.monotonic()
    status, output = run(["sh", "-c", shell], timeout=0.5)
    assert time.monotonic() - began < 5
    assert (status, output) == (CRITICAL, "Timed out (500ms) running check\n\nstarted\n")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)
    assert run(["sleep", "5"], timeout=0.2) == (CRITICAL, "Timed out (200ms) running check")


def test_a_script_that_closes_its_output_still_times_out() -> None:
    """The timeout covers the process, not only its output (as Go's cmd.Wait)."""
    code = "import os, time; os.close(1); os.close(2); time.sleep(30)"
    assert run([PY, "-c", code], timeout=0.3) == (CRITICAL, "Timed out (300ms) running check")


def test_stopping_the_runner_kills_running_scripts() -> None:
    runner = ScriptRunner(reactor=None)
    result: list[tuple[str, str]] = []
    thread = threading.Thread(
        target=lambda: result.append(runner.run_blocking(["sleep", "60"], 60.0))
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not runner._processes and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert result and result[0][0] == CRITICAL


def test_the_environment_and_working_directory_are_the_agents() -> None:
    os.environ["HOMEPORT_TEST_SCRIPT_VAR"] = "seen"
    try:
        status, output = run(["sh", "-c", 'echo "$HOMEPORT_TEST_SCRIPT_VAR $PWD"'])
    finally:
        del os.environ["HOMEPORT_TEST_SCRIPT_VAR"]
    assert (status, output) == (PASSING, f"seen {os.getcwd()}\n")


# -- HTTP redirects, as Go's http.Client follows them ----------------------------------------


def test_which_answers_are_followed_and_with_what_method() -> None:
    assert redirect_method(301, "GET") == "GET"
    assert redirect_method(302, "HEAD") == "HEAD"
    assert redirect_method(302, "POST") == "GET"
    assert redirect_method(303, "PUT") == "GET"
    assert redirect_method(307, "POST") == "POST"
    assert redirect_method(308, "PUT") == "PUT"
    for code in (200, 300, 304, 305, 404):
        assert redirect_method(code, "GET") is None


def first(method: str = "GET", url: str = "http://a.example:8080/x/y", body: str = "") -> Hop:
    headers = Headers(
        {
            b"user-agent": [b"Consul Health Check"],
            b"authorization": [b"Bearer s"],
            b"x-custom": [b"1"],
        }
    )
    return Hop(method, url, headers, body)


def test_a_redirect_resolves_its_location_and_drops_the_body_unless_307_or_308() -> None:
    start = first("POST", body="payload")
    hop = redirected(start, start, 302, "../z?q=1")
    assert (hop.method, hop.url, hop.body) == ("GET", "http://a.example:8080/z?q=1", "")
    assert hop.headers.getRawHeaders(b"x-custom") == [b"1"]
    assert hop.headers.getRawHeaders(b"referer") == [b"http://a.example:8080/x/y"]
    kept = redirected(start, start, 307, "/again")
    assert (kept.method, kept.url, kept.body) == ("POST", "http://a.example:8080/again", "payload")


def test_credentials_go_only_to_the_same_host_or_below_it() -> None:
    start = first()
    same = redirected(start, start, 302, "http://a.example:9090/")
    assert same.headers.getRawHeaders(b"authorization") == [b"Bearer s"]
    below = redirected(start, start, 302, "http://api.a.example/")
    assert below.headers.getRawHeaders(b"authorization") == [b"Bearer s"]
    away = redirected(start, start, 302, "http://b.example/")
    assert not away.headers.hasHeader(b"authorization")
    assert away.headers.getRawHeaders(b"x-custom") == [b"1"]
    # Once dropped, they stay dropped, even back on the first host.
    back = redirected(away, start, 302, "http://a.example:8080/")
    assert not back.headers.hasHeader(b"authorization")


def test_a_custom_host_survives_relative_redirects_only() -> None:
    start = first()
    start.headers.setRawHeaders(b"host", [b"virtual.example"])
    relative = redirected(start, start, 301, "/elsewhere")
    assert relative.headers.getRawHeaders(b"host") == [b"virtual.example"]
    absolute = redirected(start, start, 301, "http://a.example:8080/elsewhere")
    assert not absolute.headers.hasHeader(b"host")


def test_no_referer_from_https_to_http_and_none_with_user_info() -> None:
    start = first(url="https://user:pw@a.example/x")
    down = redirected(start, start, 302, "http://a.example/x")
    assert not down.headers.hasHeader(b"referer")
    up = redirected(start, start, 302, "https://a.example/y")
    assert up.headers.getRawHeaders(b"referer") == [b"https://a.example/x"]


def test_the_tenth_redirect_is_refused_in_gos_words() -> None:
    assert MAX_REDIRECTS == 10
    error = TooManyRedirects("GET", "/hop/10")
    assert str(error) == 'Get "/hop/10": stopped after 10 redirects'
    assert (
        str(TooManyRedirects("POST", "http://x/")) == 'Post "http://x/": stopped after 10 redirects'
    )


# -- the API, in memory ---------------------------------------------------------------------


SCRIPT = {"Name": "disk", "Args": ["/bin/true"], "Interval": "10s"}


class ScriptChecksOffTests(APITestCase):
    def test_a_script_check_is_refused_with_consuls_error(self) -> None:
        code, _, body = self.request("PUT", "/v1/agent/check/register", SCRIPT)
        assert (code, body.decode()) == (500, REMOTE)
        code, _, body = self.request(
            "PUT", "/v1/agent/service/register", {"Name": "web", "Check": SCRIPT}
        )
        assert (code, body.decode()) == (500, REMOTE)
        code, _, body = self.request(
            "PUT",
            "/v1/agent/service/register",
            {"Name": "web", "Checks": [{"TTL": "10s"}, {"ScriptArgs": ["x"], "Interval": "1s"}]},
        )
        assert (code, body.decode()) == (500, REMOTE)
        assert self.get("/v1/agent/checks") == {}
        assert self.get("/v1/agent/services") == {}

    def test_validation_comes_first_as_in_consul(self) -> None:
        code, _, body = self.request(
            "PUT", "/v1/agent/check/register", {"Name": "s", "Args": ["/bin/true"]}
        )
        assert code == 400
        assert body.startswith(b"Invalid check: Interval must be > 0")


class LocalScriptChecksTests(APITestCase):
    args = ["--enable-local-script-checks"]

    def test_the_api_is_still_refused(self) -> None:
        code, _, body = self.request("PUT", "/v1/agent/check/register", SCRIPT)
        assert (code, body.decode()) == (500, REMOTE)


class ScriptChecksOnTests(APITestCase):
    args = ["--enable-script-checks"]

    def test_a_script_check_registers_and_shows_its_args(self) -> None:
        self.put("/v1/agent/check/register", {**SCRIPT, "Timeout": "3s"})
        self.put(
            "/v1/agent/service/register",
            {"name": "web", "check": {"args": ["/bin/true"], "interval": "5s"}},
        )
        checks = self.get("/v1/agent/checks")
        assert checks["disk"]["Type"] == "script"
        assert checks["disk"]["Timeout"] == "3s"
        assert checks["disk"]["Definition"]["ScriptArgs"] == ["/bin/true"]
        assert checks["disk"]["Status"] == "critical"
        assert checks["service:web"]["Type"] == "script"
