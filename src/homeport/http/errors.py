"""Errors at the HTTP edge: each face's typed errors become a status and a text here.

The cores raise exceptions that carry data and no status code; a face gives its
:class:`ErrorTable` the rows that say how Consul (or homeport) answers each one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HTTPError(Exception):
    """An answer decided at the edge: its status, plain-text body and extra headers."""

    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)


#: How one kind of error is answered: its status, and its text made from the error.
Row = tuple[int, Callable[[Any], str]]


class ErrorTable:
    """Exception class -> (status, text); a subclass without a row of its own uses its
    nearest base's."""

    def __init__(self, rows: Mapping[type[Exception], Row] | None = None) -> None:
        self.rows: dict[type[Exception], Row] = dict(rows or {})

    def answer(self, error: Exception) -> HTTPError | None:
        """The answer to *error*, or None when no row covers it (a bug: 500)."""
        if isinstance(error, HTTPError):
            return error
        for kind in type(error).__mro__:
            row = self.rows.get(kind)
            if row is not None:
                status, text = row
                return HTTPError(status, text(error))
        return None
