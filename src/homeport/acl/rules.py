"""Consul's ACL rule language: HCL v1 (or its JSON form) in, a tuple of :class:`Rule` out.

The syntax and the checks follow Consul's ``acl/policy.go`` and ``policy_ce.go``::

    service "web" { policy = "write" }          # exact name
    key_prefix "app/" { policy = "read" }       # every name that starts with "app/"
    operator = "read"                           # a resource without names

    {"service": {"web": {"policy": "write"}}}   # the same in JSON

HCL is parsed by pyhcl, the Python port of HCL v1 (what Consul decodes rules with).
What does not parse, names a resource Consul does not know, or gives an access a
resource does not take is a :class:`PolicyError` with the line and column (1-based)
where it went wrong.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hcl.parser import HclParser  # type: ignore[import-untyped]

from homeport.errors import error

READ = "read"
WRITE = "write"
LIST = "list"
DENY = "deny"

#: Resources a rule names, each as exact-name and ``_prefix`` blocks.
NAMED = ("agent", "event", "key", "node", "query", "service", "session")
#: Resources with one access each (``operator = "read"``); ``log`` and ``ui`` are
#: homeport's own (log ingest and search, the dashboard).
NAMELESS = ("acl", "keyring", "mesh", "operator", "peering", "log", "ui")
#: What a block of each named resource may hold besides ``policy``.
_EXTRA_FIELDS = {"service": ("intentions",)}
_ACCESS = (READ, WRITE, DENY)
#: ``key`` and ``key_prefix`` also take ``list`` (Consul's KeyList).
_KEY_ACCESS = (READ, WRITE, LIST, DENY)


@error
class PolicyError(Exception):
    """Rules that do not parse, or parse into something Consul refuses."""

    message: str
    line: int
    column: int

    def __str__(self) -> str:
        where = f" at line {self.line}, column {self.column}" if self.line else ""
        return f"Failed to parse ACL rules: {self.message}{where}"


@dataclass(frozen=True)
class Rule:
    """One grant: *access* on the *resource* called *name* (or every name starting with
    it, if *prefix*).  Name-less resources (``operator``...) have name ``""``.

    ``service`` blocks also give an ``intention`` rule when they say ``intentions``."""

    resource: str
    name: str
    prefix: bool
    access: str


def parse_rules(text: str) -> tuple[Rule, ...]:
    """The rules in *text*, Consul's HCL or JSON rule syntax; empty text is no rules."""
    return _parse(text)


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> tuple[Rule, ...]:
    if not text.strip():
        return ()
    tree = _load(text)
    if not isinstance(tree, dict):
        raise PolicyError("rules must be an object", *_position(text, 0))
    rules: list[Rule] = []
    for key, value in tree.items():
        rules.extend(_top_level(text, key, value))
    return tuple(rules)


class _Repeated(list[Any]):
    """The values of a key written more than once in one object, in order: repeated
    blocks (``service "a" {...}`` twice, merged as Consul merges them) or an argument
    set twice (which Consul refuses)."""


