"""Service definition files from ``--config-dir``, in Consul's format.

A file holds ``{"service": {...}}``, ``{"services": [...]}`` and/or node-level
``{"check": {...}}`` / ``{"checks": [...]}``, with Consul's snake_case keys.  Every
``*.json`` file of every directory is read; a bad file is reported with its path and the
reason, and the others still load.  A file with a script check loads only where the
:class:`~homeport.catalog.checks.ScriptPolicy` allows local scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import strictjson
from .checks import ScriptPolicy
from .consul import AGENT_SERVICE, CHECK, agent_check, agent_service
from .errors import CatalogError
from .model import Check, Service


@dataclass(frozen=True)
class DefinitionError:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Definitions:
    services: list[Service] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    errors: list[DefinitionError] = field(default_factory=list)
    by_file: dict[Path, tuple[list[Service], list[Check]]] = field(default_factory=dict)


def _items(document: dict[str, Any], one: str, many: str) -> list[Any]:
    items: list[Any] = []
    if one in document:
        items.append(document[one])
    if many in document:
        if not isinstance(document[many], list):
            raise ValueError(f'"{many}" must be a list')
        items.extend(document[many])
    return items


def parse_file(
    path: Path, node: str, scripts: ScriptPolicy | None = None
) -> tuple[list[Service], list[Check]]:
    """The services and node checks of one file; raises ValueError with the reason
    (Consul's own for a script check *scripts* does not allow)."""
    try:
        document = strictjson.loads(path.read_bytes())
    except (json.JSONDecodeError, strictjson.NotJSON) as e:
        raise ValueError(f"invalid JSON: {e}") from None
    except UnicodeDecodeError:
        raise ValueError("invalid JSON: not UTF-8") from None
    if not isinstance(document, dict):
        raise ValueError('expected a JSON object with a "service" or "services" key')
    unknown = set(document) - {"service", "services", "check", "checks"}
    if unknown:
        raise ValueError(f"unknown top-level key {sorted(unknown)[0]!r}")
    services: list[Service] = []
    checks: list[Check] = []
    try:
        for raw in _items(document, "service", "services"):
            service, service_checks = agent_service(AGENT_SERVICE.decode(raw), node, "config")
            services.append(service)
            checks.extend(service_checks)
        for raw in _items(document, "check", "checks"):
            check = agent_check(CHECK.decode(raw), node, "config")
            if check.service_id:
                raise ValueError("a top-level check must not name a service_id")
            checks.append(check)
        (scripts or ScriptPolicy()).vet(checks)
    except CatalogError as e:
        raise ValueError(str(e).removeprefix("Request decode failed: ")) from None
    return services, checks


def load(
    directories: Iterable[Path],
    node: str,
    previous: Mapping[Path, tuple[list[Service], list[Check]]] | None = None,
    scripts: ScriptPolicy | None = None,
) -> Definitions:
    """Read every ``*.json`` file in *directories* (sorted, so the result is stable).

    A file that is bad now but was good in *previous* keeps its previous definitions,
    so a typo saved in an editor does not take a running service out of the catalog.
    """
    previous = previous or {}
    result = Definitions()
    seen_services: dict[str, Path] = {}
    seen_checks: dict[str, Path] = {}
    for directory in directories:
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file())
        except OSError as e:
            result.errors.append(DefinitionError(directory, e.strerror or str(e)))
            continue
        for path in paths:
            try:
                services, checks = parse_file(path, node, scripts)
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                result.errors.append(DefinitionError(path, reason))
                if path not in previous:
                    continue
                services, checks = previous[path]
            clash = _clash(services, checks, seen_services, seen_checks)
            if clash:
                result.errors.append(DefinitionError(path, clash))
                continue
            seen_services.update((s.id, path) for s in services)
            seen_checks.update((c.check_id, path) for c in checks)
            result.services.extend(services)
            result.checks.extend(checks)
            result.by_file[path] = (services, checks)
    return result


def _clash(
    services: list[Service],
    checks: list[Check],
    seen_services: Mapping[str, Path],
    seen_checks: Mapping[str, Path],
) -> str | None:
    for service in services:
        if service.id in seen_services:
            return f"service ID {service.id!r} is already defined in {seen_services[service.id]}"
    for check in checks:
        if check.check_id in seen_checks:
            return (
                f"check ID {check.check_id!r} is already defined in {seen_checks[check.check_id]}"
            )
    return None
