"""The package's layout stays readable: the rules the layering issue set, checked on every change.

No import cycle among the modules; sampling never reaches into training; errors.py is the error
type only; no function longer than a screen (60 lines); an import inside a function says why.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion_utilities"
sys.path.insert(0, str(ROOT / "tools"))
from import_graph import cycles, graph  # noqa: E402


def _modules():
    return sorted(PACKAGE.glob("*.py"))


def test_no_module_imports_itself_round_a_cycle():
    assert cycles(graph()) == []


def test_the_algorithms_do_not_import_the_training_loop_or_the_cli():
    g = graph()
    assert "training" not in g["sampling"] and "cli" not in g["sampling"]
    assert not ({"training", "sampling", "cli", "engine"} & g["schedule"])
    assert not ({"training", "sampling", "cli", "engine"} & g["model"])


def test_errors_holds_the_error_type_only():
    text = (PACKAGE / "errors.py").read_text()
    assert len(text.splitlines()) <= 40
    defined = [n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == ["BadInput"]


def test_every_function_fits_on_a_screen():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_an_import_inside_a_function_says_why():
    silent = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        # the reason sits on the import's line or on the import just above it (a group)
                        here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                        if "#" not in here and not ("#" in above and above.strip().startswith(("import", "from"))):
                            silent.append(f"{path.name}:{inner.lineno} {here.strip()}")
    assert silent == []
