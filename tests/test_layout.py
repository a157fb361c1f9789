"""The package's layout stays readable: the rules the layering issues set, checked on every change.

No import cycle among the modules; the math (schedule, model) never reaches the training loop, the CLI or
the engine (how it runs fast, keeps its checkpoints and files); sampling reaches the engine through
``engine`` alone; errors.py is the error type only; no function longer than a screen, ``sample`` Algorithm 2
on one; an import inside a function says why; no class over 150 lines; the whole-number check written once
(checks.py); no measured figure in a docstring or --help (docs/benchmarks.md holds them).
"""

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion_utilities"
sys.path.insert(0, str(ROOT / "tools"))
from import_graph import cycles, graph, reachable  # noqa: E402

# How the package runs fast and keeps its files: the algorithms hand these concerns to the engine.
ENGINE = {"engine", "checkpoints", "distributed", "memory", "files"}
CHECKS = "checks.py"  # the one home of the whole-number and real-number checks


def _modules():
    return sorted(PACKAGE.glob("*.py"))


def test_no_module_imports_itself_round_a_cycle():
    assert cycles(graph()) == []


def test_the_algorithms_do_not_import_the_training_loop_or_the_cli():
    g = graph()
    assert "training" not in g["sampling"] and "cli" not in g["sampling"]


@pytest.mark.parametrize("module", ["schedule", "model"])
def test_the_math_reaches_neither_the_engine_nor_the_loops(module):
    # directly or through another module: the schedule and the U-Net are plain math
    assert reachable(graph(), module) & (ENGINE | {"training", "sampling", "cli"}) == set()


def test_sampling_reaches_the_engine_through_one_seam():
    # every path from sampling to the engine's modules goes through engine.py
    assert reachable(graph(), "sampling", avoid={"engine"}) & ENGINE == set()


def test_errors_holds_the_error_type_only():
    text = (PACKAGE / "errors.py").read_text()
    assert len(text.splitlines()) <= 40
    defined = [n.name for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == ["BadInput"]


def _longer_than(limit: int, kinds) -> list[str]:
    """Each function or class (``kinds``) in the package over ``limit`` lines, decorators left out."""
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kinds) and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return long


def test_every_function_fits_on_a_screen():
    long = _longer_than(50, (ast.FunctionDef, ast.AsyncFunctionDef))
    assert long == [], long


def test_no_class_over_150_lines():
    long = _longer_than(150, ast.ClassDef)
    assert long == [], long


def test_sample_reads_as_algorithm_2_on_one_screen():
    # issue 32's bar: check the arguments, draw x_T, loop over the grid; the signature and docstring aside
    sample = next(n for n in ast.parse((PACKAGE / "sampling.py").read_text()).body
                  if isinstance(n, ast.FunctionDef) and n.name == "sample")
    body = sample.body[1:] if ast.get_docstring(sample) else sample.body
    assert sample.end_lineno - body[0].lineno + 1 <= 25


def _bool_checks(path: Path) -> list[str]:
    """Each ``isinstance(x, bool)`` in ``path``: the first half of a whole-number check written out by hand."""
    return [f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
            and len(node.args) == 2 and isinstance(node.args[1], ast.Name) and node.args[1].id == "bool"]


def test_the_whole_number_check_is_written_in_one_place():
    copies = [c for path in _modules() if path.name != CHECKS for c in _bool_checks(path)]
    assert len(copies) <= 2, copies


# A measured figure: a number followed by s, ms, img/s or × (a speedup; not a size such as 16×16 or 2 × 50,
# nor the U-Net's 2× pooling and upsampling), or a speedup such as 1.10x.
FIGURE = re.compile(r"\d\s?(?:ms|s|img/s)\b|\d\s?×(?!\s?(?:\d|max-pool|transposed))|\d\.\d+x\b")


def _docs_and_help(tree) -> list[tuple[int, str]]:
    """(first line, text) of every docstring and of every string in a ``help=``, ``description=`` or
    ``epilog=`` argument or a ``"help"`` entry (the config fields' --help)."""
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            texts.append((node.body[0].lineno, ast.get_docstring(node, clean=False)))
        helps = []
        if isinstance(node, ast.Call):
            helps = [k.value for k in node.keywords if k.arg in ("help", "description", "epilog")]
        if isinstance(node, ast.Dict):
            helps += [v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "help"]
        texts += [(s.lineno, s.value) for h in helps for s in ast.walk(h)
                  if isinstance(s, ast.Constant) and isinstance(s.value, str)]
    return texts


def test_no_measured_figure_in_a_docstring_or_help():
    # measured numbers go stale where they are quoted: they live in docs/benchmarks.md
    found = [f"{path.name}:{first + i}: {line.strip()}" for path in _modules()
             for first, text in _docs_and_help(ast.parse(path.read_text()))
             for i, line in enumerate(text.splitlines()) if FIGURE.search(line)]
    assert found == [], found


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
    assert silent == [], silent
