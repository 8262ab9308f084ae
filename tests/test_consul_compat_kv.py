"""Blocking KV watches against the real daemon, written the way real clients write them.

py-consul's watch loop (read, then ``kv.get(key, index=<X-Consul-Index>, wait=...)`` in a
loop) and Patroni's (``index=`` the leader key's ModifyIndex from the body) must park
until the key changes, not spin: Consul answers a key's read with its ModifyIndex
(agent/consul/kvs_endpoint.go, KVS.Get).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Any

import consul
import pytest

from .daemon import Daemon

#: How long each watch loop runs, and its ?wait=: a loop that parks makes about
#: LOOP / WAIT requests; one that spins, thousands.
LOOP = 3.0
WAIT = "1s"
MOST_REQUESTS = 6


@pytest.fixture
def client(agent: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def watch_for(seconds: float, get: Any) -> tuple[int, Any]:
    """Call *get(index)* in a loop for *seconds*; (requests made, last answer)."""
    requests = 0
    answer = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = get()
        requests += 1
    return requests, answer


def test_py_consuls_watch_loop_parks(client: consul.Consul) -> None:
    """``index, data = kv.get(key, index=index, wait=...)``: the header's index."""
    client.kv.put("pyconsul/leader", "node-a")
    client.kv.put("pyconsul/unrelated", "x")
    index, data = client.kv.get("pyconsul/leader")
    assert data is not None
    assert int(index) == data["ModifyIndex"]
    state = {"index": index}

    def get() -> Any:
        state["index"], found = client.kv.get("pyconsul/leader", index=state["index"], wait=WAIT)
        return found

    requests, last = watch_for(LOOP, get)
    assert requests <= MOST_REQUESTS
    assert last["Value"] == b"node-a"
    assert state["index"] == index


def test_patronis_watch_on_the_modify_index_parks(client: consul.Consul) -> None:
    """Patroni: ``kv.get(leader, index=<leader's ModifyIndex>, wait=...)``, and a
    different index in the answer means the leader changed."""
    client.kv.put("service/pg/leader", "node-a")
    client.kv.put("service/pg/members/node-a", "{}")
    _, leader = client.kv.get("service/pg/leader")
    version = leader["ModifyIndex"]
    changed: list[bool] = []

    def get() -> Any:
        index, _ = client.kv.get("service/pg/leader", index=version, wait=WAIT)
        changed.append(str(index) != str(version))
        return index

    requests, _ = watch_for(LOOP, get)
    assert requests <= MOST_REQUESTS
    assert not any(changed)


def test_a_recursive_watch_parks(client: consul.Consul) -> None:
    client.kv.put("cluster/a", "1")
    client.kv.put("cluster/b", "2")
    client.kv.put("elsewhere", "x")
    index, entries = client.kv.get("cluster/", recurse=True)
    assert int(index) == max(e["ModifyIndex"] for e in entries)
    state = {"index": index}

    def get() -> Any:
        client.kv.put("elsewhere", str(time.monotonic()))  # other keys keep changing
        state["index"], found = client.kv.get(
            "cluster/", recurse=True, index=state["index"], wait=WAIT
        )
        return found

    requests, _ = watch_for(LOOP, get)
    assert requests <= MOST_REQUESTS


def wait_in_thread(get: Any) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(get()), daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.parametrize("recurse", [False, True])
def test_a_change_wakes_the_watch(client: consul.Consul, recurse: bool) -> None:
    prefix = f"wake-{recurse}/"
    client.kv.put(prefix + "leader", "node-a")
    key = prefix if recurse else prefix + "leader"
    index, _ = client.kv.get(key, recurse=recurse)
    thread, answers = wait_in_thread(
        lambda: client.kv.get(key, recurse=recurse, index=index, wait="30s")
    )
    time.sleep(0.5)
    assert thread.is_alive()  # parked
    started = time.monotonic()
    client.kv.put(prefix + "leader", "node-b")
    thread.join(10)
    assert time.monotonic() - started < 5
    [(new_index, found)] = answers
    entry = found[0] if recurse else found
    assert entry["Value"] == b"node-b"
    assert int(new_index) == entry["ModifyIndex"] > int(index)


def test_deleting_a_key_wakes_a_recursive_watch(client: consul.Consul) -> None:
    client.kv.put("gone/a", "1")
    client.kv.put("gone/b", "2")
    index, _ = client.kv.get("gone/", recurse=True)
    thread, answers = wait_in_thread(
        lambda: client.kv.get("gone/", recurse=True, index=index, wait="30s")
    )
    time.sleep(0.5)
    assert thread.is_alive()
    client.kv.delete("gone/b")
    thread.join(10)
    [(new_index, found)] = answers
    assert [e["Key"] for e in found] == ["gone/a"]
    assert int(new_index) > int(index)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_waits_on_the_keys_modify_index(agent: Daemon, client: consul.Consul) -> None:
    client.kv.put("curl/key", "v")
    _, entry = client.kv.get("curl/key")
    url = f"{agent.url}/v1/kv/curl/key?index={entry['ModifyIndex']}&wait=1s"
    started = time.monotonic()
    out = subprocess.run(
        ["curl", "-s", "-D", "-", url], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    assert time.monotonic() - started >= 1
    assert f"X-Consul-Index: {entry['ModifyIndex']}" in out
