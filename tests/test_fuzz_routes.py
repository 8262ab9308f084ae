"""Bad input never breaks the daemon: Hypothesis throws generated garbage at every face
of one real daemon and checks that each is answered with a 4xx (or Consul's own 500 for
the few client mistakes Consul answers so), that nothing is logged as an unexpected
error, that a refused write changed nothing, and that the process stays small.

The routes are not listed here: they are read from the site as ``tap.makeService``
wires it (:func:`homeport.http.site.faces`), so a route added later is walked too.
DNS (UDP and TCP), Engine.IO polling and the syslog listeners (RFC 5424/3164 over UDP
and TCP, RELP, JSON lines) get garbage of their own.  Bounded to a minute or two:
few examples per route, derandomized so every run (and CI) sends the same requests.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

from homeport.http.site import Face, faces
from homeport.part import IHomeportReactor
from homeport.tap import Options, makeService

from .daemon import Daemon

LOOPBACK = "interface=127.0.0.1"
ARGS = [
    "--dns",
    "127.0.0.1:0",
    "--syslog",
    f"udp:0:{LOOPBACK}",
    "--syslog",
    f"tcp:0:{LOOPBACK}",
    "--relp",
    f"tcp:0:{LOOPBACK}",
    "--json-lines",
    f"tcp:0:{LOOPBACK}",
    "--socketio-ping-interval",
    "2s",
    "--socketio-ping-timeout",
    "2s",
]

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: What the daemon must never log, whatever it is sent.
BROKEN = re.compile(r"Unexpected error|Traceback|Unhandled Error|Unhandled error")

#: The 500s Consul itself answers for a client's mistake (its RPC errors and go-bexpr's),
#: which homeport answers in Consul's words: a 500 with one of these texts is expected.
CONSUL_500S = re.compile(
    rb"^(No path to datacenter|Must provide node|Must provide address if SkipNodeUpdate"
    rb"|Failed to create boolean expression evaluator|Missing node registration"
    rb"|Missing check '|Check '.*' is in critical state|Invalid Behavior setting"
    rb"|Invalid Session TTL|Session TTL '|invalid session|Missing session"
    rb'|Node ".*" does not exist|Node .* is not registered|ServiceID ".*" does not exist'
    rb'|CheckID ".*" does not have associated TTL|ServiceID missing|CheckID missing'
    rb"|Service tagged address|Missing Query ID|Invalid prepared query|Bad Template"
    rb"|Bad Regexp|unknown variable accessed|ID must be empty|Cannot modify non-existent"
    rb"|name '.*' aliases|failed compiling template|a query template with an empty name"
    rb"|invalid coordinate|incompatible coordinate|Script checks"
    rb"|(encoded )?user event exceeds configured limit)"
)

#: Routes left out, each because a well-formed request to it ends the test, not because
#: of what garbage does to it.  Every name must still be a route (checked below).
SKIP = {"/v1/agent/leave": "shuts the agent down, as Consul's does"}


def site_faces() -> list[Face]:
    """The faces the daemon serves with ARGS, from a copy built (never started) here."""
    data = tempfile.mkdtemp(prefix="homeport-fuzz-routes-")
    options = Options()
    options.parseOptions(["--data-dir", data, "--advertise", "127.0.0.1", *ARGS])
    top: Any = makeService(options, reactor=cast(IHomeportReactor, MemoryReactorClock()))
    return faces(top.site.resource)


FACES = site_faces()
#: The daemon's RSS once started (KiB), to compare with at the end.
STARTED: dict[str, int] = {}
WALKED = [face for face in FACES if face.path not in SKIP]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(workdir=tmp_path_factory.mktemp("fuzz"), args=ARGS).start()
    daemon.request("PUT", "/v1/kv/fuzz/seed", b"seed")
    STARTED["rss"] = rss_kib(daemon)
    try:
        yield daemon
    finally:
        daemon.stop()


# -- a raw HTTP client: any bytes, any method -------------------------------------------


def send(daemon: Daemon, request: bytes, timeout: float = 20.0) -> tuple[int, bytes]:
    """The status and body (at most what came within a moment of the head) of *request*.

    Streams (event feeds, monitor, Engine.IO) send a head and keep going: the head is
    what counts, so reading stops shortly after it."""
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        s.settimeout(0.3)
        try:
            while len(answer) < 1 << 20 and (chunk := s.recv(65536)):
                answer += chunk
        except TimeoutError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match is not None, f"no HTTP answer to {request[:200]!r}: {answer[:200]!r}"
    return int(match.group(1)), answer.partition(b"\r\n\r\n")[2]


def http(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = [method + b" " + target + b" HTTP/1.1", b"Host: fuzz", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def quote(raw: bytes) -> bytes:
    """Percent-encode every byte but letters and digits (so NULs and bad UTF-8 get
    through the request line)."""
    return b"".join(bytes([c]) if chr(c).isalnum() else b"%%%02X" % c for c in raw)


# -- strategies ---------------------------------------------------------------------------

SPECIAL = [b"\x00", b"\xff\xfe", b"\xc3\x28", b"..", b"/", b"%", b"\xed\xa0\x80", b"a\x00b"]
#: Mostly short text and bytes, sometimes a huge run (one branch in five).
text_bytes = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.sampled_from(SPECIAL),
    st.text(alphabet="abc/._-:%\x00\u00e9\U0001f600", max_size=20).map(str.encode),
    st.tuples(
        st.integers(1_000, 30_000), st.sampled_from([b"x", b"\xff", b"%00", b"\xc3\xa9"])
    ).map(lambda t: t[1] * (t[0] // len(t[1]))),
)
numbers = st.sampled_from(
    [b"-1", b"1e3", b"0x10", b"18446744073709551616", b"99999999999999999999999", b"", b"nan"]
)
durations = st.sampled_from([b"-1s", b"1x", b"10", b"1e400s", b"999999999h", b"", b"\x00", b"0s"])
filters = st.sampled_from(
    [b"Node ==", b'Node == "x', b"((((", b"not", b"Service.Tags contains", b"a" * 20_000]
)
ARG_NAMES = [b"index", b"wait", b"filter", b"q", b"token", b"dc", b"recurse", b"keys"]
ARG_NAMES += [b"separator", b"cas", b"flags", b"acquire", b"release", b"passing", b"tag"]
ARG_NAMES += [b"pretty", b"stale", b"consistent", b"raw", b"limit", b"since", b"until"]
ARG_NAMES += [b"level", b"EIO", b"transport", b"sid", b"b64", b"enable", b"reason", b"note"]
ARG_NAMES += [b"node-meta", b"near", b"replace-existing-checks", b"name", b"ns", b"zzz"]
arg = st.tuples(
    st.one_of(st.sampled_from(ARG_NAMES), text_bytes),
    st.one_of(text_bytes, numbers, durations, filters),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["Name", "ID", "Node", "Address", "Service", "Check", "TTL", "KV"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
FIELDS = ["Name", "ID", "Node", "Address", "Service", "Check", "Checks", "TTL", "Interval"]
FIELDS += ["HTTP", "TCP", "Port", "Tags", "Meta", "Weights", "TaggedAddresses", "NodeMeta"]
FIELDS += ["Status", "Output", "ServiceID", "CheckID", "Behavior", "LockDelay", "NodeChecks"]
FIELDS += ["KV", "Verb", "Key", "Value", "Flags", "Index", "Session", "Coord", "Template"]
FIELDS += ["Definition", "Timeout", "Kind", "SkipNodeUpdate", "Passing", "Warning", "Vec"]
wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(["", "x", "-1s", "1e999", "\x00", "\ud800"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(FIELDS), st.integers() | st.text(max_size=5), max_size=3),
)
#: Real field names with values of the wrong type, as an object or a list of them (txn).
typed_wrong = st.dictionaries(st.sampled_from(FIELDS), wrong, min_size=1, max_size=5).flatmap(
    lambda d: st.sampled_from([d, [d], [{"KV": d}], {"Service": d}, {"Check": d}])
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    typed_wrong.map(lambda v: json.dumps(v).encode()),
    typed_wrong.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(1, 4000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 4000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 200_000).map(lambda n: json.dumps({"Name": "x" * n}).encode()),
    st.sampled_from([b"", b"\x00", b'{"Name": "a\x00b"}', b'{"Name": "\xff"}', b"null", b"42"]),
)
tokens = st.sampled_from([b"", b"\x00", b"bad token", b"x" * 5000, b"\xff"])
bad_methods = st.sampled_from([b"PATCH", b"FOO", b"TRACE", b"CONNECT", b"G\x01T", b"get"])


def instantiate(path: str, segments: list[bytes]) -> bytes:
    """*path* with each ``:name``/``*rest`` parameter replaced by one of *segments*."""
    parts = path.strip("/").split("/")
    out = [quote(segments.pop()) if p[:1] in (":", "*") else p.encode() for p in parts]
    return b"/" + b"/".join(out)


@st.composite
def requests(draw: st.DrawFn, face: Face) -> bytes:
    methods = list(face.methods) or [b"GET", b"POST", b"PUT", b"DELETE"]
    method = draw(st.one_of(st.sampled_from(methods), st.sampled_from([b"HEAD", b"OPTIONS"])))
    if draw(st.integers(0, 9)) == 0:
        method = draw(bad_methods)
    params = sum(part[:1] in (":", "*") for part in face.path.split("/"))
    path = instantiate(face.path, draw(st.lists(text_bytes, min_size=params, max_size=params)))
    if not face.methods and draw(st.booleans()):
        path += b"/" + quote(draw(text_bytes))
    args = draw(st.lists(arg, max_size=5))
    names = {name for name, _ in args}
    if b"index" in names or b"wait" in names:
        args.append((b"wait", b"10ms"))  # a blocking query that parks must end soon
    query = b"&".join(quote(name) + b"=" + quote(value) for name, value in args)
    headers = []
    if draw(st.booleans()):
        headers.append((b"X-Consul-Token", draw(tokens).replace(b"\x00", b"").strip()))
    if draw(st.booleans()):
        kind = [b"application/json", b"text/plain", b"application/octet-stream", b"x/\xff"]
        headers.append((b"Content-Type", draw(st.sampled_from(kind))))
    body = draw(bodies) if method not in (b"GET", b"HEAD") else b""
    return http(method, path + (b"?" + query if query else b""), headers, body)


# -- what must hold -------------------------------------------------------------------------

STATE = [
    "/v1/catalog/nodes",
    "/v1/catalog/services",
    "/v1/agent/services",
    "/v1/kv/?recurse",
    "/v1/query",
]


def state(daemon: Daemon) -> list[Any]:
    """The catalog, the agent's services and check IDs, the KV store and the queries."""
    seen: list[Any] = []
    for path in STATE:
        status, _, body = daemon.request("GET", path)
        seen.append((status, json.loads(body) if status == 200 else None))
    seen.append(sorted(daemon.get_json("/v1/agent/checks")))
    return seen


