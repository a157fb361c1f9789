"""The import graph of diffusion_utilities' modules (every import, at the top or inside a function) and its cycles.

    python tools/import_graph.py          # prints each module's imports, then any cycle; exit 1 if there is one
"""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffusion_utilities"


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, by name: ``from .x import y``, ``from . import x`` and
    their absolute spellings (``from diffusion_utilities.x import y``, ``import diffusion_utilities.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] != PACKAGE.name:
                continue
            if node.level == 0:
                module = module.partition(".")[2]  # "diffusion_utilities.x" -> "x"
            # from . import x / from diffusion_utilities import x: the names are the modules
            found |= {module.split(".")[0]} if module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(PACKAGE.name + ".")}
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")}


def reachable(g: dict[str, set[str]], start: str, avoid: set[str] = frozenset()) -> set[str]:
    """Every module that ``start`` imports directly or through others, not passing through ``avoid``."""
    seen, todo = set(), [start]
    while todo:
        for nxt in g.get(todo.pop(), ()):
            if nxt not in seen and nxt not in avoid:
                seen.add(nxt)
                todo.append(nxt)
    return seen


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
