"""``homeport``: the console command, the same as ``twist homeport`` with the same options.

``homeport --dns none`` runs ``twist homeport --dns none``; twist's own ``--log-format``
(and ``--log-level``) may be given anywhere and are handed to twist.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

#: twist's options that take a value, which ``homeport`` passes on to it.
TWIST_OPTIONS = ("--log-format", "--log-level", "--log-file", "--reactor")


def twist_argv(args: Sequence[str], program: str = "homeport") -> list[str]:
    """``twist``'s command line for ``homeport`` *args*."""
    twist: list[str] = []
    ours: list[str] = []
    words = list(args)
    while words:
        word = words.pop(0)
        name = word.split("=", 1)[0]
        if name in TWIST_OPTIONS:
            twist.append(word)
            if "=" not in word and words:
                twist.append(words.pop(0))
        else:
            ours.append(word)
    return [program, *twist, "homeport", *ours]


def main() -> None:
    # No garbage collection while everything is imported and built (about a tenth of
    # a container's start-up, bench/image_startup.py): tap.settle_heap turns it on.
    gc.disable()
    # The target of Twisted's own ``twist`` console script (twisted's entry_points).
    from twisted.application.twist._twist import Twist

    Twist.main(twist_argv(sys.argv[1:], sys.argv[0]))
