"""Query strings as Consul's clients write them."""

from __future__ import annotations

from urllib.parse import parse_qs


def parse_args(uri: bytes) -> dict[str, list[str]]:
    """The query string, keeping bare flags: ``?recurse`` is ``{"recurse": [""]}``.

    (twisted.web's own ``request.args`` drops arguments without ``=``, and Consul's API
    is full of them: ``?recurse``, ``?keys``, ``?raw``, ``?pretty``, ``?passing``.)
    """
    query = uri.partition(b"?")[2]
    if not query:
        return {}
    return parse_qs(query.decode("utf-8", "replace"), keep_blank_values=True)
