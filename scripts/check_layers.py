#!/usr/bin/env python3
"""The package's layers, and the check that imports only point down them.

Each top-level package of backup_exporter belongs to one layer; a module may import its own layer and the
layers below, never above. Imports sit at module level (an import inside a function is how cycles hide),
and modules of one layer import each other without cycles. Run by scripts/test; exits 1 listing every
violation as `module: imports X (layer a -> layer b)`.

Hand-written rather than import-linter: the rules fit in this file, and it checks function-level imports
and same-layer cycles, which import-linter's layer contract does not.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "backup_exporter"

# Lowest first. What each owns is in docs/DESIGN.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # pure: errors, naming, retention, schedule, status records, cancellation, redaction
    ("system",),  # the process's edges: logs, subprocesses, durable local files
    ("config",),  # configuration models, loading, validation
    ("mongo",),  # MongoDB client, error mapping, namespace patterns
    ("archive",),  # the mongodump archive format and its compression
    ("storage",),  # the storage contract of primitives and its backends
    ("repository",),  # backup rules above storage: which names are archives, records, metadata
    ("engines",),  # dump engines
    ("restore",),  # restore engines: native and mongorestore
    ("operations",),  # one module per verb: run, list, verify, prune, restore, drill
    ("serve",),  # scheduler, daemon, HTTP, metrics, Pushgateway
    ("cli",),  # backupctl
)


# Upward imports allowed while a move is in progress (module, imported module). Must stay empty.
TEMPORARY: frozenset[tuple[str, str]] = frozenset()


def layer_of(module: str) -> int:
    """Return the layer index of a dotted module name inside the package (the package root is core)."""
    parts = module.split(".")
    if len(parts) < 2:
        return 0
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise KeyError(f"{module}: its package {parts[1]!r} is in no layer of scripts/check_layers.py")


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterable[tuple[str, int, bool]]:
    """Yield (imported module, line, at module level) for every import of the package."""
    top_level = set()
    for node in tree.body:
        top_level.add(id(node))
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count as module level, and are checked
            top_level.update(id(child) for child in node.body)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base]
            # `from backup_exporter.core import naming` imports the module backup_exporter.core.naming
            names += [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                yield name, node.lineno, id(node) in top_level


def check(root: Path) -> list[str]:
    """Return every violation in the package at `root` (empty when the layering holds)."""
    problems: list[str] = []
    modules = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        try:
            own = layer_of(module)
        except KeyError as exc:
            problems.append(str(exc))
            continue
        seen: set[tuple[str, int]] = set()
        for name, line, module_level in _imports(tree, module, path.name == "__init__.py"):
            target = name if name in modules else name.rsplit(".", 1)[0]
            if target not in modules or (target, line) in seen:
                continue
            seen.add((target, line))
            where = f"{path.relative_to(root.parent)}:{line}"
            if not module_level:
                problems.append(f"{where}: imports {target} inside a function (imports belong at the top)")
            if target == module or target == PACKAGE:
                continue
            theirs = layer_of(target)
            if theirs > own and (module, target) not in TEMPORARY:
                problems.append(f"{where}: imports {target} (layer {LAYERS[own][0]} -> higher layer "
                                f"{LAYERS[theirs][0]})")
            elif theirs == own and not module.startswith(target + "."):
                graph[module].add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per strongly connected group of modules (Tarjan's algorithm, iteratively kept small)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                found.append([*sorted(group), sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent / PACKAGE
    problems = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-layers: {len(problems)} violation(s); the layers are in scripts/check_layers.py",
              file=sys.stderr)
        return 1
    print(f"check-layers: imports point down across {len(LAYERS)} layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
