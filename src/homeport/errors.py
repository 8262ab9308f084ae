"""Start-up errors (what stops the daemon before it serves, said in one line), and
:func:`error`, the shape of every typed error the parts raise."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NoReturn, TypeVar, dataclass_transform


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


def fail(message: str) -> NoReturn:
    """Print ``homeport: error: <message>`` and exit with status 1 (no traceback)."""
    sys.stderr.write(f"homeport: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


_E = TypeVar("_E", bound=BaseException)

#: What Python sets on every exception in flight.  ``contextlib`` (the catalog's
#: transactions) and Twisted's ``Failure.cleanFailure`` assign ``__traceback__`` from
#: Python code, which a plain frozen dataclass would refuse.
_IN_FLIGHT = frozenset(
    {"__traceback__", "__cause__", "__context__", "__suppress_context__", "__notes__"}
)


@dataclass_transform(frozen_default=True)
def error(cls: type[_E]) -> type[_E]:
    """Make *cls* a frozen dataclass exception: fields fixed once made, yet raisable
    through context managers and Deferreds."""
    frozen = dataclass(frozen=True)(cls)
    set_field = frozen.__setattr__

    def setattr_in_flight(self: BaseException, name: str, value: object) -> None:
        if name in _IN_FLIGHT:
            BaseException.__setattr__(self, name, value)
        else:
            set_field(self, name, value)  # raises FrozenInstanceError

    type.__setattr__(frozen, "__setattr__", setattr_in_flight)
    return frozen
