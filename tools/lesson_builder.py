"""What tools/build_lesson*.py share: write a notebook from a list of (MD or CODE, source) cells.

Cells get stable ids ("lesson8-03"), so a rebuild changes only what changed: a code cell whose id and
source are unchanged keeps the outputs the notebook already holds (a rebuild that only edits prose
must not wipe an executed lesson; re-run the notebook with tools/run_notebooks.py after code changes).
A code cell that starts with "# solution (folded)" is folded, as the exercises' solutions are in every lesson.
A cell may be (CODE, source, tags): e.g. ["nbval-ignore-output"] for a cell whose printed numbers depend on
the machine (nbval reads the tag; the learner never sees test machinery in the code).
"""

from pathlib import Path

import nbformat

MD, CODE = "markdown", "code"
IGNORE = ["nbval-ignore-output"]  # a cell's printed numbers depend on the machine: nbval does not compare them


def build(cells: list[tuple], path: Path, prefix: str) -> None:
    before = nbformat.read(path, as_version=4) if Path(path).exists() else None
    old = {c.id: c for c in before.cells} if before else {}
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    if before is not None:  # the last run's metadata (language version, progress bars' widget state) goes with its outputs
        nb.metadata = before.metadata
    for i, (kind, src, *tags) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == MD else nbformat.v4.new_code_cell(src)
        cell.id = f"{prefix}-{i:02d}"
        if tags:
            cell.metadata["tags"] = list(tags[0])
        if kind == CODE and src.startswith("# solution (folded)"):
            cell.metadata["jupyter"] = {"source_hidden": True}
        kept = old.get(cell.id)
        if kind == CODE and kept is not None and kept.cell_type == CODE and kept.source == src:
            cell.outputs, cell.execution_count = kept.outputs, kept.execution_count
        nb.cells.append(cell)
    nbformat.write(nb, path)
