"""Consul's prepared query routes: ``/v1/query`` and ``/v1/query/:id[/execute|/explain]``.

Routes of the catalog's :class:`~homeport.http.api.ApiResource` (token for writes,
``?dc=``, ``?pretty``, errors and metrics as every Consul route); the rules are
:mod:`.queries`'.  As in Consul's ``PreparedQuerySpecific``, everything after
``/v1/query/`` is the ID or name, less a final ``/execute`` or ``/explain``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ..http.api import TEXT, ApiResource, Call, Reply, json_reply
from ..http.errors import ErrorTable, HTTPError
from . import queries
from .errors import ServerRefusal
from .model import Catalog

ERRORS = ErrorTable({queries.QueryNotFound: (404, str)})


def routes(
    api: ApiResource,
    catalog: Catalog,
    node: str,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> None:
    """Add the routes to *api*; *node* is the agent's (``Near: "_agent"``)."""
    face = QueryRoutes(catalog, node, new_id)
    api.errors.rows.update(ERRORS.rows)
    api.route("POST", "/v1/query", face.create)
    api.route("GET", "/v1/query", face.list)
    # Each result is shuffled anew, as Consul's: never from the read cache.
    api.route("GET", "/v1/query/*id", face.read, volatile=True)
    api.route("PUT", "/v1/query/*id", face.update)
    api.route("DELETE", "/v1/query/*id", face.delete)


class QueryRoutes:
    def __init__(self, catalog: Catalog, node: str, new_id: Callable[[], str]) -> None:
        self.catalog = catalog
        self.node = node
        self.new_id = new_id

    def create(self, call: Call) -> Reply:
        query_id = queries.create(self.catalog, queries.decode(call.body), self.new_id)
        return json_reply({"ID": query_id}, pretty=call.pretty)

    def list(self, call: Call) -> Reply:
        found = sorted(self.catalog.queries.values(), key=lambda q: q.id)
        return json_reply([queries.query_json(q) for q in found], pretty=call.pretty)

    def read(self, call: Call) -> Reply:
        target = call.params["id"]
        if target.endswith("/execute"):
            return self._execute(call, target.removesuffix("/execute"))
        if target.endswith("/explain"):
            query = queries.resolve(self.catalog, target.removesuffix("/explain"))
            return json_reply({"Query": queries.query_json(query)}, pretty=call.pretty)
        found = self.catalog.queries.get(target)
        if found is None:
            raise queries.QueryNotFound()
        return json_reply([queries.query_json(found)], pretty=call.pretty)

    def _execute(self, call: Call, target: str) -> Reply:
        limit = _first(call, "limit")
        try:
            count = int(limit) if limit else 0
        except ValueError:
            raise ServerRefusal(
                f'Bad limit: strconv.Atoi: parsing "{limit}": invalid syntax'
            ) from None
        source = queries.Source(agent_node=self.node, near=_first(call, "near"), limit=count)
        result = queries.execute(self.catalog, target, source)
        return json_reply(queries.result_json(result, self.catalog.datacenter), pretty=call.pretty)

    def update(self, call: Call) -> Reply:
        target = call.params["id"]
        _not_a_read(target, "PUT")
        fields = queries.decode(call.body) if call.body else queries.empty()
        queries.update(self.catalog, target, fields)
        return Reply(b"", content_type=TEXT)

    def delete(self, call: Call) -> Reply:
        target = call.params["id"]
        _not_a_read(target, "DELETE")
        queries.delete(self.catalog, target)
        return Reply(b"", content_type=TEXT)


def _not_a_read(target: str, method: str) -> None:
    """``/execute`` and ``/explain`` are GET only (Consul's MethodNotAllowedError)."""
    if target.endswith(("/execute", "/explain")):
        raise HTTPError(405, f"method {method} not allowed", {"Allow": "OPTIONS,GET"})


def _first(call: Call, name: str) -> str:
    """Go's ``URL.Query().Get``: the first value ("" when absent)."""
    values = call.args.get(name)
    return values[0] if values else ""
