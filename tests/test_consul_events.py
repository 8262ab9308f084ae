"""User events (issue #14, item 9): ``PUT /v1/event/fire/:name`` and ``GET /v1/event/list``
as Consul's agent answers them, with py-consul and curl against the real daemon, and the
pure rules of :mod:`homeport.catalog.events`."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.request
from typing import Any

import consul
import pytest

from homeport.catalog.events import (
    SIZE_LIMIT,
    EventBuffer,
    EventTooLarge,
    UserEvent,
    accepts,
    check_size,
    consul_encoded_size,
    uuid_index,
)

from .daemon import Daemon, DaemonFactory


def client(daemon: Daemon, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port, token=token)


def curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], check=True, capture_output=True, text=True
    ).stdout


# -- the pure rules ------------------------------------------------------------------


def test_the_index_is_consuls_uuid_to_uint64() -> None:
    """The two 64-bit halves of the ID XORed, as Consul's ``uuidToUint64``."""
    event_id = "b54fe110-7af5-cafc-d1fb-afc8ba432b1c"
    assert uuid_index(event_id) == 0xB54FE1107AF5CAFC ^ 0xD1FBAFC8BA432B1C
    buffer = EventBuffer()
    assert buffer.index() == 1  # no event: 1, so a watch does not spin on 0


