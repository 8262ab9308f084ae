"""The Consul HTTP API, in memory through the real Site (the fast layer)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from homeport.catalog.api import ERRORS
from homeport.catalog.errors import CatalogError, TxnFailure

from .memory import APITestCase


class FreshAgentTests(APITestCase):
    def test_a_fresh_agent_lists_itself_and_the_consul_service(self) -> None:
        assert self.get("/v1/catalog/services") == {"consul": []}
        nodes = self.get("/v1/catalog/nodes")
        assert [n["Node"] for n in nodes] == ["testnode"]
        assert nodes[0]["Address"] == "127.0.0.1"
        assert self.get("/v1/catalog/datacenters") == ["dc1"]
        assert self.get("/v1/agent/services") == {}
        assert self.get("/v1/status/leader") == "127.0.0.1:8300"
        health = self.get("/v1/health/node/testnode")
        assert [c["CheckID"] for c in health] == ["serfHealth"]
        assert health[0]["Status"] == "passing"

    def test_every_read_sends_consul_index_headers(self) -> None:
        code, headers, _ = self.request("GET", "/v1/catalog/services")
        assert code == 200
        assert int(headers.getRawHeaders("X-Consul-Index")[0]) > 0
        assert headers.getRawHeaders("X-Consul-KnownLeader") == ["true"]
        assert headers.getRawHeaders("X-Consul-LastContact") == ["0"]

    def test_agent_self_describes_the_agent(self) -> None:
        me = self.get("/v1/agent/self")
        assert me["Config"]["NodeName"] == "testnode"
        assert me["Config"]["Datacenter"] == "dc1"
        assert me["Member"]["Name"] == "testnode"

    def test_pretty_indents(self) -> None:
        _, _, body = self.request("GET", "/v1/catalog/services?pretty")
        assert body.startswith(b"{\n    ")


class ServiceTests(APITestCase):
    def test_agent_registration_shows_in_catalog_agent_and_health(self) -> None:
        """The seed example: a web service with a rails tag on port 80."""
        self.put("/v1/agent/service/register", {"name": "web", "tags": ["rails"], "port": 80})
        assert self.get("/v1/catalog/services") == {"consul": [], "web": ["rails"]}
        [entry] = self.get("/v1/catalog/service/web")
        assert entry["ServiceID"] == "web"
        assert entry["ServiceName"] == "web"
        assert entry["ServiceTags"] == ["rails"]
        assert entry["ServicePort"] == 80
        assert entry["ServiceAddress"] == ""
        assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}
        assert entry["Node"] == "testnode"
        assert entry["Address"] == "127.0.0.1"
        assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
        agent = self.get("/v1/agent/services")
        assert agent == {
            "web": {
                "ID": "web",
                "Service": "web",
                "Tags": ["rails"],
                "Meta": {},
                "Port": 80,
                "Address": "",
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
                "Datacenter": "dc1",
            }
        }
        [health] = self.get("/v1/health/service/web")
        assert health["Service"]["ID"] == "web"
        assert [c["CheckID"] for c in health["Checks"]] == ["serfHealth"]

    def test_tag_filters_and_passing(self) -> None:
        self.put(
            "/v1/agent/service/register",
            {"ID": "web1", "Name": "web", "Tags": ["a", "b"], "Check": {"TTL": "30s"}},
        )
        self.put("/v1/agent/service/register", {"ID": "web2", "Name": "web", "Tags": ["a"]})
        assert [e["ServiceID"] for e in self.get("/v1/catalog/service/web?tag=a&tag=b")] == ["web1"]
        assert len(self.get("/v1/health/service/web?tag=a")) == 2
        # web1's TTL check starts critical: ?passing drops it.
        passing = self.get("/v1/health/service/web?passing")
        assert [e["Service"]["ID"] for e in passing] == ["web2"]
        self.put("/v1/agent/check/pass/service:web1?note=ok")
        assert len(self.get("/v1/health/service/web?passing=true")) == 2
        code, _, body = self.request("GET", "/v1/health/service/web?passing=maybe")
        assert (code, body) == (400, b"Invalid value for ?passing")

    def test_deregistering_an_unknown_service_is_404(self) -> None:
        code, _, body = self.request("PUT", "/v1/agent/service/deregister/nope")
        assert code == 404
        assert body.startswith(b'Unknown service ID "nope"')

    def test_catalog_register_and_node_views(self) -> None:
        body = {
            "Node": "ext",
            "Address": "10.1.2.3",
            "Service": {"Service": "db", "Port": 5432, "Tags": ["primary"]},
            "Check": {"CheckID": "db-check", "Name": "db", "Status": "passing", "ServiceID": "db"},
        }
        assert self.put("/v1/catalog/register", body) == b"true"
        node = self.get("/v1/catalog/node/ext")
        assert node["Node"]["Address"] == "10.1.2.3"
        assert node["Services"]["db"]["Port"] == 5432
        checks = self.get("/v1/health/checks/db")
        assert [(c["CheckID"], c["Status"], c["ServiceName"]) for c in checks] == [
            ("db-check", "passing", "db")
        ]
        assert [c["CheckID"] for c in self.get("/v1/health/state/passing")] == [
            "db-check",
            "serfHealth",
        ]
        assert self.put("/v1/catalog/deregister", {"Node": "ext"}) == b"true"
        code, _, content = self.request("GET", "/v1/catalog/node/ext")
        assert (code, content) == (200, b"null")
        assert self.get("/v1/catalog/service/db") == []

    def test_catalog_register_errors_match_consul(self) -> None:
        code, _, body = self.request("PUT", "/v1/catalog/register", {"Address": "1.2.3.4"})
        assert (code, body) == (500, b"Must provide node")
        code, _, body = self.request("PUT", "/v1/catalog/register", {"Node": "x"})
        assert (code, body) == (500, b"Must provide address if SkipNodeUpdate is not set")

    def test_ttl_updates_and_their_errors(self) -> None:
        self.put("/v1/agent/check/register", {"Name": "mem", "TTL": "15s"})
        self.put("/v1/agent/check/warn/mem?note=high")
        [check] = [c for c in self.get("/v1/health/node/testnode") if c["CheckID"] == "mem"]
        assert (check["Status"], check["Output"], check["Type"]) == ("warning", "high", "ttl")
        self.put(
            "/v1/agent/check/register", {"Name": "port", "TCP": "127.0.0.1:1", "Interval": "10s"}
        )
        code, _, body = self.request("PUT", "/v1/agent/check/pass/port")
        assert (code, body) == (500, b'CheckID "port" does not have associated TTL')
        code, _, body = self.request("PUT", "/v1/agent/check/pass/ghost")
        assert (code, body) == (500, b'CheckID "ghost" does not have associated TTL')
        self.put("/v1/agent/check/deregister/mem")
        assert "mem" not in self.get("/v1/agent/checks")

    def test_maintenance_mode_adds_a_critical_check(self) -> None:
        self.put("/v1/agent/service/register", {"Name": "web"})
        code, _, body = self.request("PUT", "/v1/agent/service/maintenance/web")
        assert (code, body) == (400, b"Missing value for enable")
        self.put("/v1/agent/service/maintenance/web?enable=true&reason=deploy")
        assert self.get("/v1/health/service/web?passing") == []
        self.put("/v1/agent/service/maintenance/web?enable=false")
        assert len(self.get("/v1/health/service/web?passing")) == 1


class KVTests(APITestCase):
    def test_put_get_raw_recurse_keys_delete(self) -> None:
        assert self.put("/v1/kv/app/config/db", b"postgres://x") == b"true"
        assert self.put("/v1/kv/app/config/cache?flags=42", b"redis") == b"true"
        assert self.put("/v1/kv/app/name", b"homeport") == b"true"
        [entry] = self.get("/v1/kv/app/config/db")
        assert base64.b64decode(entry["Value"]) == b"postgres://x"
        assert entry["Key"] == "app/config/db"
        assert entry["LockIndex"] == 0
        code, _headers, raw = self.request("GET", "/v1/kv/app/config/cache?raw")
        assert (code, raw) == (200, b"redis")
        assert [e["Flags"] for e in self.get("/v1/kv/app/config/cache")] == [42]
        assert [e["Key"] for e in self.get("/v1/kv/app?recurse")] == [
            "app/config/cache",
            "app/config/db",
            "app/name",
        ]
        assert self.get("/v1/kv/app/?keys&separator=/") == ["app/config/", "app/name"]
        assert self.get("/v1/kv/?keys") == ["app/config/cache", "app/config/db", "app/name"]
        code, _, content = self.request("DELETE", "/v1/kv/app/config?recurse")
        assert (code, content) == (200, b"true")
        assert self.get("/v1/kv/?keys") == ["app/name"]

    def test_missing_key_is_404_with_an_index(self) -> None:
        code, headers, body = self.request("GET", "/v1/kv/nope")
        assert (code, body) == (404, b"")
        assert int(headers.getRawHeaders("X-Consul-Index")[0]) > 0

    def test_cas(self) -> None:
        assert self.put("/v1/kv/lock?cas=0", b"me") == b"true"
        assert self.put("/v1/kv/lock?cas=0", b"you") == b"false"
        [entry] = self.get("/v1/kv/lock")
        assert self.put(f"/v1/kv/lock?cas={entry['ModifyIndex']}", b"you") == b"true"
        _code, _, body = self.request("DELETE", f"/v1/kv/lock?cas={entry['ModifyIndex']}")
        assert body == b"false"

    def test_empty_value_is_null(self) -> None:
        self.put("/v1/kv/empty", b"")
        assert self.get("/v1/kv/empty")[0]["Value"] is None

    def test_empty_key_is_refused(self) -> None:
        code, _, body = self.request("PUT", "/v1/kv/", b"x")
        assert (code, body) == (400, b"Missing key name")


class BadInputTests(APITestCase):
    def test_bad_requests_get_consuls_texts_and_change_nothing(self) -> None:
        index = self.daemon.catalog.index
        cases = [
            (b"{not json", 400, b"Request decode failed: "),
            (b"", 400, b"Request decode failed: EOF"),
            (
                json.dumps({"Name": "x", "Bogus": 1}).encode(),
                400,
                b'Request decode failed: json: unknown field "Bogus"',
            ),
            (
                json.dumps({"Name": "x", "Port": "80"}).encode(),
                400,
                b"Request decode failed: json: cannot unmarshal string",
            ),
            (json.dumps({"Name": ""}).encode(), 400, b"Missing service name"),
            (
                json.dumps(["a"]).encode(),
                400,
                b"Request decode failed: json: cannot unmarshal array",
            ),
            (b"\xff\xfe", 400, b"Request decode failed: "),
        ]
        for body, status, prefix in cases:
            code, headers, content = self.request("PUT", "/v1/agent/service/register", body)
            assert code == status, (body, code, content)
            assert content.startswith(prefix), (body, content)
            assert headers.getRawHeaders("Content-Type") == ["text/plain; charset=utf-8"]
        assert self.daemon.catalog.index == index

    def test_unknown_paths_and_wrong_methods(self) -> None:
        code, _, body = self.request("GET", "/v1/nope")
        assert (code, body) == (404, b"Invalid URL path: not a recognized HTTP API endpoint\n")
        code, headers, body = self.request("POST", "/v1/catalog/register", {"Node": "x"})
        assert (code, body) == (405, b"method POST not allowed")
        assert "PUT" in headers.getRawHeaders("Allow")[0]
        code, headers, _ = self.request("OPTIONS", "/v1/kv/x")
        assert code == 200
        assert headers.getRawHeaders("Allow") == ["OPTIONS,GET,PUT,DELETE"]
        code, _, body = self.request("GET", "/elsewhere")
        assert code == 404 and b"<html" not in body

    def test_bad_wait_and_index(self) -> None:
        assert self.request("GET", "/v1/catalog/services?index=abc")[::2] == (400, b"Invalid index")
        assert self.request("GET", "/v1/catalog/services?index=1&wait=forever")[::2] == (
            400,
            b"Invalid wait time",
        )

    def test_unknown_datacenter(self) -> None:
        assert self.request("GET", "/v1/catalog/services?dc=mars")[::2] == (
            500,
            b"No path to datacenter",
        )

    def test_a_deregister_for_another_datacenter_changes_nothing(self) -> None:
        """py-consul's ``catalog.deregister`` sends ``{"node": ..., "datacenter": ...}``."""
        index = self.daemon.catalog.index
        for datacenter in ("datacenter", "Datacenter", "DATACENTER"):
            body = {"node": "testnode", datacenter: "dc2"}
            answer = self.request("PUT", "/v1/catalog/deregister", body)[::2]
            assert answer == (500, b"No path to datacenter")
        assert "testnode" in self.daemon.catalog.nodes
        assert self.daemon.catalog.index == index

    def test_oversized_bodies_are_refused_with_413(self) -> None:
        big = b"x" * (1024 * 1024 + 1)
        code, _, _ = self.request("PUT", "/v1/kv/big", big)
        assert code == 413
        assert "big" not in self.daemon.catalog.kv
        # A value over Consul's 512 KiB KV limit, under the body limit.
        code, _, body = self.request("PUT", "/v1/kv/big", b"x" * (600 * 1024))
        assert code == 413 and b"too large" in body