def _collect(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """A dict of *pairs*, a key given more than once holding a :class:`_Repeated`."""
    collected: dict[Any, Any] = {}
    for key, value in pairs:
        if key not in collected:
            collected[key] = value
        elif isinstance(collected[key], _Repeated):
            collected[key].append(value)
        else:
            collected[key] = _Repeated([collected[key], value])
    return collected


class _HclParser(HclParser):
    """pyhcl's parser, but a key written twice is kept twice (pyhcl lets the last one
    win, where Consul merges repeated blocks and refuses a repeated argument)."""

    def objectlist_flat(self, lt: list[tuple[Any, Any]], replace: bool) -> dict[Any, Any]:
        return _collect(lt)


class _Parser:
    """One pyhcl parser, made on first use and kept: making one builds its LALR tables
    (some 50 ms; pyhcl ships none), parsing with it takes about 1 ms.  A parse keeps
    its state in the parser, so one runs at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parser: Any = None

    def parse(self, text: str) -> Any:
        with self._lock:
            if self._parser is None:
                self._parser = _HclParser()
            return self._parser.parse(text)


_HCL = _Parser()


def _load(text: str) -> Any:
    """pyhcl's parse of *text* (JSON if it starts with "{", as pyhcl and Consul's HCL
    decide), its errors made a :class:`PolicyError` with a position."""
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text, object_pairs_hook=_collect)
        return _HCL.parse(text)
    except json.JSONDecodeError as e:
        raise PolicyError(e.msg, e.lineno, e.colno) from None
    except ValueError as e:
        raise _hcl_error(text, str(e)) from None


#: pyhcl's lexer says "Line L, column C, index I: msg"; its parser "Line L, column I:
#: msg" where the "column" is the offset in the whole text.
_LEXER = re.compile(r"Line \d+, column \d+, index (\d+): (.*)", re.DOTALL)
_PARSER = re.compile(r"Line \d+, column (\d+): (.*)", re.DOTALL)


def _hcl_error(text: str, said: str) -> PolicyError:
    for pattern in (_LEXER, _PARSER):
        match = pattern.match(said)
        if match:
            offset, message = int(match.group(1)), match.group(2)
            return PolicyError(message, *_position(text, offset))
    # "Unexpected end of file; expected ...": where the text ends.
    return PolicyError(said, *_position(text, len(text.rstrip())))


def _q(value: str) -> str:
    """*value* quoted as Go's %q would (Consul's messages quote names so)."""
    return json.dumps(value, ensure_ascii=False)


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of *offset* in *text*."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _top_level(text: str, key: str, value: Any) -> list[Rule]:
    if key in NAMELESS:
        return _nameless(text, key, value)
    base, prefix = (key[: -len("_prefix")], True) if key.endswith("_prefix") else (key, False)
    if base not in NAMED:
        raise PolicyError(f"Unknown ACL resource {_q(key)}", *_locate(text, key))
    entries = _entries(value)
    if entries is None:
        raise PolicyError(
            f'{key} rules take a name: {key} "<name>" {{ policy = "read" }}',
            *_locate(text, key),
        )
    rules: list[Rule] = []
    for name, block in entries:
        rules.extend(_named(text, key, base, prefix, name, block))
    return rules


def _entries(value: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """The (name, block) pairs of a named resource's value: ``{name: block}``, or a
    list of those (repeated blocks; HCL's JSON arrays), a name's block repeated too.
    None if that is not its shape."""
    entries: list[tuple[str, dict[str, Any]]] = []
    for group in value if isinstance(value, list) else [value]:
        if not isinstance(group, dict):
            return None
        for name, block in group.items():
            for one in block if isinstance(block, list) else [block]:
                if not isinstance(one, dict):
                    return None
                entries.append((str(name), one))
    return entries


def _repeated(text: str, *path: str) -> PolicyError:
    """Consul's error for an argument set twice, at the second one."""
    first = _offset(text, 0, *path)
    again = _offset(text, first + 1, path[-1]) if first is not None else None
    line, column = _position(text, again if again is not None else first or 0)
    return PolicyError(
        f"The argument {_q(path[-1])} was already set. Each argument can only be defined once",
        line,
        column,
    )


def _nameless(text: str, key: str, value: Any) -> list[Rule]:
    if isinstance(value, _Repeated):
        raise _repeated(text, key)
    if not isinstance(value, str):
        raise PolicyError(f'{key} takes one access: {key} = "read"', *_locate(text, key))
    if value == "":  # allowed, and grants nothing (Consul: "allowed to be empty")
        return []
    if value not in _ACCESS:
        raise PolicyError(f"Invalid {key} policy: {_q(value)}", *_locate(text, key, value=True))
    return [Rule(key, "", False, value)]


def _named(text: str, key: str, base: str, prefix: bool, name: str, block: Any) -> list[Rule]:
    allowed = ("policy", *_EXTRA_FIELDS.get(base, ()))
    for field, value in block.items():
        if field not in allowed:
            raise PolicyError(
                f"Unknown field {_q(field)} in {key} {_q(name)}", *_locate(text, key, name, field)
            )
        if isinstance(value, _Repeated):
            raise _repeated(text, key, name, field)
        if not isinstance(value, str):
            raise PolicyError(
                f"{key} {_q(name)}: {field} must be a string",
                *_locate(text, key, name, field, value=True),
            )
    policy = block.get("policy", "")
    valid = _KEY_ACCESS if base == "key" else _ACCESS
    if policy not in valid:
        raise PolicyError(
            f"Invalid {key} policy: {_q(name)} has policy {_q(policy)}",
            *_locate(text, key, name, "policy", value=True),
        )
    rules = [Rule(base, name, prefix, policy)]
    intentions = block.get("intentions", "")
    if intentions:
        if intentions not in _ACCESS:
            raise PolicyError(
                f"Invalid {key} intentions policy: {_q(name)} has intentions {_q(intentions)}",
                *_locate(text, key, name, "intentions", value=True),
            )
        rules.append(Rule("intention", name, prefix, intentions))
    return rules


def _locate(text: str, *path: str, value: bool = False) -> tuple[int, int]:
    """Where *path* (a resource, then a name, then a field) is written in *text*: each
    step is searched for after the one before, as a quoted string or a bare word, and
    the position is that of the last one found (with *value*, of what follows its ``=``
    or ``:``).  The start of the text if none is."""
    offset, found = 0, 0
    for word in path:
        start = _offset(text, offset, word)
        if start is None:
            return _position(text, found)
        found, offset = start, start + 1
    if value and path:
        after = re.compile(r"(?:\"(?:[^\"\\]|\\.)*\"|[\w-]+)\s*[=:]\s*").match(text, found)
        if after:
            found = after.end()
    return _position(text, found)


def _offset(text: str, start: int, *path: str) -> int | None:
    """Where the last of *path* is written in *text* after *start*, each word after the
    one before (see :func:`_locate`); None if one is not found."""
    found = None
    for word in path:
        pattern = re.escape(json.dumps(word))
        if re.fullmatch(r"[\w-]+", word):
            pattern += rf"|(?<![\w\"-]){re.escape(word)}(?![\w\"-])"
        match = re.compile(pattern).search(text, start)
        if match is None:
            return None
        found, start = match.start(), match.end()
    return found
