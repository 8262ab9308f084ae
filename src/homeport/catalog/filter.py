"""Consul's ``?filter=`` expressions (go-bexpr), evaluated on the JSON a read returns.

The grammar is the one Consul documents::

    expression  := or ;  or := and ("or" and)* ;  and := unary ("and" unary)*
    unary       := "not" unary | "(" expression ")" | match
    match       := selector ("==" | "!=") value
                 | selector ["not"] ("contains" | "matches") value
                 | value ["not"] "in" selector
                 | selector "is" ["not"] "empty"
    selector    := name ("." name | "[" string "]")*
    value       := "double" | `raw` | a bare word or number

A selector walks the result's fields (``Service.Tags``, ``NodeMeta.rack``,
``Checks.Status``); through a list it collects every element's field, so
``Checks.Status contains "critical"`` asks whether any check is critical.  A first
field the results do not have is refused (Consul: 'Selector ... is not valid'); a
missing map key is empty.  ``==`` compares as text (``ServicePort == 80``, ``true``).
``matches`` uses RE2 (google-re2), the syntax Consul's Go regexp has, in linear time:
an expression in a read request cannot make the reactor backtrack for minutes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import re2  # type: ignore[import-untyped]

from ..errors import error
from .errors import BadRequest

Matcher = Callable[[Any], bool]
#: go-bexpr's ``CreateFilter`` puts this before every reason it refuses an expression.
REFUSED = "Failed to create boolean expression evaluator: "


@error
class InvalidFilter(BadRequest):
    """An expression go-bexpr refuses.  Consul hands that error back as it is (not a
    ``BadRequestError``), so its HTTP layer answers **500** with the text."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the client's 400, not a line on stderr