class TokenTests(APITestCase):
    args = ["--token", "s3cret"]

    def test_writes_need_the_token_in_any_of_consuls_places(self) -> None:
        code, _, _body = self.request("PUT", "/v1/kv/a", b"1")
        assert code == 403
        code, _, _ = self.request("PUT", "/v1/kv/a", b"1", {"X-Consul-Token": "wrong"})
        assert code == 403
        assert "a" not in self.daemon.catalog.kv
        assert self.request("PUT", "/v1/kv/a?token=s3cret", b"1")[0] == 200
        assert self.request("PUT", "/v1/kv/b", b"1", {"X-Consul-Token": "s3cret"})[0] == 200
        assert self.request("PUT", "/v1/kv/c", b"1", {"Authorization": "Bearer s3cret"})[0] == 200
        assert sorted(self.daemon.catalog.kv) == ["a", "b", "c"]

    def test_reads_stay_open(self) -> None:
        assert self.request("GET", "/v1/catalog/services")[0] == 200


class BlockingTestCase(APITestCase):
    """Blocking reads started and left parked on the memory reactor."""

    def start(self, path: str) -> Deferred[Any]:
        d: Deferred[Any] = self.daemon.treq.request("GET", "http://127.0.0.1" + path)
        self.daemon.treq.flush()
        return d

    def assertNoResult(self, deferred: Deferred[Any]) -> None:
        SynchronousTestCase.assertNoResult(self, deferred)

    def index_of(self, path: str) -> int:
        _, headers, _ = self.request("GET", path)
        return int(headers.getRawHeaders("X-Consul-Index")[0])


