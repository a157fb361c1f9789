"""The import graph of diffusion_utilities' modules (every import, at the top or inside a function) and its cycles.

    python tools/import_graph.py          # prints each module's imports, then any cycle; exit 1 if there is one
"""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffusion_utilities"


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, by name (``from .x import y`` and ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffusion_utilities."):
            found.add(node.module.split(".")[1])
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, once: a depth-first search from each module through larger-named ones only,
    so each cycle is found from its smallest module."""
    out = []

    def walk(start, node, path):
        for nxt in sorted(g.get(node, ())):
            if nxt == start:
                out.append(path + [start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for m in sorted(g):
        walk(m, m, [m])
    return out


if __name__ == "__main__":
    g = graph()
    for m, deps in g.items():
        print(f"{m:12s} <- {', '.join(sorted(deps)) or '-'}")
    found = cycles(g)
    for c in found:
        print("cycle:", " -> ".join(c))
    sys.exit(1 if found else 0)
