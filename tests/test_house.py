"""The house rules (see the README's layout): arrows point down, parts stand alone.

Read from the source with ``ast``, so a function-level import counts as much as one
at the top of a module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "homeport"
MAX_FUNCTION_LINES = 60
#: The wiring: the options that make every part's settings, tap.py that builds them, and
#: worker.py that builds a ``--workers`` process.
WIRING = ("homeport.tap", "homeport.options", "homeport.worker")
#: The parts: each is built by its own ``build()`` and wired only by the wiring.
PARTS = ("catalog", "dns", "logs", "push", "tls", "web")
#: The modules of a part that face the network; the rest of a part is its core.
FACES = ("catalog.api", "dns.server", "logs.http", "push", "tls", "web")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(name: str, path: Path) -> set[str]:
    """Every homeport module *name* imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("homeport"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("homeport"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    known = {n for n, _ in modules()}
    return {t for t in found if t in known}


def top(module: str) -> str:
    """``homeport.catalog.model`` -> ``catalog``; ``homeport.units`` -> ``units``."""
    return module.split(".")[1] if module.count(".") else ""


def is_face(module: str) -> bool:
    rest = module.removeprefix("homeport.")
    return any(rest == f or rest.startswith(f + ".") for f in FACES)


GRAPH = {name: imports(name, path) for name, path in modules()}


def test_nothing_imports_the_wiring() -> None:
    """No part imports tap.py, worker.py or the options: the wiring depends on the parts,
    never the reverse (the wiring itself reads the options)."""
    offenders = sorted(
        f"{n} -> {w}" for n, deps in GRAPH.items() for w in WIRING if w in deps and n not in WIRING
    )
    assert offenders == []


def test_the_ground_floor_stands_on_no_part() -> None:
    """homeport/http and the shared modules import no part."""
    offenders = sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if top(name) not in PARTS and name not in WIRING
        for dep in deps
        if top(dep) in PARTS
    )
    assert offenders == []


def test_no_face_imports_another_part_s_face() -> None:
    """catalog/api, dns/server, logs/http, push, tls and web stand on http/ and their
    own core; a part may read another part's pure core, never its face."""
    offenders = sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if name not in WIRING
        for dep in deps
        if is_face(dep) and top(dep) != top(name)
    )
    assert offenders == []


def test_packages_import_each_other_without_a_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for name, deps in GRAPH.items():
        if name in WIRING:
            continue
        for dep in deps:
            if top(dep) != top(name) and dep != "homeport":
                edges.setdefault(top(name), set()).add(top(dep))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in edges if reaches(p, p, {p}))
    assert cycles == [], edges


def functions() -> Iterator[tuple[str, int]]:
    paths = [p for _, p in modules()] + sorted((SRC / "twisted" / "plugins").glob("*.py"))
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                yield f"{path.relative_to(SRC)}:{node.lineno} {node.name}", length


@pytest.mark.parametrize("part", [*PARTS, "http", ""])
def test_no_function_is_longer_than_a_screen(part: str) -> None:
    """No function in homeport is over 60 lines (a screen): split it into named steps."""
    long = [
        f"{where} ({length} lines)"
        for where, length in functions()
        if length > MAX_FUNCTION_LINES
        and (where.split("/")[1] == part if part else where.count("/") < 2)
    ]
    assert long == []


def layout() -> dict[str, str]:
    """The README's layout block: each ``src/homeport/...`` entry and its description
    (continuation lines included)."""
    text = (SRC.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("## Development", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("src/homeport/"):
            current, _, rest = line.partition(" ")
            entries[current] = rest
        elif line.startswith(" ") and current:
            entries[current] += " " + line.strip()
        else:
            current = ""
    return entries


def test_the_readme_layout_names_every_module() -> None:
    """Every package has its line, and every module is named in it (or, at the top,
    anywhere in the block): the layout section changes with the tree."""
    entries = layout()
    words = " ".join(f"{k} {v}" for k, v in entries.items())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or relative.parts[0] == "__pycache__":
            continue
        if len(relative.parts) == 1:
            if relative.name not in words:
                missing.append(str(relative))
            continue
        entry = entries.get(f"src/homeport/{relative.parts[0]}/")
        if entry is None or not re.search(rf"\b{re.escape(path.stem)}\b", entry):
            missing.append(str(relative))
    assert missing == []