class BlockingQueryTests(BlockingTestCase):
    def test_a_blocking_query_returns_when_its_result_changes(self) -> None:
        index = self.index_of("/v1/catalog/service/web")
        d = self.start(f"/v1/catalog/service/web?index={index}&wait=1m")
        self.assertNoResult(d)
        self.put("/v1/agent/service/register", {"Name": "web"})
        self.daemon.treq.flush()
        response = self.successResultOf(d)
        assert int(response.headers.getRawHeaders("X-Consul-Index")[0]) > index
        body = self.successResultOf(response.json())
        assert [e["ServiceID"] for e in body] == ["web"]

    def test_unrelated_changes_do_not_wake_a_blocking_query(self) -> None:
        """A per-query index: a KV write or another service leaves `web` watchers parked."""
        self.put("/v1/agent/service/register", {"Name": "web"})
        index = self.index_of("/v1/catalog/service/web")
        d = self.start(f"/v1/catalog/service/web?index={index}&wait=1m")
        self.put("/v1/kv/unrelated", b"x")
        self.put("/v1/agent/service/register", {"Name": "db"})
        self.daemon.treq.flush()
        self.assertNoResult(d)
        assert self.index_of("/v1/catalog/service/web") == index
        self.daemon.reactor.advance(70)  # the wait (with up to 1/16 jitter) runs out
        self.daemon.treq.flush()
        response = self.successResultOf(d)
        assert int(response.headers.getRawHeaders("X-Consul-Index")[0]) == index

    def test_thousands_of_parked_queries_use_no_threads(self) -> None:
        """2000 waiting clients are timers and dict entries, not threads; one change
        answers every one of them."""
        index = self.index_of("/v1/catalog/service/web")
        threads = threading.active_count()
        waiting = [
            self.start(f"/v1/catalog/service/web?index={index}&wait=5m") for _ in range(2000)
        ]
        assert threading.active_count() == threads
        for d in waiting[::100]:
            self.assertNoResult(d)
        self.put("/v1/agent/service/register", {"Name": "web"})
        self.daemon.treq.flush()
        for d in waiting:
            assert self.successResultOf(d).code == 200
        # Their wait timers (5 minutes and jitter) were all cancelled.
        assert [c for c in self.daemon.reactor.getDelayedCalls() if c.getTime() >= 300] == []

    def test_an_older_index_answers_at_once(self) -> None:
        index = self.index_of("/v1/catalog/services")
        d = self.start(f"/v1/catalog/services?index={index - 1}")
        self.successResultOf(d)

    def test_kv_blocking_on_one_key(self) -> None:
        self.put("/v1/kv/a", b"1")
        index = self.index_of("/v1/kv/a")
        d = self.start(f"/v1/kv/a?index={index}")
        self.put("/v1/kv/b", b"1")
        self.daemon.treq.flush()
        self.assertNoResult(d)
        self.put("/v1/kv/a", b"2")
        self.daemon.treq.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.json())
        assert base64.b64decode(body[0]["Value"]) == b"2"


class KVIndexTests(BlockingTestCase):
    """Consul's KV index: a watcher that asks ``?index=<ModifyIndex>`` waits."""

    def modify_index(self, key: str) -> int:
        [entry] = self.get(f"/v1/kv/{key}")
        return int(entry["ModifyIndex"])

    def test_one_key_answers_its_modify_index(self) -> None:
        self.put("/v1/kv/leader", b"a")
        self.put("/v1/kv/other", b"x")
        self.put("/v1/agent/service/register", {"Name": "web"})
        assert self.index_of("/v1/kv/leader") == self.modify_index("leader")
        assert self.index_of("/v1/kv/leader?raw") == self.modify_index("leader")

    def test_waiting_on_the_modify_index_parks_until_the_key_changes(self) -> None:
        """Patroni's watch: ``?index=`` is the leader key's ModifyIndex from the body."""
        self.put("/v1/kv/leader", b"a")
        self.put("/v1/kv/other", b"x")
        held = self.modify_index("leader")
        d = self.start(f"/v1/kv/leader?index={held}&wait=1m")
        self.put("/v1/kv/other", b"y")
        self.put("/v1/agent/service/register", {"Name": "web"})
        self.daemon.treq.flush()
        self.assertNoResult(d)
        self.put("/v1/kv/leader", b"b")
        self.daemon.treq.flush()
        response = self.successResultOf(d)
        index = int(response.headers.getRawHeaders("X-Consul-Index")[0])
        assert index == self.modify_index("leader") > held

    def test_the_wait_runs_out_with_the_same_index(self) -> None:
        self.put("/v1/kv/leader", b"a")
        held = self.modify_index("leader")
        d = self.start(f"/v1/kv/leader?index={held}&wait=2s")
        self.daemon.reactor.advance(3)
        self.daemon.treq.flush()
        assert self.successResultOf(d).headers.getRawHeaders("X-Consul-Index") == [str(held)]

    def test_a_missing_key_answers_the_kv_tables_index_and_wakes_when_created(self) -> None:
        self.put("/v1/kv/other", b"x")
        self.put("/v1/agent/service/register", {"Name": "web"})
        index = self.index_of("/v1/kv/leader")
        assert index == self.modify_index("other")
        d = self.start(f"/v1/kv/leader?index={index}&wait=1m")
        self.put("/v1/agent/service/register", {"Name": "db"})
        self.daemon.treq.flush()
        self.assertNoResult(d)
        self.put("/v1/kv/leader", b"me")
        self.daemon.treq.flush()
        assert self.successResultOf(d).code == 200

    def test_a_prefix_answers_its_highest_index_and_wakes_on_a_delete(self) -> None:
        for key in ("service/pg/leader", "service/pg/members/a", "unrelated"):
            self.put(f"/v1/kv/{key}", b"x")
        highest = self.modify_index("service/pg/members/a")
        for query in ("recurse", "keys", "keys&separator=/"):
            assert self.index_of(f"/v1/kv/service/pg/?{query}") == highest
        waiting = [
            self.start(f"/v1/kv/service/pg/?{query}&index={highest}&wait=1m")
            for query in ("recurse", "keys")
        ]
        self.put("/v1/kv/unrelated", b"y")
        self.daemon.treq.flush()
        for d in waiting:
            self.assertNoResult(d)
        code, _, _ = self.request("DELETE", "/v1/kv/service/pg/members/a")
        assert code == 200
        self.daemon.treq.flush()
        for d in waiting:
            response = self.successResultOf(d)
            assert int(response.headers.getRawHeaders("X-Consul-Index")[0]) > highest


