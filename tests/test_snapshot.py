"""Snapshots (issue #14, item 10): ``GET /v1/snapshot`` saves catalog, KV and sessions as
one consistent archive while writes go on; ``PUT /v1/snapshot`` restores one atomically,
and refuses a broken or foreign archive with 400 having changed nothing.  With py-consul,
curl and kill -9 against the real daemon, and the archive rules of
:mod:`homeport.catalog.snapshot`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consul
import consul.exceptions
import pytest

from homeport.catalog import snapshot
from homeport.catalog.model import (
    Catalog,
    Change,
    Check,
    KVEntry,
    Node,
    Service,
    Session,
)

from .daemon import Daemon, DaemonFactory

NOW = 1_790_000_000.0


def client(daemon: Daemon, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port, token=token)


def curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], check=True, capture_output=True, text=True
    ).stdout


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def pack(files: dict[str, bytes], sums: bool = True) -> bytes:
    """A gzipped tar of *files* (with a right SHA256SUMS added, unless told not to)."""
    if sums:
        files = {
            **files,
            "SHA256SUMS": "".join(
                f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items()
            ).encode(),
        }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue())


def a_catalog() -> Catalog:
    catalog = Catalog()
    catalog.register(
        Node("agent", "10.0.0.1"),
        [Service("agent", "consul", "consul", source="builtin")],
        [Check("agent", "serfHealth", "Serf Health Status", "passing", source="builtin")],
    )
    catalog.register(Node("web-1", "10.0.0.2", meta={"rack": "a"}))
    catalog.register_service(
        Service("web-1", "web", "web", tags=("v1",), port=80),
        [Check("web-1", "service:web", "web", "passing", service_id="web")],
    )
    catalog.register_service(Service("agent", "local", "local", source="config"))
    catalog.kv_put("app/config", b"\x00binary\xff", flags=7)
    session = catalog.session_create(Session("s1", "agent", name="lock"))
    catalog.kv_acquire("app/leader", b"me", 0, session.id)
    return catalog


# -- the archive ------------------------------------------------------------------------


def test_an_archive_is_consuls_shape_with_homeports_state() -> None:
    catalog = a_catalog()
    files = members(snapshot.take(catalog, "agent", NOW))
    assert list(files) == ["meta.json", "state.json", "SHA256SUMS"]
    meta = json.loads(files["meta.json"])
    assert meta == {
        "Format": "homeport-snapshot",
        "Version": 2,
        "ID": f"{catalog.index}-{int(NOW * 1000)}",
        "Index": catalog.index,
        "Datacenter": "dc1",
        "Node": "agent",
        "Created": "2026-09-21T14:13:20Z",
        "Size": len(files["state.json"]),
    }
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest
    state = json.loads(files["state.json"])
    assert [n["name"] for n in state["Nodes"]] == ["agent", "web-1"]
    # What files and the agent make is not in it:
    assert [s["id"] for s in state["Services"]] == ["web"]
    assert [c["check_id"] for c in state["Checks"]] == ["service:web"]
    assert {e["key"]: e["value"] for e in state["KV"]} == {
        "app/config": b"\x00binary\xff".hex(),
        "app/leader": b"me".hex(),
    }
    assert [s["id"] for s in state["Sessions"]] == ["s1"]
    assert state["Queries"] == []


def test_a_restore_puts_back_the_state_and_keeps_the_agents_own() -> None:
    catalog = a_catalog()
    archive = snapshot.take(catalog, "agent", NOW)
    before = {k: catalog.kv[k] for k in catalog.kv}
    catalog.kv_put("app/config", b"changed")
    catalog.kv_put("new", b"x")
    catalog.deregister_node("web-1")
    catalog.session_destroy("s1")
    catalog.register_service(Service("agent", "local", "local", port=1, source="config"))
    changes: list[list[Change]] = []
    catalog.subscribe(changes.append)
    index = catalog.index

    snapshot.restore(catalog, archive, "agent")

    assert catalog.kv == before  # the entries with their own indexes and lock
    assert catalog.kv["app/leader"].session == "s1" and "s1" in catalog.sessions
    assert set(catalog.nodes) == {"agent", "web-1"}
    assert catalog.services[("web-1", "web")].tags == ("v1",)
    assert catalog.services[("agent", "local")].port == 1  # --config-dir's, not the archive's
    assert ("agent", "consul") in catalog.services
    assert len(changes) == 1 and catalog.index == index + 1  # one change, one new index
    assert {c.index for c in changes[0]} == {catalog.index}


def test_restoring_the_same_state_changes_nothing() -> None:
    catalog = a_catalog()
    archive = snapshot.take(catalog, "agent", NOW)
    index = catalog.index
    snapshot.restore(catalog, archive, "agent")
    assert catalog.index == index


def consul_archive() -> bytes:
    """What Consul's ``consul snapshot save`` writes: Raft's meta, state.bin, the sums."""
    meta = {"Version": 1, "ID": "2-17-1700000000000", "Index": 17, "Term": 2, "Size": 4}
    return pack({"meta.json": json.dumps(meta).encode(), "state.bin": b"\x81\xa1a\x01"})


def good_files() -> dict[str, bytes]:
    files = members(snapshot.take(a_catalog(), "agent", NOW))
    del files["SHA256SUMS"]
    return files


def edited(section: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    files = good_files()
    state = json.loads(files["state.json"])
    change(state[section][0])
    files["state.json"] = json.dumps(state).encode()
    return pack(files)


REFUSED = {
    "not gzip": (b"PK\x03\x04 a zip", "not a gzip stream"),
    "cut short": (snapshot.take(a_catalog(), "agent", NOW)[:-20], "decompress"),
    "consul's own": (consul_archive(), "this is a Consul snapshot"),
    "consul's meta only": (
        pack({"meta.json": b'{"Version":1,"Index":3,"Term":1}', "state.json": b"{}"}),
        "this is a Consul snapshot",
    ),
    "extra file": (pack({**good_files(), "x.sh": b"rm -rf /"}), "unexpected file 'x.sh'"),
    "no sums": (pack(good_files(), sums=False), "file missing for 'SHA256SUMS'"),
    "tampered": (
        pack({**good_files(), "SHA256SUMS": b"00  meta.json\n00  state.json\n"}, sums=False),
        "hash check failed for 'meta.json'",
    ),
    "other format": (
        pack({**good_files(), "meta.json": b'{"Format":"other","Index":1}'}),
        "does not say Format",
    ),
    "unknown field": (edited("Nodes", lambda n: n.update(colour="red")), "Nodes[0]"),
    "wrong type": (edited("Services", lambda s: s.update(port="80")), "port has the wrong type"),
    "dangling service": (
        edited("Services", lambda s: s.update(node="ghost")),
        "names node 'ghost'",
    ),
    "dangling lock": (
        edited("Sessions", lambda s: s.update(id="other")),
        "names session 's1'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_archive_is_refused_and_nothing_changes(case: str) -> None:
    archive, reason = REFUSED[case]
    catalog = a_catalog()
    state = snapshot.take(catalog, "agent", NOW)
    with pytest.raises((snapshot.InvalidSnapshot, snapshot.ConsulSnapshot)) as refused:
        snapshot.restore(catalog, archive, "agent")
    assert reason in str(refused.value)
    assert str(refused.value).startswith("Invalid snapshot: ")
    assert snapshot.take(catalog, "agent", NOW) == state


def test_a_gzip_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MAX_SIZE", 1000)
    with pytest.raises(snapshot.InvalidSnapshot, match="more than 1000 bytes"):
        snapshot.read(gzip.compress(b"\x00" * 100_000))


# -- the real daemon ----------------------------------------------------------------------


def kv(c: consul.Consul) -> dict[str, bytes]:
    _, entries = c.kv.get("", recurse=True)
    return {e["Key"]: e["Value"] for e in entries or ()}


def fill(c: consul.Consul) -> str:
    c.kv.put("app/config", "v1")
    c.agent.service.register("web", service_id="web-1", port=80, tags=["v1"])
    c.catalog.register("db-1", "10.0.0.9", service={"Service": "db", "Port": 5432})
    session = c.session.create(name="leader", behavior="delete", ttl=60)
    assert c.kv.put("app/leader", "me", acquire=session)
    return str(session)


def test_save_and_restore_with_py_consul(daemon: Daemon) -> None:
    c = client(daemon)
    session = fill(c)
    archive = c.snapshot.save()
    assert archive[:2] == b"\x1f\x8b"
    status, raw, _ = daemon.request("GET", "/v1/snapshot")
    headers = {name.lower(): value for name, value in raw.items()}
    assert status == 200 and headers["content-type"] == "application/x-gzip"
    assert int(headers["x-consul-index"]) >= 1 and headers["x-consul-knownleader"] == "true"

    c.kv.put("app/config", "v2")
    c.kv.put("later", "x")
    c.agent.service.deregister("web-1")
    c.catalog.deregister("db-1")
    c.session.destroy(session)
    assert c.snapshot.restore(archive) is True

    assert kv(c) == {"app/config": b"v1", "app/leader": b"me"}
    assert "web-1" in c.agent.services()
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["db-1", "testnode"]
    _, held = c.kv.get("app/leader")
    assert held["Session"] == session
    _, info = c.session.info(session)
    assert info is not None and info["Behavior"] == "delete"
    # The agent still is itself: its node, serfHealth and the consul service.
    _, services = c.catalog.services()
    assert set(services) == {"consul", "db", "web"}
    assert [h["CheckID"] for h in c.health.node("testnode")[1]] == ["serfHealth"]


def test_the_readme_nightly_backup_and_a_restore_with_curl(daemon: Daemon, tmp_path: Path) -> None:
    c = client(daemon)
    fill(c)
    url = daemon.url
    backup = tmp_path / "backups"
    backup.mkdir()
    # The README's lines, with its host and directory.
    script = (
        f"curl -fsS -o {backup}/homeport-$(date +%F).snap {url}/v1/snapshot\n"
        f"find {backup} -name 'homeport-*.snap' -mtime +14 -delete\n"
    )
    subprocess.run(["sh", "-e", "-c", script], check=True, timeout=30)
    [saved] = list(backup.iterdir())
    assert snapshot.read(saved.read_bytes()).meta["Node"] == "testnode"
    c.kv.delete("app", recurse=True)
    curl("-fsS", "-X", "PUT", "--data-binary", f"@{saved}", f"{url}/v1/snapshot")
    assert kv(c)["app/config"] == b"v1"


def test_a_bad_archive_answers_400_and_changes_nothing(daemon: Daemon) -> None:
    c = client(daemon)
    fill(c)
    before = json.loads(members(c.snapshot.save())["state.json"])
    for archive in (b"", b"not an archive", consul_archive(), c.snapshot.save()[:-30]):
        status, _, body = daemon.request("PUT", "/v1/snapshot", archive)
        assert status == 400, body
        assert body.startswith(b"Invalid snapshot: ")
    with pytest.raises(consul.exceptions.BadRequest, match="this is a Consul snapshot"):
        c.snapshot.restore(consul_archive())
    assert json.loads(members(c.snapshot.save())["state.json"]) == before


def test_a_restore_survives_kill_9(daemon: Daemon) -> None:
    c = client(daemon)
    fill(c)
    archive = c.snapshot.save()
    c.kv.delete("", recurse=True)
    c.kv.put("after", "backup")
    status, _, _ = daemon.request("PUT", "/v1/snapshot", archive)
    assert status == 200
    daemon.kill9()
    daemon.start()
    c = client(daemon)
    assert kv(c) == {"app/config": b"v1", "app/leader": b"me"}
    assert "web-1" in c.agent.services()
    # The index goes on from past the restored state.
    index, _ = c.kv.get("app/config")
    c.kv.put("next", "1")
    _, entry = c.kv.get("next")
    assert entry["ModifyIndex"] > int(index)


def test_a_save_is_consistent_while_writes_go_on(daemon: Daemon) -> None:
    """Keys written one after another: every archive holds exactly the first N of them
    and says the index of the last, whatever the writer is doing."""
    c = client(daemon)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        w = client(daemon)
        n = 0
        while not stop.is_set() and n < 2000:
            w.kv.put(f"seq/{n:05d}", str(n))
            written.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    archives = []
    try:
        while len(written) < 10 and thread.is_alive():
            time.sleep(0.01)
        for _ in range(15):
            archives.append(c.snapshot.save())
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(30)
    counts = []
    for archive in archives:
        read = snapshot.read(archive)
        keys = sorted(e.key for e in read.entities if isinstance(e, KVEntry))
        assert keys == [f"seq/{n:05d}" for n in range(len(keys))]
        indexes = [e.modify_index for e in read.entities if isinstance(e, KVEntry)]
        assert max(indexes, default=0) <= read.index
        counts.append(len(keys))
    assert counts == sorted(counts) and len(set(counts)) > 1, counts


def test_snapshots_need_the_token(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    for method, body in (("GET", None), ("PUT", b"x")):
        status, _, _ = daemon.request(method, "/v1/snapshot", body)
        assert status == 403
    archive = client(daemon, token="s3cret").snapshot.save()
    assert client(daemon, token="s3cret").snapshot.restore(archive) is True
