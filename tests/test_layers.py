"""Imports only go down. Every module of flexus_ops stands on a floor; it may import its own part and the
floors below, never above or sideways. A change that breaks this fails here, naming the import.

  core (errors, tool spec, plans, states)  <  config  <  cloud  <  sandbox | gate  <  registry
  <  serving  <  surfaces (mcp, bots)  <  cli (which puts the application together and launches them)

Imports only needed for type hints (under ``if TYPE_CHECKING:``) do not count: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "": 0,  # flexus_ops itself: the version
    "core": 0,
    "config": 1,
    "cloud": 2,
    "sandbox": 3,
    "gate": 3,
    "registry": 4,
    "serving": 5,
    "mcp": 6,
    "bots": 6,
    "cli": 7,
}
# A surface, several modules.
PARTS = {
    "mcp_server": "mcp",
    "mcp_http": "mcp",
    "mcp_oauth": "mcp",
    "mcp_schema": "mcp",
    "mcp_resources": "mcp",
    "mcp_prompts": "mcp",
    "mcp_fast": "mcp",
    "demo": "cli",
    "launch": "cli",
    "observability": "serving",
}


def part_of(module: str) -> str:
    """``flexus_ops.gate.store`` -> ``gate``; ``flexus_ops.mcp_http`` -> ``mcp``; ``flexus_ops`` -> ``""``."""
    pieces = module.split(".")[1:2]
    name = pieces[0] if pieces else ""
    return PARTS.get(name, name)


def modules() -> dict[str, Path]:
    found = {}
    for base, package in ((ROOT / "tools", "flexus_ops"), (ROOT / "bots", "flexus_ops.bots")):
        for path in base.rglob("*.py"):
            relative = path.relative_to(base).with_suffix("").parts
            dotted = ".".join((package, *relative)).removesuffix(".__init__")
            found[dotted] = path
    return found


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import that runs, resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for inner in node.body for child in ast.walk(inner))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, target) for line, target in found if target.split(".")[0] == "flexus_ops"]


def test_every_part_is_on_a_floor() -> None:
    assert {part_of(name) for name in modules()} <= set(FLOORS), "a new top-level part needs a floor in FLOORS"


def test_imports_only_go_down() -> None:
    upward = []
    for module, path in sorted(modules().items()):
        mine = part_of(module)
        for line, target in imports(module, path):
            theirs = part_of(target)
            if theirs == mine or FLOORS[theirs] < FLOORS[mine] or theirs == "":
                continue
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({mine} may not import {theirs})")
    assert upward == [], "\n".join(upward)