class SlashIDTests(APITestCase):
    """An agent route takes the rest of the path as the ID, as Consul's handlers do
    (``strings.TrimPrefix(req.URL.Path, ...)``), so an ID may hold ``/``."""

    def status(self, method: str, path: str) -> tuple[int, bytes]:
        code, _, body = self.request(method, path)
        return code, body

    def test_every_agent_route_takes_an_id_with_slashes(self) -> None:
        body = {"ID": "team/web-1", "Name": "web", "Check": {"TTL": "30s"}}
        self.put("/v1/agent/service/register", body)
        assert self.get("/v1/agent/service/team/web-1")["ID"] == "team/web-1"
        assert self.get("/v1/agent/service/team%2Fweb-1")["ID"] == "team/web-1"
        assert self.status("GET", "/v1/agent/health/service/id/team/web-1")[0] == 503
        for verb, code in (("pass", 200), ("warn", 429), ("fail", 503)):
            self.put(f"/v1/agent/check/{verb}/service:team/web-1?note={verb}")
            assert self.status("GET", "/v1/agent/health/service/id/team/web-1")[0] == code
        self.put("/v1/agent/check/update/service:team/web-1", {"Status": "passing"})
        self.put("/v1/agent/service/maintenance/team/web-1?enable=true&reason=deploy")
        checks = self.get("/v1/agent/checks")
        assert checks["_service_maintenance:team/web-1"]["ServiceID"] == "team/web-1"
        self.put("/v1/agent/service/maintenance/team/web-1?enable=false")
        self.put("/v1/agent/check/deregister/service:team/web-1")
        assert self.get("/v1/agent/checks") == {}
        self.put("/v1/agent/service/deregister/team/web-1")
        assert self.status("GET", "/v1/agent/service/team/web-1") == (
            404,
            b"unknown service ID: team/web-1",
        )

    def test_the_most_specific_route_wins_then_the_method(self) -> None:
        """As Go's ServeMux: ``/v1/agent/service/register`` is its own route (PUT), not
        the service "register"; so is ``maintenance/``."""
        code, headers, body = self.request("GET", "/v1/agent/service/register")
        assert (code, body) == (405, b"method GET not allowed")
        assert headers.getRawHeaders("Allow") == ["OPTIONS,PUT"]
        assert self.status("GET", "/v1/agent/service/maintenance/web")[0] == 405
        self.put("/v1/agent/service/register", {"ID": "a/b", "Name": "ab"})
        assert self.get("/v1/agent/service/a/b")["Service"] == "ab"

    def test_an_empty_id_gets_consuls_answer(self) -> None:
        cases = [
            ("PUT", "/v1/agent/service/deregister/", 500, b"ServiceID missing"),
            ("PUT", "/v1/agent/check/deregister/", 500, b"CheckID missing"),
            ("PUT", "/v1/agent/service/maintenance/?enable=true", 400, b"Missing service ID"),
            ("GET", "/v1/agent/health/service/id/", 400, b"Missing serviceID"),
            ("GET", "/v1/agent/health/service/name/", 400, b"Missing service Name"),
            ("GET", "/v1/agent/service/", 404, b"unknown service ID: "),
            ("PUT", "/v1/agent/check/pass/", 500, b'CheckID "" does not have associated TTL'),
        ]
        for method, path, code, text in cases:
            assert self.status(method, path) == (code, text), path


class TTLTests(APITestCase):
    def test_a_ttl_check_expires_to_critical_on_the_reactor_clock(self) -> None:
        self.put("/v1/agent/service/register", {"Name": "web", "Check": {"TTL": "10s"}})
        self.put("/v1/agent/check/pass/service:web")
        assert len(self.get("/v1/health/service/web?passing")) == 1
        self.daemon.reactor.advance(9)
        self.put("/v1/agent/check/pass/service:web")  # resets the timer
        self.daemon.reactor.advance(9)
        assert len(self.get("/v1/health/service/web?passing")) == 1
        self.daemon.reactor.advance(2)
        [entry] = self.get("/v1/health/service/web")
        check = entry["Checks"][-1]
        assert (check["Status"], check["Output"]) == ("critical", "TTL expired")

    def test_deregister_critical_service_after(self) -> None:
        self.put(
            "/v1/agent/service/register",
            {"Name": "tmp", "Check": {"TTL": "5s", "DeregisterCriticalServiceAfter": "30s"}},
        )
        for _ in range(10):
            self.daemon.reactor.advance(5)
        assert self.get("/v1/catalog/service/tmp") == []


class MetricsTests(APITestCase):
    def test_metrics_count_requests_per_route_and_catalog_sizes(self) -> None:
        self.get("/v1/catalog/services")
        self.request("GET", "/v1/nope")
        code, _headers, body = self.request("GET", "/metrics")
        assert code == 200
        text = body.decode()
        assert 'homeport_http_requests_total{code="200",route="/v1/catalog/services"} 1.0' in text
        assert 'homeport_http_requests_total{code="404",route="unmatched"} 1.0' in text
        assert "homeport_http_request_duration_seconds_bucket" in text
        assert "homeport_catalog_services 1.0" in text

    def test_root_redirects_to_the_dashboard(self) -> None:
        code, headers, _ = self.request("GET", "/")
        assert code in (301, 302)
        assert headers.getRawHeaders("Location") == ["/ui/"]


class VolatileTests(APITestCase):
    def test_agent_self_uptime_moves_without_catalog_changes(self) -> None:
        """Answers that depend on the clock are never served stale from the cache."""
        first = self.get("/v1/agent/self")["Stats"]["homeport"]["uptime_seconds"]
        self.daemon.reactor.advance(42)
        second = self.get("/v1/agent/self")["Stats"]["homeport"]["uptime_seconds"]
        assert int(second) - int(first) == 42