class Log:
    """The daemon's output since the last look."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.seen = len(daemon.output())

    def new(self) -> str:
        text = self.daemon.output()
        fresh, self.seen = text[self.seen :], len(text)
        return fresh


def rss_kib(daemon: Daemon) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1))


def assert_fine(status: int, body: bytes, request: bytes) -> None:
    assert status < 500 or CONSUL_500S.match(body), (status, body[:300], request[:300])


# -- HTTP -----------------------------------------------------------------------------------


def test_the_walk_covers_every_part_s_face() -> None:
    """The route table read from the site holds the API and every part's resources, and
    each route left out is still there."""
    paths = {face.path for face in FACES}
    assert {"/log", "/v1/logs", "/v1/events", "/metrics", "/ui", "/socket.io"} <= paths
    assert {"/v1/catalog/register", "/v1/kv/*key", "/v1/txn", "/v1/session/create"} <= paths
    assert set(SKIP) <= paths
    assert len(WALKED) > 60


@pytest.mark.parametrize("face", WALKED, ids=[f.path for f in WALKED])
def test_bad_input_to_a_route_is_refused_cleanly(target: Daemon, face: Face) -> None:
    """Garbage to the route is a 4xx (or Consul's own 500), logs no unexpected error,
    and a refused write leaves the catalog and KV store as they were."""
    log = Log(target)

    @FUZZ
    @given(request=requests(face))
    def check(request: bytes) -> None:
        writes = face.write or not face.methods
        before = state(target) if writes else None
        status, body = send(target, request)
        assert_fine(status, body, request)
        if before is not None and 400 <= status < 500:
            assert state(target) == before, request[:300]
        assert not BROKEN.search(log.new()), request[:300]

    check()


# -- DNS ------------------------------------------------------------------------------------


def dns_query(name: bytes, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\x00"
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", qtype, 1)


GOOD = dns_query(b"consul.service.consul")


def answers_a_good_query(daemon: Daemon) -> None:
    assert daemon.dns_port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(dns_query(b"consul.service.consul", ident=0x4242), ("127.0.0.1", daemon.dns_port))
        reply = s.recv(4096)
    assert reply[:2] == b"\x42\x42" and reply[3] & 0x0F == 0, reply


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from([GOOD, dns_query(b"a.b.node.consul", 33)])))
    for _ in range(draw(st.integers(1, 6))):
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    return bytes(packet[:cut]) + draw(st.binary(max_size=30))


packets = st.one_of(st.binary(max_size=600), mutated())


def test_dns_garbage_over_udp_and_tcp_is_answered_or_ignored(target: Daemon) -> None:
    """Random and mutated packets get an answer or silence, never a crash; a good query
    is answered afterwards."""
    assert target.dns_port is not None
    port = target.dns_port
    log = Log(target)

    @settings(FUZZ, max_examples=150)
    @given(packet=packets, over_tcp=st.booleans(), length=st.none() | st.integers(0, 65535))
    def check(packet: bytes, over_tcp: bool, length: int | None) -> None:
        if over_tcp:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(struct.pack(">H", len(packet) if length is None else length) + packet)
                s.settimeout(0.2)
                try:
                    s.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    pass
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.05)
                s.sendto(packet, ("127.0.0.1", port))
                try:
                    s.recv(65536)
                except TimeoutError:
                    pass
        assert not BROKEN.search(log.new()), packet

    check()
    answers_a_good_query(target)


# -- Engine.IO ------------------------------------------------------------------------------


def test_engine_io_polling_garbage_is_a_4xx(target: Daemon) -> None:
    """A real session's sid with bad packets posted, bad query values and bad methods:
    each is answered (never a 5xx) and nothing is logged as unexpected."""
    status, body = send(target, http(b"GET", b"/socket.io/?EIO=4&transport=polling", [], b""))
    assert status == 200, body
    sid = json.loads(body[1:].split(b"\x1e")[0])["sid"].encode()
    log = Log(target)
    payloads = st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from([b"4", b"40", b"42[", b'42["a",', b"2", b"6", b"b", b"1"])).map(
            b"\x1e".join
        ),
        st.integers(1, 3000).map(lambda n: b'42["e",' + b"[" * n + b"]" * n + b"]"),
    )

    @settings(FUZZ, max_examples=80)
    @given(
        payload=payloads,
        eio=st.sampled_from([b"4", b"3", b"x", b"", b"\x00"]),
        transport=st.sampled_from([b"polling", b"websocket", b"x", b""]),
        own_sid=st.booleans(),
        method=st.sampled_from([b"POST", b"GET", b"PUT", b"OPTIONS"]),
    )
    def check(payload: bytes, eio: bytes, transport: bytes, own_sid: bool, method: bytes) -> None:
        query = b"EIO=" + quote(eio) + b"&transport=" + quote(transport)
        query += b"&sid=" + (sid if own_sid else quote(payload[:20]))
        request = http(method, b"/socket.io/?" + query, [], payload if method == b"POST" else b"")
        status, answer = send(target, request)
        assert status < 500, (status, answer[:300], request[:300])
        assert not BROKEN.search(log.new()), request[:300]

    check()


# -- syslog ---------------------------------------------------------------------------------


def bound_port(daemon: Daemon, option: str, kind: str) -> int:
    pattern = rf"--{option} '{kind}:0[^']*': .* listening on .* port (\d+)"
    match = re.search(pattern, daemon.output())
    assert match is not None, daemon.output()
    return int(match.group(1))


syslog_garbage = st.one_of(
    st.binary(max_size=2000),
    st.sampled_from(
        [
            b"<999>1 - - - - - - x\n",
            b"<13>1 9999-99-99T99:99:99Z h a p m [bad sd\n",
            b"99999999999 <13>1 - - - - - -\n",
            b"1 syslog 5 open\n",
            b"1 open 99999999999 x\n",
            b"x open 0\n",
            b'{"a":' * 2000 + b"}" * 2000 + b"\n",
            b'{"message": "\xff\x00"}\n',
            b"[1,2,\n",
            b"\x00" * 100 + b"\n",
            b"<13>Dec 99 99:99:99 host app: x\n",
        ]
    ),
)


@pytest.mark.parametrize(
    ("option", "kind"),
    [("syslog", "udp"), ("syslog", "tcp"), ("relp", "tcp"), ("json-lines", "tcp")],
)
def test_syslog_listeners_take_garbage_and_keep_serving(
    target: Daemon, option: str, kind: str
) -> None:
    """Garbage to each syslog listener is dropped or recorded, never an unexpected
    error; the daemon still answers HTTP afterwards."""
    port = bound_port(target, option, kind)
    log = Log(target)

    @settings(FUZZ, max_examples=40)
    @given(chunks=st.lists(syslog_garbage, min_size=1, max_size=4))
    def check(chunks: list[bytes]) -> None:
        if kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for chunk in chunks:
                    s.sendto(chunk[:65000], ("127.0.0.1", port))
        else:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                try:
                    for chunk in chunks:
                        s.sendall(chunk)
                    s.settimeout(0.05)
                    s.recv(65536)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    pass  # a listener may close on garbage (RELP does, with a reason)
        assert not BROKEN.search(log.new()), chunks

    check()
    assert target.request("GET", "/v1/status/leader")[0] == 200
    assert not BROKEN.search(log.new())


# -- after all of it ------------------------------------------------------------------------


def test_after_the_walk_the_daemon_serves_and_stayed_small(target: Daemon) -> None:
    """Still answering, nothing unexpected logged over the whole run, RSS bounded."""
    assert target.get_json("/v1/kv/fuzz/seed")[0]["Key"] == "fuzz/seed"
    assert target.process is not None and target.process.poll() is None
    grown = rss_kib(target) - STARTED["rss"]
    assert grown < 150 * 1024, f"RSS grew by {grown} KiB"
    assert not BROKEN.search(target.output())