MAX_DEPTH = 64  # nested parentheses and "not"s: deeper is refused, not a RecursionError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>==|!=|\(|\)|\[|\]|\.)
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | `(?P<bq>[^`]*)`
      | (?P<word>[^\s()\[\].=!"`]+(?:\.[0-9]+)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "is", "empty"}


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is "op", "str" (quoted) or "word"."""
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise BadRequest(f"Failed to create boolean expression evaluator: bad text at {pos}")
        pos = m.end()
        if m.group("op") is not None:
            out.append(("op", m.group("op")))
        elif m.group("dq") is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group("dq"))))
        elif m.group("bq") is not None:
            out.append(("str", m.group("bq")))
        else:
            out.append(("word", m.group("word")))
    return out


class _Parser:
    def __init__(self, text: str, fields: set[str]) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.fields = fields
        self.depth = 0

    def fail(self, why: str) -> BadRequest:
        return BadRequest(f"Failed to create boolean expression evaluator: {why}")

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        n = self.pos + offset
        return self.tokens[n] if n < len(self.tokens) else None

    def keyword(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token[0] == "word" and token[1].lower() == word

    def take(self, kind: str, text: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            raise self.fail(f"expected {text or kind} at token {self.pos + 1}")
        self.pos += 1
        return token[1]

    def parse(self) -> Matcher:
        if not self.tokens:
            raise self.fail("an empty expression")
        matcher = self.or_()
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected {self.tokens[self.pos][1]!r}")
        return matcher

    def or_(self) -> Matcher:
        parts = [self.and_()]
        while self.keyword("or"):
            self.pos += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def and_(self) -> Matcher:
        parts = [self.unary()]
        while self.keyword("and"):
            self.pos += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def unary(self) -> Matcher:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        try:
            if self.keyword("not"):
                self.pos += 1
                inner = self.unary()
                return lambda item: not inner(item)
            if self.peek() == ("op", "("):
                self.pos += 1
                inner = self.or_()
                self.take("op", ")")
                return inner
            return self.match()
        finally:
            self.depth -= 1

    def value(self) -> str:
        token = self.peek()
        if token is None or token[0] not in ("str", "word"):
            raise self.fail(f"expected a value at token {self.pos + 1}")
        self.pos += 1
        return token[1]

    def selector(self) -> list[str]:
        token = self.peek()
        if token is None or token[0] != "word" or token[1].lower() in _KEYWORDS:
            raise self.fail(f"expected a selector at token {self.pos + 1}")
        self.pos += 1
        path = [token[1]]
        while True:
            if self.peek() == ("op", "."):
                self.pos += 1
                path.append(self.take("word"))
            elif self.peek() == ("op", "["):
                self.pos += 1
                path.append(self.value())
                self.take("op", "]")
            else:
                break
        if self.fields and path[0] not in self.fields:
            raise BadRequest(f'Selector "{".".join(path)}" is not valid')
        return path

    def match(self) -> Matcher:
        # value [not] in selector
        negate_in = self.keyword("not", 1) and self.keyword("in", 2)
        if self.keyword("in", 1) or negate_in:
            wanted = self.value()
            self.pos += 2 if negate_in else 1
            path = self.selector()
            return _negated(lambda item: _contains(_select(item, path), wanted), negate_in)
        path = self.selector()
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.pos += 1
            wanted = self.value()
            equal = token == ("op", "==")
            return lambda item: _equals(_select(item, path), wanted) == equal
        if self.keyword("is"):
            self.pos += 1
            negate = self.keyword("not")
            self.pos += 1 if negate else 0
            if not self.keyword("empty"):
                raise self.fail("expected empty after is")
            self.pos += 1
            return _negated(lambda item: _empty(_select(item, path)), negate)
        negate = self.keyword("not")
        self.pos += 1 if negate else 0
        if self.keyword("contains"):
            self.pos += 1
            wanted = self.value()
            return _negated(lambda item: _contains(_select(item, path), wanted), negate)
        if self.keyword("matches"):
            self.pos += 1
            try:
                pattern = re2.compile(self.value(), options=_RE2_OPTIONS)
            except re2.error as e:
                reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else e
                raise self.fail(f"bad regular expression: {reason}") from None
            return _negated(lambda item: _matches(_select(item, path), pattern), negate)
        raise self.fail(f"expected an operator after {'.'.join(path)}")


#: RE2's (C++) error texts -> Go's ``regexp/syntax`` error codes.
_GO_CODES = {
    "missing )": "missing closing )",
    "missing ]": "missing closing ]",
    "unexpected )": "unexpected )",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid repetition size": "invalid repeat count",
    "missing argument to repetition operator": "missing argument to repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid named capture group": "invalid named capture",
    "invalid UTF-8": "invalid UTF-8",
    "bad UTF-8": "invalid UTF-8",
    "invalid escape sequence": "invalid escape sequence",
    "trailing \\": "trailing backslash at end of expression",
    "invalid character class": "invalid character class",
    "invalid character class range": "invalid character class range",
}


class GoRegexpError(ValueError):
    """A pattern Go's ``regexp.Compile`` refuses; ``str()`` is Go's text after
    ``error parsing regexp: `` (``missing closing ): `(abc```)."""


def go_regexp(pattern: str) -> Any:
    """*pattern* compiled as Go's ``regexp.Compile`` reads it (RE2 syntax, matched in
    linear time: no pattern makes the reactor backtrack), or :class:`GoRegexpError`."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as e:
        raw = e.args[0] if e.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        code, _, expr = text.partition(": ")
        raise GoRegexpError(f"{_GO_CODES.get(code, code)}: `{expr or pattern}`") from None


def _negated(matcher: Matcher, negate: bool) -> Matcher:
    return (lambda item: not matcher(item)) if negate else matcher


_MISSING = object()


def _select(item: Any, path: list[str]) -> Any:
    value = item
    for name in path:
        if isinstance(value, list):
            value = [_select(v, [name]) for v in value]
            value = [v for v in value if v is not _MISSING]
        elif isinstance(value, dict):
            value = value.get(name, _MISSING)
            if value is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None or value is _MISSING else str(value)


def _equals(value: Any, wanted: str) -> bool:
    if isinstance(value, list | dict):
        return False
    if isinstance(value, bool):
        return _text(value) == wanted.lower()
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    return _text(value) == wanted


def _contains(value: Any, wanted: str) -> bool:
    if isinstance(value, list):
        return any(_equals(v, wanted) for v in value)
    if isinstance(value, dict):
        return wanted in value
    return wanted in _text(value)


def _empty(value: Any) -> bool:
    if value is _MISSING or value is None:
        return True
    if isinstance(value, list | dict | str):
        return len(value) == 0
    return False


def _matches(value: Any, pattern: Any) -> bool:
    if isinstance(value, list):
        return any(_matches(v, pattern) for v in value)
    return isinstance(value, str) and pattern.search(value) is not None


def compile_filter(text: str, fields: set[str] | None = None) -> Matcher:
    """A predicate on one result (a JSON object) for the expression *text*.

    *fields*, the results' top-level field names, lets a misspelt selector be refused.
    """
    try:
        return _Parser(text, set(fields or ())).parse()
    except BadRequest as e:
        raise InvalidFilter(REFUSED + e.text.removeprefix(REFUSED)) from None