class CORSTests(APITestCase):
    args = ["--cors-origin", "https://dash.example.com"]

    def test_allowed_origins_may_read_the_api_and_its_index(self) -> None:
        origin = {"Origin": "https://dash.example.com"}
        code, headers, _ = self.request("GET", "/v1/catalog/services", headers=origin)
        assert code == 200
        assert headers.getRawHeaders("Access-Control-Allow-Origin") == ["https://dash.example.com"]
        assert "X-Consul-Index" in headers.getRawHeaders("Access-Control-Expose-Headers")[0]
        code, headers, _ = self.request(
            "OPTIONS",
            "/v1/kv/a",
            headers={**origin, "Access-Control-Request-Method": "PUT"},
        )
        assert code == 200
        assert "PUT" in headers.getRawHeaders("Access-Control-Allow-Methods")[0]

    def test_other_origins_get_no_cors_headers(self) -> None:
        _, headers, _ = self.request(
            "GET", "/v1/catalog/services", headers={"Origin": "https://evil.example"}
        )
        assert headers.getRawHeaders("Access-Control-Allow-Origin") is None


class SessionTests(APITestCase):
    """/v1/session/* and KV ?acquire/?release, in Consul's shapes, on the reactor clock."""

    def create(self, body: Any = None) -> str:
        answer = json.loads(self.put("/v1/session/create", body))
        assert set(answer) == {"ID"}
        return str(answer["ID"])

    def test_a_session_has_consuls_defaults_and_shape(self) -> None:
        sid = self.create()
        [info] = self.get(f"/v1/session/info/{sid}")
        assert info == {
            "ID": sid,
            "Name": "",
            "Node": "testnode",
            "LockDelay": 15_000_000_000,
            "Behavior": "release",
            "TTL": "",
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": None,
            "CreateIndex": info["CreateIndex"],
            "ModifyIndex": info["CreateIndex"],
        }
        other = self.create({"Name": "web-lock", "TTL": "30s", "LockDelay": "5s", "Checks": []})
        [info] = self.get(f"/v1/session/info/{other}")
        assert (info["Name"], info["TTL"], info["LockDelay"]) == ("web-lock", "30s", 5 * 10**9)
        assert info["NodeChecks"] is None
        assert [s["ID"] for s in self.get("/v1/session/list")] == [sid, other]
        assert [s["ID"] for s in self.get("/v1/session/node/testnode")] == [sid, other]
        assert self.get("/v1/session/node/elsewhere") == []
        assert self.get("/v1/session/info/no-such-session") == []

    def test_bad_session_requests_get_consuls_errors(self) -> None:
        for body, code, text in [
            (
                {"TTL": "5s"},
                500,
                b"Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
            ),
            ({"TTL": "soon"}, 500, b"Session TTL 'soon' invalid"),
            ({"Behavior": "keep"}, 500, b"Invalid Behavior setting 'keep'"),
            ({"Node": "ghost"}, 500, b"Missing node registration"),
            ({"Checks": ["nope"]}, 500, b"Missing check 'nope' registration"),
            ({"Bogus": 1}, 400, b'unknown field "Bogus"'),
            (b"{not json", 400, b"Request decode failed"),
        ]:
            status, _, answer = self.request("PUT", "/v1/session/create", body)
            assert (status, text in answer) == (code, True), (body, status, answer)
        assert self.get("/v1/session/list") == []
        status, _, answer = self.request("PUT", "/v1/session/renew/nope")
        assert (status, answer) == (404, b"Session id 'nope' not found")
        assert self.request("GET", "/v1/session/create")[0] == 405

    def test_acquire_and_release_through_the_kv_api(self) -> None:
        one, two = self.create({"LockDelay": "0s"}), self.create()
        assert self.put(f"/v1/kv/service/web/leader?acquire={one}", b"host-1") == b"true"
        assert self.put(f"/v1/kv/service/web/leader?acquire={two}", b"host-2") == b"false"
        [entry] = self.get("/v1/kv/service/web/leader")
        assert (entry["Session"], entry["LockIndex"]) == (one, 1)
        assert self.put(f"/v1/kv/service/web/leader?release={two}", b"") == b"false"
        assert self.put(f"/v1/kv/service/web/leader?release={one}", b"host-1") == b"true"
        [entry] = self.get("/v1/kv/service/web/leader")
        assert "Session" not in entry and entry["LockIndex"] == 1
        assert self.put(f"/v1/kv/service/web/leader?acquire={two}", b"host-2") == b"true"
        assert self.get("/v1/kv/service/web/leader")[0]["LockIndex"] == 2
        status, _, answer = self.request("PUT", "/v1/kv/x?acquire=nope", b"")
        assert (status, answer) == (500, b'invalid session "nope"')
        status, _, answer = self.request("PUT", "/v1/kv/x?acquire=", b"")
        assert (status, answer) == (500, b"Missing session")

    def test_a_ttl_session_not_renewed_for_twice_its_ttl_is_invalidated(self) -> None:
        """TTL 10s: renewed at 15 s it lives on; 20 s after the last renewal it is gone
        and its lock is released (lock delay 0 here, so the key is free at once)."""
        sid = self.create({"TTL": "10s", "LockDelay": 0})
        self.put(f"/v1/kv/leader?acquire={sid}", b"me")
        self.daemon.reactor.advance(15)
        [renewed] = json.loads(self.put(f"/v1/session/renew/{sid}"))
        assert renewed["ID"] == sid and renewed["TTL"] == "10s"
        self.daemon.reactor.advance(19)
        assert len(self.get(f"/v1/session/info/{sid}")) == 1
        self.daemon.reactor.advance(1)
        assert self.get(f"/v1/session/info/{sid}") == []
        assert "Session" not in self.get("/v1/kv/leader")[0]
        other = self.create()
        assert self.put(f"/v1/kv/leader?acquire={other}", b"next") == b"true"

    def test_the_lock_delay_runs_on_the_reactor_clock(self) -> None:
        first = self.create({"LockDelay": "5s"})
        self.put(f"/v1/kv/leader?acquire={first}", b"me")
        self.put(f"/v1/session/destroy/{first}")
        second = self.create()
        assert self.put(f"/v1/kv/leader?acquire={second}", b"you") == b"false"
        self.daemon.reactor.advance(5.1)
        assert self.put(f"/v1/kv/leader?acquire={second}", b"you") == b"true"

    def test_a_session_check_going_critical_releases_the_lock(self) -> None:
        self.put("/v1/agent/check/register", {"Name": "alive", "TTL": "30s"})
        self.put("/v1/agent/check/pass/alive")
        sid = self.create({"NodeChecks": ["serfHealth", "alive"], "LockDelay": "0s"})
        self.put(f"/v1/kv/leader?acquire={sid}", b"me")
        self.daemon.reactor.advance(31)  # the TTL check expires: critical
        assert self.get(f"/v1/session/info/{sid}") == []
        assert "Session" not in self.get("/v1/kv/leader")[0]


