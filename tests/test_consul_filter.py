"""Consul's ?filter= expressions (go-bexpr's grammar) on result objects."""

from __future__ import annotations

import pytest

from homeport.catalog.filter import compile_filter
from homeport.catalog.model import BadRequest

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
    ],
)
def test_bad_expressions_are_refused_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_filter(expression, set(WEB))
