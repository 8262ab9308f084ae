"""ACL tokens, policies and roles as the catalog holds them, read by the Resolver.

They are catalog records (``acl-token``, ``acl-policy``, ``acl-role``), so they are
stored and replicated as everything else is: SQLite before the answer goes out, or one
etcd transaction whose commit every agent's watch brings back.  Any change to one, made
here or arriving from another agent, forgets every cached decision.
"""

from __future__ import annotations

from collections.abc import Callable

from ..acl import GLOBAL_MANAGEMENT, GLOBAL_MANAGEMENT_ID, PolicyRecord, RoleRecord, TokenRecord
from .model import ACL_KINDS, Catalog, Change


class AclRecords:
    """:class:`homeport.acl.Records` over a catalog's ACL tables."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        #: Called after any ACL change (the Resolver's invalidate).
        self.on_change: list[Callable[[], None]] = []
        self._by_hash: dict[str, str] | None = None
        catalog.subscribe(self._changed)

    def _changed(self, changes: list[Change]) -> None:
        if any(change.kind in ACL_KINDS for change in changes):
            self._by_hash = None
            for listener in list(self.on_change):
                listener()

    def _index(self) -> dict[str, str]:
        if self._by_hash is None:
            tokens = dict.values(self.catalog.acl_tokens)
            self._by_hash = {token.secret_hash: token.accessor for token in tokens}
        return self._by_hash

    def token_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        accessor = self._index().get(secret_hash)
        if accessor is None:
            return None
        found: TokenRecord | None = dict.get(self.catalog.acl_tokens, accessor)
        return found

    def policy(self, policy_id: str) -> PolicyRecord | None:
        found: PolicyRecord | None = dict.get(self.catalog.acl_policies, policy_id)
        if found is None and policy_id == GLOBAL_MANAGEMENT_ID:
            return GLOBAL_MANAGEMENT
        return found

    def role(self, role_id: str) -> RoleRecord | None:
        found: RoleRecord | None = dict.get(self.catalog.acl_roles, role_id)
        return found