class SessionTokenTests(APITestCase):
    args = ["--token", "s3cret"]

    def test_session_writes_need_the_token(self) -> None:
        assert self.request("PUT", "/v1/session/create")[0] == 403
        status, _, body = self.request("PUT", "/v1/session/create?token=s3cret")
        assert status == 200
        sid = json.loads(body)["ID"]
        assert self.request("PUT", f"/v1/session/destroy/{sid}")[0] == 403
        assert self.request("PUT", f"/v1/kv/k?acquire={sid}", b"")[0] == 403
        assert len(self.get("/v1/session/list")) == 1


class AgentHealthTests(APITestCase):
    """/v1/agent/health/service/*: a service's health as an HTTP code, for load balancers."""

    def test_the_code_follows_the_worst_check_by_id_and_by_name(self) -> None:
        self.put(
            "/v1/agent/service/register", {"ID": "web1", "Name": "web", "Check": {"TTL": "30s"}}
        )
        self.put("/v1/agent/service/register", {"ID": "web2", "Name": "web", "Port": 81})
        code, _, body = self.request("GET", "/v1/agent/health/service/id/web2")
        assert code == 200
        info = json.loads(body)
        assert (info["AggregatedStatus"], info["Service"]["ID"], info["Checks"]) == (
            "passing",
            "web2",
            [],
        )
        code, _, body = self.request("GET", "/v1/agent/health/service/id/web1?format=text")
        assert (code, body) == (503, b"critical")  # a TTL check starts critical
        self.put("/v1/agent/check/warn/service:web1")
        assert self.request("GET", "/v1/agent/health/service/id/web1")[0] == 429
        code, _, body = self.request("GET", "/v1/agent/health/service/name/web")
        assert code == 429
        assert sorted(i["Service"]["ID"] for i in json.loads(body)) == ["web1", "web2"]
        self.put("/v1/agent/check/pass/service:web1")
        code, _, body = self.request("GET", "/v1/agent/health/service/name/WEB?format=text")
        assert (code, body) == (200, b"passing")
        # Node maintenance takes every instance out of the load balancer.
        self.put("/v1/agent/maintenance?enable=true&reason=upgrade")
        assert self.request("GET", "/v1/agent/health/service/name/web")[0] == 503
        self.put("/v1/agent/maintenance?enable=false")
        assert self.request("GET", "/v1/agent/health/service/id/web2")[0] == 200

    def test_unknown_services_are_404_in_consuls_words(self) -> None:
        code, _, body = self.request("GET", "/v1/agent/health/service/id/nope?format=text")
        assert (code, body) == (404, b"ServiceId nope not found")
        code, _, body = self.request("GET", "/v1/agent/health/service/id/nope")
        assert code == 404 and json.loads(body)["AggregatedStatus"] == "critical"
        code, _, body = self.request("GET", "/v1/agent/health/service/name/nope?format=text")
        assert (code, body) == (404, b"ServiceName nope Not Found")
        assert self.request("GET", "/v1/agent/health/service/name/nope")[::2] == (404, b"[]")


class TxnTests(APITestCase):
    """PUT /v1/txn: KV operations all together, or 409 and nothing."""

    def txn(self, ops: Any) -> tuple[int, Any]:
        code, _, body = self.request("PUT", "/v1/txn", ops)
        return code, json.loads(body) if body.startswith((b"{", b"[")) else body

    def test_results_and_conflicts_in_consuls_shape(self) -> None:
        value = base64.b64encode(b"postgres://db").decode()
        code, answer = self.txn(
            [
                {"KV": {"Verb": "set", "Key": "app/db", "Value": value, "Flags": 7}},
                {"kv": {"verb": "get", "key": "app/db"}},
            ]
        )
        assert code == 200 and answer["Errors"] is None
        written, read = (r["KV"] for r in answer["Results"])
        assert (written["Key"], written["Value"], written["Flags"]) == ("app/db", None, 7)
        assert read["Value"] == value and read["ModifyIndex"] == written["ModifyIndex"]

        code, answer = self.txn(
            [
                {"KV": {"Verb": "set", "Key": "app/cache", "Value": value}},
                {"KV": {"Verb": "check-index", "Key": "app/db", "Index": 1}},
            ]
        )
        assert code == 409 and answer["Results"] is None
        assert answer["Errors"] == [
            {"OpIndex": 1, "What": f"current modify index {written['ModifyIndex']} != 1"}
        ]
        assert self.request("GET", "/v1/kv/app/cache")[0] == 404

    def test_bad_transactions_are_refused_before_anything_runs(self) -> None:
        many = [{"KV": {"Verb": "get", "Key": f"k{n}"}} for n in range(129)]
        big = base64.b64encode(b"x" * (512 * 1024 + 1)).decode()
        for body, status, text in [
            (many, 413, b"Transaction contains too many operations (129 > 128)"),
            ([{"KV": {"Verb": "set", "Key": "k", "Value": big}}], 413, b"is too large"),
            ([{"KV": {"Verb": "set", "Key": "k", "Value": "%%%"}}], 400, b"illegal base64"),
            ([{"Node": {"Verb": "get"}}], 400, b"KV operations"),
            ([{"KV": {"Verb": "set", "Key": "k", "Bogus": 1}}], 400, b'unknown field "Bogus"'),
            ({"KV": {}}, 400, b"cannot unmarshal object"),
            (b"[not json", 400, b"Request decode failed"),
        ]:
            code, _, answer = self.request("PUT", "/v1/txn", body)
            assert (code, text in answer) == (status, True), (status, code, answer[:200])
        assert self.daemon.catalog.kv == {}


