"""Reading client JSON: NaN/Infinity and lone surrogates, which Python lets through."""

from __future__ import annotations

import pytest

from homeport import strictjson


def test_lone_surrogates_become_the_replacement_character_as_in_go() -> None:
    value = strictjson.loads(r'{"k\ud800": ["a\udfff", "\ud83d\ude00", "plain"]}')
    assert value == {"k\ufffd": ["a\ufffd", "\U0001f600", "plain"]}
    assert strictjson.loads_keeping_text(b'{"m": "\\udcff"}') == {"m": "\ufffd"}
    assert strictjson.scrub(["x\udcffy", 1, None]) == ["x\ufffdy", 1, None]


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "[1e999]"])
def test_numbers_json_does_not_have_are_refused_or_kept_as_text(text: str) -> None:
    with pytest.raises(strictjson.NotJSON):
        strictjson.loads(text)
    kept = strictjson.loads_keeping_text(text)
    assert "Infinity" in str(kept) or "NaN" in str(kept) or "1e999" in str(kept)
    assert strictjson.loads("[1.5, -0.0, 1e308]") == [1.5, -0.0, 1e308]
