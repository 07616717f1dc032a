"""docs/architecture.md stays true: every module of darkcsp/ has its line, every row of the table
"Darknet rule -> the one file that owns it" names functions defined in that file, and the import
rule holds (each tier imports only from below, nothing imports cli/, no import circle)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from reference_data import REPO

PACKAGE = REPO / "darkcsp"
DOC = (REPO / "docs" / "architecture.md").read_text()
def section(title: str) -> str:
    return DOC.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|--")
            ][1:]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def defined_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """darkcsp modules ``path`` imports, at any depth (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from darkcsp.x import y``: the module darkcsp.x.y if there is one, else darkcsp.x
            subs = [f"{node.module}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in modules] or [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    # every import runs the package's __init__ first: the root package is not an edge
    return found - {module_name(path), "darkcsp"}


def test_every_module_has_its_line() -> None:
    listed = {row[0].strip("`") for row in table_rows(section("One line per module"))}
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert actual - listed == set(), "modules missing from docs/architecture.md"
    assert listed - actual == set(), "docs/architecture.md lists modules that do not exist"


def test_every_rule_names_functions_of_its_file() -> None:
    rows = table_rows(section("Darknet rule -> the one file that owns it"))
    assert len(rows) >= 30
    for rule, where, functions in rows:
        path = REPO / re.findall(r"`([^`]+\.py)`", where)[0]
        if "<file>" in str(path):
            continue
        assert path.is_file(), f"{rule}: {path} does not exist"
        missing = set(re.findall(r"`(\w+)`", functions)) - defined_names(path)
        assert not missing, f"{rule}: {sorted(missing)} not defined in {path.relative_to(REPO)}"


def import_tiers() -> dict[str, int]:
    """Top-level module or sub-package -> its tier, from the doc's import-rule table."""
    tiers = {}
    for row in table_rows(section("The import rule")):
        for name in re.findall(r"`([^`]+)`", row[1]):
            tiers[name.removesuffix("/").removesuffix(".py")] = int(row[0])
    return tiers


def test_import_rule() -> None:
    tiers = import_tiers()
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    untiered = sorted({name.split(".")[1] for name in files if name.count(".")} - set(tiers))
    assert not untiered, f"docs/architecture.md gives no tier to {untiered}"
    modules = set(files)
    graph = {name: imports_of(path, modules) for name, path in files.items()}

    def tier(name: str) -> int | None:
        parts = name.split(".")
        return tiers.get(parts[1]) if len(parts) > 1 else None

    upwards = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                     if tier(a) is not None and tier(b) is not None and tier(b) > tier(a))
    assert not upwards, f"imports running back up: {upwards}"
    into_cli = sorted(a for a, targets in graph.items() for b in targets
                      if b.startswith("darkcsp.cli") and not a.startswith(("darkcsp.cli",
                                                                           "darkcsp.__main__")))
    assert not into_cli, f"only the command line may import darkcsp.cli: {into_cli}"
    # no circle among the modules (a package's __init__ counts as the package)
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(
                    path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