class NodeMetaTests(APITestCase):
    """?node-meta=key:value and ?filter= narrow catalog, health and agent reads
    (Prometheus' consul_sd node_meta and filter)."""

    def setUp(self) -> None:
        super().setUp()
        for node, rack, address in [("web-a", "r1", "10.0.0.1"), ("web-b", "r2", "10.0.0.2")]:
            self.put(
                "/v1/catalog/register",
                {
                    "Node": node,
                    "Address": address,
                    "NodeMeta": {"rack": rack, "env": "prod"},
                    "Service": {"Service": "web", "Port": 80, "Tags": [rack]},
                },
            )

    def test_node_meta_filters_every_catalog_and_health_read(self) -> None:
        nodes = self.get("/v1/catalog/nodes?node-meta=rack:r1")
        assert [n["Node"] for n in nodes] == ["web-a"]
        both = self.get("/v1/catalog/nodes?node-meta=env:prod")
        assert [n["Node"] for n in both] == ["web-a", "web-b"]
        assert self.get("/v1/catalog/nodes?node-meta=env:prod&node-meta=rack:r2")[0]["Node"] == (
            "web-b"
        )
        assert self.get("/v1/catalog/services?node-meta=rack:r2") == {"web": ["r2"]}
        assert self.get("/v1/catalog/services?node-meta=rack:r9") == {}
        service = self.get("/v1/catalog/service/web?node-meta=rack:r1")
        assert [s["Node"] for s in service] == ["web-a"]
        health = self.get("/v1/health/service/web?node-meta=rack:r2")
        assert [h["Node"]["Node"] for h in health] == ["web-b"]

    def test_filter_expressions_narrow_catalog_health_and_agent_reads(self) -> None:
        def get(path: str, expression: str) -> Any:
            return self.get(f"{path}?filter={quote(expression)}")

        service = get("/v1/catalog/service/web", 'NodeMeta.rack == "r1"')
        assert [s["Node"] for s in service] == ["web-a"]
        assert get("/v1/catalog/service/web", 'ServiceTags contains "r2"')[0]["Node"] == "web-b"
        assert get("/v1/catalog/services", 'NodeMeta.rack == "r2"') == {"web": ["r2"]}
        assert get("/v1/catalog/services", "ServicePort != 80") == {"consul": []}
        assert [n["Node"] for n in get("/v1/catalog/nodes", 'Meta.rack == "r2"')] == ["web-b"]
        health = get("/v1/health/service/web", 'Node.Meta.rack == "r1" and Service.Port == 80')
        assert [h["Node"]["Node"] for h in health] == ["web-a"]
        self.put("/v1/agent/service/register", {"Name": "api", "Tags": ["internal"]})
        assert list(get("/v1/agent/services", '"internal" in Tags')) == ["api"]
        assert get("/v1/agent/services", "Tags is empty") == {}
        assert get("/v1/health/state/any", 'CheckID == "serfHealth"')[0]["Node"] == "testnode"
        assert len(self.get("/v1/catalog/service/web?filter=")) == 2  # empty: no filter

    def test_a_bad_filter_is_consuls_500_with_go_bexprs_reason(self) -> None:
        for expression, text in [
            ('Nod == "web-a"', b'Failed to create boolean expression evaluator: Selector "Nod"'),
            ('Node = "web-a"', b"Failed to create boolean expression evaluator: "),
        ]:
            code, _, body = self.request(
                "GET", f"/v1/catalog/service/web?filter={quote(expression)}"
            )
            assert (code, body.startswith(text)) == (500, True), body


class NodeDumpTests(APITestCase):
    def test_the_ui_node_dump_has_every_node_with_its_services_and_checks(self) -> None:
        """/v1/internal/ui/nodes, Consul's UI dump: what the dashboard reads in one go."""
        self.put("/v1/agent/service/register", {"Name": "web", "Check": {"TTL": "30s"}})
        self.put(
            "/v1/catalog/register",
            {"Node": "db-1", "Address": "10.0.0.9", "Service": {"Service": "db", "Port": 5432}},
        )
        dump = self.get("/v1/internal/ui/nodes")
        assert [n["Node"] for n in dump] == ["db-1", "testnode"]
        db, me = dump
        assert [s["Service"] for s in db["Services"]] == ["db"] and db["Checks"] == []
        assert sorted(s["ID"] for s in me["Services"]) == ["consul", "web"]
        assert sorted(c["CheckID"] for c in me["Checks"]) == ["serfHealth", "service:web"]
        assert me["Address"] == "127.0.0.1" and "Meta" in me
        assert [
            n["Node"] for n in self.get("/v1/internal/ui/nodes?filter=Address%20==%2010.0.0.9")
        ] == ["db-1"]


#: (method, path, body, status, the answer's text) for each of the catalog's errors, as
#: Consul answers it; a text ending in ": " is the start of the answer.
_REFUSED = "is defined in a --config-dir file"
ERROR_ANSWERS: list[tuple[str, str, Any, int, bytes]] = [
    ("PUT", "/v1/catalog/register", {"Datacenter": "dc2"}, 500, b"No path to datacenter"),
    (
        "PUT",
        "/v1/catalog/deregister",
        {"node": "n", "datacenter": "dc2"},
        500,
        b"No path to datacenter",
    ),
    (
        "PUT",
        "/v1/catalog/register",
        {"Node": "ghost", "SkipNodeUpdate": True},
        500,
        b'Node "ghost" does not exist',
    ),
    (
        "PUT",
        "/v1/catalog/register",
        {"Node": "n", "Address": "10.0.0.1", "Check": {"CheckID": "c", "ServiceID": "db"}},
        500,
        b'ServiceID "db" does not exist',
    ),
    (
        "PUT",
        "/v1/catalog/register",
        {"Node": "n", "Address": "10.0.0.1", "Check": {"CheckID": "c", "Status": "meh"}},
        400,
        b'Invalid check status: "meh"',
    ),
    (
        "PUT",
        "/v1/agent/service/deregister/nope",
        None,
        404,
        b'Unknown service ID "nope". Ensure that the service ID is passed, not the service name.',
    ),
    (
        "PUT",
        "/v1/agent/service/deregister/consul",
        None,
        404,
        b'Unknown service ID "consul". Ensure that the service ID is passed, not the service name.',
    ),
    (
        "PUT",
        "/v1/agent/service/maintenance/nope?enable=true",
        None,
        404,
        b'Unknown service ID "nope"',
    ),
    ("GET", "/v1/agent/service/consul", None, 404, b"unknown service ID: consul"),
    (
        "PUT",
        "/v1/agent/service/register",
        {"Name": "cache"},
        400,
        f'Service "cache" {_REFUSED}; change it there'.encode(),
    ),
    (
        "PUT",
        "/v1/agent/service/deregister/cache",
        None,
        400,
        f'Service "cache" {_REFUSED}; remove it there'.encode(),
    ),
    (
        "PUT",
        "/v1/agent/check/register",
        {"Name": "x", "ServiceID": "db", "TTL": "10s"},
        404,
        b'ServiceID "db" does not exist',
    ),
    (
        "PUT",
        "/v1/agent/check/register",
        {"Name": "disk", "TTL": "10s"},
        400,
        b'Check "disk" is not managed through the API',
    ),
    (
        "PUT",
        "/v1/agent/check/register",
        {"Name": "serfHealth", "TTL": "10s"},
        400,
        b'Check "serfHealth" is not managed through the API',
    ),
    (
        "PUT",
        "/v1/agent/check/deregister/nope",
        None,
        404,
        b'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.',
    ),
    ("PUT", "/v1/agent/check/pass/tcp", None, 500, b'CheckID "tcp" does not have associated TTL'),
    (
        "PUT",
        "/v1/agent/check/update/service:web",
        {"Status": "meh"},
        400,
        b"Invalid check status: 'meh'",
    ),
    (
        "PUT",
        "/v1/kv/k",
        b"x" * (512 * 1024 + 1),
        413,
        b"Request body(524289 bytes) too large, max size: 524288 bytes",
    ),
    ("PUT", "/v1/kv/k?acquire=", b"", 500, b"Missing session"),
    ("PUT", "/v1/kv/k?acquire=ghost", b"", 500, b'invalid session "ghost"'),
    ("PUT", "/v1/session/create", {"Node": "ghost"}, 500, b"Missing node registration"),
    (
        "PUT",
        "/v1/session/create",
        {"Checks": ["nope"]},
        500,
        b"Missing check 'nope' registration",
    ),
    ("PUT", "/v1/session/create", {"Behavior": "keep"}, 500, b"Invalid Behavior setting 'keep'"),
    ("PUT", "/v1/session/create", {"TTL": "soon"}, 500, b"Session TTL 'soon' invalid: "),
    (
        "PUT",
        "/v1/session/create",
        {"TTL": "1s"},
        500,
        b"Invalid Session TTL '1000000000', must be between [10s=24h0m0s]",
    ),
    (
        "PUT",
        "/v1/txn",
        [{"KV": {"Verb": "get", "Key": "k"}}] * 129,
        413,
        b"Transaction contains too many operations (129 > 128)",
    ),
    (
        "PUT",
        "/v1/txn",
        [{"KV": {"Verb": "set", "Key": "k", "Value": base64.b64encode(b"x" * 524289).decode()}}],
        413,
        b'Value for key "k" is too large (524289 > 524288 bytes)',
    ),
]

