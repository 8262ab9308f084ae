"""Consul's ACL system, the pure core (shared, part-free: no part, no Twisted).

:mod:`~homeport.acl.rules` parses Consul's rule language, :mod:`~homeport.acl.authorizer`
compiles rules into the decisions a face asks for, and :mod:`~homeport.acl.tokens`
holds the stored records and the :class:`~homeport.acl.tokens.Resolver` from a secret to
its Authorizer.
"""

from homeport.acl.authorizer import (
    ANONYMOUS_ACCESSOR,
    RESOURCES,
    Authorizer,
    PermissionDenied,
    TokenNotFound,
    compile_rules,
    filter_items,
    filter_names,
    management,
)
from homeport.acl.rules import PolicyError, Rule, parse_rules
from homeport.acl.tokens import (
    ANONYMOUS_SECRET,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_ID,
    DecisionCache,
    NodeIdentity,
    PolicyRecord,
    Records,
    Resolver,
    RoleRecord,
    ServiceIdentity,
    TokenRecord,
    anonymous_token,
    expired,
    hash_secret,
    new_accessor,
    new_secret,
)

__all__ = [
    "ANONYMOUS_ACCESSOR",
    "ANONYMOUS_SECRET",
    "GLOBAL_MANAGEMENT",
    "GLOBAL_MANAGEMENT_ID",
    "RESOURCES",
    "Authorizer",
    "DecisionCache",
    "NodeIdentity",
    "PermissionDenied",
    "PolicyError",
    "PolicyRecord",
    "Records",
    "Resolver",
    "RoleRecord",
    "Rule",
    "ServiceIdentity",
    "TokenNotFound",
    "TokenRecord",
    "anonymous_token",
    "compile_rules",
    "expired",
    "filter_items",
    "filter_names",
    "hash_secret",
    "management",
    "new_accessor",
    "new_secret",
    "parse_rules",
]
