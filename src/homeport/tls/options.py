"""The TLS options of ``twist homeport``: checked at parse time, one clear line when bad."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.python import usage

OPTION_PARAMETERS: list[list[Any]] = [
    [
        "acme-directory",
        None,
        None,
        "ACME server directory URL for le:/lets: listeners. "
        "[default: Let's Encrypt (le:) or its staging server (lets:)]",
    ],
    [
        "acme-ca-file",
        None,
        None,
        "An extra trust root (PEM) for the ACME server's own HTTPS, e.g. pebble's.",
    ],
    ["acme-email", None, None, "Contact address registered with the ACME account."],
]


def validate_options(options: Any) -> None:
    """Check the TLS options in place; ``usage.UsageError`` naming the bad one."""
    directory = options["acme-directory"]
    if directory is not None and not re.match(r"^https?://[^/\s]+", directory):
        raise usage.UsageError(
            f"--acme-directory {directory!r}: expected a URL like "
            "https://acme-v02.api.letsencrypt.org/directory"
        )
    ca_file = options["acme-ca-file"]
    if ca_file is not None:
        try:
            data = Path(ca_file).read_bytes()
        except OSError as e:
            raise usage.UsageError(f"--acme-ca-file {ca_file!r}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise usage.UsageError(f"--acme-ca-file {ca_file!r}: no PEM certificate in it")
    email = options["acme-email"]
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise usage.UsageError(f"--acme-email {email!r}: not an e-mail address")


def create_empty_files(paths: list[str]) -> str | None:
    """``--empty-file``: create each file empty unless it exists; an error line or None.

    Exclusive create (``open(path, "x")``): an existing file, a certificate already
    issued for instance, is left exactly as it is.  Missing parent directories are made
    (0700: it is usually the certificate directory).
    """
    for name in paths:
        path = Path(name)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "x"):
                pass
        except FileExistsError:
            continue
        except OSError as e:
            return f"--empty-file {name!r}: {e.strerror}"
    return None