#: (op, the start of its failure) for each way one op of a transaction fails.
TXN_FAILURES: list[tuple[dict[str, Any], str]] = [
    ({"Verb": "check-not-exists", "Key": "k"}, 'key "k" exists'),
    ({"Verb": "get", "Key": "nope"}, 'key "nope" doesn\'t exist'),
    ({"Verb": "check-index", "Key": "k", "Index": 1}, "current modify index "),
    ({"Verb": "check-session", "Key": "k", "Session": "s"}, 'current session "" != "s"'),
    ({"Verb": "delete-cas", "Key": "k", "Index": 1}, 'failed to delete key "k", index is stale'),
    ({"Verb": "cas", "Key": "k", "Index": 1}, 'failed to set key "k", index is stale'),
    ({"Verb": "lock", "Key": "k"}, "Missing session"),
    ({"Verb": "lock", "Key": "k", "Session": "ghost"}, 'invalid session "ghost"'),
    ({"Verb": "unlock", "Key": "k", "Session": "s"}, 'failed to unlock key "k", lock isn\'t held'),
    ({"Verb": "Frob", "Key": "k"}, 'unknown KV verb "frob"'),
]


class ErrorAnswerTests(APITestCase):
    """Each of the catalog's errors, as Consul answers it: the status and the exact body."""

    def setUp(self) -> None:
        config = Path(tempfile.mkdtemp(prefix="homeport-config-"))
        self.addCleanup(shutil.rmtree, config, True)
        definition = {"service": {"name": "cache"}, "check": {"name": "disk", "ttl": "30s"}}
        (config / "cache.json").write_text(json.dumps(definition))
        self.args = ["--config-dir", str(config)]
        super().setUp()
        self.put("/v1/agent/service/register", {"Name": "web", "Check": {"TTL": "10s"}})
        tcp = {"Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "9s"}
        self.put("/v1/agent/check/register", tcp)

    def test_every_error_has_consul_s_status_and_text(self) -> None:
        for method, path, body, status, text in ERROR_ANSWERS:
            code, _, answer = self.request(method, path, body)
            assert code == status, (path, body, answer)
            assert answer == text or (text.endswith(b": ") and answer.startswith(text)), answer

    def test_a_session_on_a_critical_check_is_refused(self) -> None:
        self.put("/v1/agent/check/fail/service:web")
        code, _, answer = self.request("PUT", "/v1/session/create", {"Checks": ["service:web"]})
        assert (code, answer) == (500, b"Check 'service:web' is in critical state")

    def test_a_failed_transaction_names_the_op_and_why(self) -> None:
        self.put("/v1/kv/k", b"v")
        for op, what in TXN_FAILURES:
            body = [{"KV": {"Verb": "set", "Key": "other"}}, {"KV": op}]
            code, _, answer = self.request("PUT", "/v1/txn", body)
            assert code == 409, answer
            assert json.loads(answer) == {"Results": None, "Errors": [{"OpIndex": 1, "What": ANY}]}
            [error] = json.loads(answer)["Errors"]
            assert error["What"].startswith(what), error
        assert "other" not in self.daemon.catalog.kv

    def test_the_error_table_answers_every_error_the_catalog_raises(self) -> None:
        """A new error without a row would be a logged 500: every one has its row."""

        def leaves(kind: type[CatalogError]) -> Iterator[type[CatalogError]]:
            for sub in kind.__subclasses__():
                if dataclasses.is_dataclass(sub) and not issubclass(sub, TxnFailure):
                    yield sub
                yield from leaves(sub)

        missing = sorted(k.__name__ for k in leaves(CatalogError) if k not in ERRORS.rows)
        assert missing == []


class AgentSelfStatsTests(APITestCase):
    def test_agent_self_stats_are_a_consul_servers_agreeing_with_status(self) -> None:
        """``Stats.consul`` as Consul's ``Server.Stats``: its own leader, as
        ``/v1/status/leader`` and ``/v1/status/peers`` say (issue #14, item 4)."""
        me = self.get("/v1/agent/self")
        leader = self.get("/v1/status/leader")
        assert leader == "127.0.0.1:8300"
        assert self.get("/v1/status/peers") == [leader]
        assert me["Stats"]["consul"] == {
            "server": "true",
            "leader": "true",
            "leader_addr": leader,
            "bootstrap": "true",
            "known_datacenters": "1",
            "acl": "disabled",
        }
        raft = me["Stats"]["raft"]
        assert (raft["state"], raft["num_peers"]) == ("Leader", "0")
        node_id = me["Config"]["NodeID"]
        assert raft["latest_configuration"] == f"[{{Suffrage:Voter ID:{node_id} Address:{leader}}}]"
        before = int(raft["commit_index"])
        self.put("/v1/kv/k", b"v")
        raft = self.get("/v1/agent/self")["Stats"]["raft"]
        assert int(raft["commit_index"]) == int(raft["applied_index"]) > before
        assert me["Config"]["Server"] is True