def test_sizes_are_the_msgpack_lengths_serf_checks() -> None:
    """The event as Consul encodes it (newer msgpack: str8, bin) and Serf's message
    (older msgpack: no str8, bytes as strings), checked against a msgpack encoder."""
    msgpack = pytest.importorskip("msgpack")
    for n in (0, 1, 31, 32, 100, 255, 256, 300):
        event = UserEvent(
            id="b54fe110-7af5-cafc-d1fb-afc8ba432b1c",
            name="deploy" * (n // 6 + 1),
            payload=b"x" * n or None,
            service_filter="web" if n % 2 else "",
            tag_filter="v" * n if n % 2 else "",
        )
        fields: dict[str, Any] = {"ID": event.id, "n": event.name}
        if event.payload:
            fields["p"] = event.payload
        for key, value in (("sf", event.service_filter), ("tf", event.tag_filter)):
            if value:
                fields[key] = value
        fields["v"] = 1
        assert consul_encoded_size(event) == len(msgpack.packb(fields, use_bin_type=True))


def test_serf_refuses_an_event_over_512_bytes() -> None:
    small = UserEvent(id="b54fe110-7af5-cafc-d1fb-afc8ba432b1c", name="deploy", payload=b"x" * 300)
    check_size(small, 1)
    large = UserEvent(id=small.id, name="deploy", payload=b"x" * 600)
    with pytest.raises(EventTooLarge) as refused:
        check_size(large, 1)
    assert str(refused.value) == (
        f"user event exceeds configured limit of {SIZE_LIMIT} bytes before encoding"
    )
    # Between the two checks: small enough as it is, too large once Serf wraps it.
    between = UserEvent(id=small.id, name="deploy", payload=b"x" * 420)
    with pytest.raises(EventTooLarge, match="encoded user event exceeds configured limit"):
        check_size(between, 1)


def test_filters_match_as_consuls_agent_does() -> None:
    services = [("web-1", ("v1", "primary")), ("db", ())]

    def takes(node_filter: str = "", service_filter: str = "", tag_filter: str = "") -> bool:
        event = UserEvent("", "e", None, node_filter, service_filter, tag_filter)
        return accepts(event, "node-a", services)

    assert takes()
    assert takes(node_filter="node-") and not takes(node_filter="^other$")
    assert takes(service_filter="web") and not takes(service_filter="^api")
    assert takes(service_filter="web", tag_filter="^prim")
    assert not takes(service_filter="db", tag_filter="v1")  # the tag must be db's
    assert not takes(service_filter="^web$")  # matched against the service ID


def test_remote_exec_events_are_not_kept() -> None:
    buffer = EventBuffer()
    fired, kept = buffer.fire(UserEvent(id="", name="_rexec"), "n", [])
    assert fired.name == "_rexec" and not kept
    assert buffer.events() == []
    assert buffer.clock == 2  # it was fired all the same


def test_the_buffer_keeps_the_last_256() -> None:
    buffer = EventBuffer()
    for n in range(300):
        buffer.fire(UserEvent(id="", name=f"e{n}"), "n", [])
    events = buffer.events()
    assert len(events) == 256
    assert events[0].name == "e44" and events[-1].name == "e299"
    assert [e.ltime for e in events[:2]] == [45, 46]


# -- the real daemon -------------------------------------------------------------------


def test_py_consul_fires_and_lists_events(daemon: Daemon) -> None:
    c = client(daemon)
    index, events = c.event.list()
    assert (index, events) == ("1", [])
    fired = c.event.fire("deploy", "v1.2.3")
    assert set(fired) == {
        "ID",
        "Name",
        "Payload",
        "NodeFilter",
        "ServiceFilter",
        "TagFilter",
        "Version",
        "LTime",
    }
    assert fired["Name"] == "deploy" and fired["Version"] == 1
    assert fired["LTime"] == 0  # as Consul's fire answers: the clock is set on receipt
    assert base64.b64decode(fired["Payload"]) == b"v1.2.3"
    c.event.fire("restart")
    index, events = c.event.list()
    assert [(e["Name"], e["Payload"], e["LTime"]) for e in events] == [
        ("deploy", b"v1.2.3", 1),
        ("restart", None, 2),
    ]
    assert int(index) == uuid_index(events[-1]["ID"])
    index, events = c.event.list(name="deploy")
    assert [e["ID"] for e in events] == [fired["ID"]]
    assert int(index) == uuid_index(fired["ID"])


def test_a_watch_loop_blocks_until_an_event_of_its_name(daemon: Daemon) -> None:
    """A loop written as py-consul users write it: it parks while nothing new comes,
    wakes on an event of its name, and not on another name's."""
    c = client(daemon)
    seen: list[str] = []
    requests = 0

    def watch() -> None:
        nonlocal requests
        index = None
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            requests += 1
            index, events = c.event.list(name="deploy", index=index, wait="3s")
            seen[:] = [e["Payload"].decode() for e in events]
            if "v2" in seen:
                return

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(1.0)
    c.event.fire("other", "x")  # another name: the watch stays parked
    time.sleep(0.5)
    started = time.monotonic()
    c.event.fire("deploy", "v2")
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert seen == ["v2"]
    assert requests <= 3  # the first read, the parked one (maybe one timed out)


def test_a_blocking_list_times_out_with_the_same_index(daemon: Daemon) -> None:
    c = client(daemon)
    c.event.fire("deploy")
    index, _ = c.event.list()
    started = time.monotonic()
    again, events = c.event.list(index=index, wait="1s")
    assert 0.9 < time.monotonic() - started < 5
    assert again == index and len(events) == 1
    # Not the index of the list (Consul's index is not monotonic): answered at once.
    started = time.monotonic()
    c.event.list(index=str(int(index) ^ 1), wait="5s")
    assert time.monotonic() - started < 2


def test_fire_with_curl_filters_and_refusals(daemon: Daemon) -> None:
    url = daemon.url
    c = client(daemon)
    c.agent.service.register("web", service_id="web-1", tags=["v1"])
    fired = json.loads(curl("-X", "PUT", "--data", "go", f"{url}/v1/event/fire/deploy?node=^test"))
    assert fired["NodeFilter"] == "^test" and fired["Payload"] == "Z28="
    curl("-X", "PUT", f"{url}/v1/event/fire/elsewhere?node=^other$")
    curl("-X", "PUT", f"{url}/v1/event/fire/tagged?service=web&tag=v1")
    curl("-X", "PUT", f"{url}/v1/event/fire/untagged?service=web&tag=v9")
    curl("-X", "PUT", f"{url}/v1/event/fire/team/deploy")  # the rest of the path is the name
    names = [e["Name"] for e in json.loads(curl(f"{url}/v1/event/list"))]
    # Fired everywhere, kept only where the filters take this agent:
    assert names == ["deploy", "tagged", "team/deploy"]

    def status(path: str, *args: str) -> tuple[str, str]:
        out = curl("-X", "PUT", "-o", "-", "-w", "\n%{http_code}", *args, url + path)
        body, _, code = out.rpartition("\n")
        return code, body

    assert status("/v1/event/fire/") == ("400", "Missing name")
    assert status("/v1/event/fire/x?tag=v1") == (
        "500",
        "Cannot provide tag filter without service filter",
    )
    code, body = status("/v1/event/fire/x?service=(")
    assert code == "500" and body.startswith("Invalid service filter: error parsing regexp: ")
    assert status("/v1/event/fire/x", "--data", "x" * 600) == (
        "500",
        "user event exceeds configured limit of 512 bytes before encoding",
    )
    assert status("/v1/event/fire/x?dc=dc2") == ("500", "No path to datacenter")
    code, _ = status("/v1/event/list")  # a PUT
    assert code == "405"


def test_fired_events_go_out_on_the_push_hub(daemon: Daemon) -> None:
    """An SSE subscriber of ``consul-event`` sees each kept event, in Consul's shape."""
    lines: list[str] = []
    request = urllib.request.Request(daemon.url + "/v1/events?topic=consul-event")

    def listen() -> None:
        with urllib.request.urlopen(request, timeout=20) as stream:
            for raw in stream:
                lines.append(raw.decode().rstrip("\n"))
                if lines[-1].startswith("data:"):
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(1.0)
    fired = client(daemon).event.fire("deploy", "v3")
    thread.join(15)
    assert "event: consul-event" in lines
    data = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
    assert data["ID"] == fired["ID"] and data["LTime"] == 1
    assert base64.b64decode(data["Payload"]) == b"v3"


def test_firing_needs_the_token(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    with pytest.raises(consul.ACLPermissionDenied):
        client(daemon).event.fire("deploy")
    assert client(daemon, token="s3cret").event.fire("deploy")["Name"] == "deploy"
    _, events = client(daemon).event.list()  # reads are open, as every read
    assert [e["Name"] for e in events] == ["deploy"]
