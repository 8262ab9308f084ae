"""Consul's ?filter= expressions (go-bexpr's grammar) on result objects."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeport.catalog.errors import BadRequest
from homeport.catalog.filter import compile_filter

WEB = {
    "Node": "web-a",
    "ServiceName": "web",
    "ServiceTags": ["primary", "v2"],
    "ServicePort": 8080,
    "ServiceMeta": {"version": "2.1"},
    "NodeMeta": {"rack": "r1"},
    "ServiceEnableTagOverride": False,
    "ServiceAddress": "",
    "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, {"Status": "critical"}],
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('ServiceName == "web"', True),
        ("ServiceName == web", True),
        ("ServiceName != `web`", False),
        ('ServiceTags contains "primary"', True),
        ('ServiceTags not contains "primary"', False),
        ('"v2" in ServiceTags', True),
        ('"v3" not in ServiceTags', True),
        ("ServicePort == 8080", True),
        ("ServicePort == 80", False),
        ('ServiceMeta.version == "2.1"', True),
        ('ServiceMeta["version"] == "2.1"', True),
        ('ServiceMeta.missing == ""', True),
        ("ServiceMeta.missing is empty", True),
        ("ServiceAddress is empty", True),
        ("ServiceTags is not empty", True),
        ("ServiceEnableTagOverride == false", True),
        ('NodeMeta.rack == "r1" and ServiceTags contains "v2"', True),
        ('NodeMeta.rack == "r2" or ServiceTags contains "v2"', True),
        ('not (NodeMeta.rack == "r1")', False),
        ('Node matches "^web-[a-c]$"', True),
        ('Node not matches "^db"', True),
        ('Checks.Status contains "critical"', True),
        ('"warning" in Checks.Status', False),
        ('ServiceName == "web" and (ServicePort == 80 or NodeMeta.rack == r1)', True),
    ],
)
def test_expressions_match_as_consul_documents(expression: str, expected: bool) -> None:
    assert compile_filter(expression, set(WEB))(WEB) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('Servicename == "web"', 'Selector "Servicename" is not valid'),
        ('ServiceName = "web"', "Failed to create boolean expression evaluator"),
        ("ServiceName ==", "expected a value"),
        ('(ServiceName == "web"', "expected )"),
        ('ServiceName == "web" and', "expected a selector"),
        ("ServiceName is full", "expected empty"),
        ('Node matches "("', "bad regular expression"),
        ("", "an empty expression"),
        ("(" * 5000 + 'Node == "a"' + ")" * 5000, "nested deeper than 64"),
        ("not " * 5000 + 'Node == "a"', "nested deeper than 64"),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_filter(expression, set(WEB))


def test_matches_runs_in_linear_time_on_a_pattern_that_makes_backtracking_explode() -> None:
    """`(a+)+$` against 'aaaa...b' takes Python's re exponential time; RE2 answers at
    once (this test would not finish with re)."""
    item = dict(WEB, Node="a" * 5000 + "b")
    assert compile_filter('Node matches "(a+)+$"', set(WEB))(item) is False
    assert compile_filter('Node matches "^a+b$"', set(WEB))(item) is True


@settings(max_examples=4000, deadline=None)
@given(
    # The grammar's own characters (most of the interesting cases), or any unicode.
    st.text(
        alphabet=st.sampled_from(list('()[].=!"`\\ aAnotdrisemptycl0123456789-_*^$+ServiceTags')),
        max_size=60,
    )
    | st.text(max_size=80)
)
def test_any_text_is_an_expression_or_a_400_never_a_crash(text: str) -> None:
    try:
        match = compile_filter(text, set(WEB))
    except BadRequest:
        return
    assert match(WEB) in (True, False)
