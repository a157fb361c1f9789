"""What tools/build_lesson*.py share: write a notebook from a list of (MD or CODE, source) cells.

Cells get stable ids ("lesson8-03"), so a rebuild changes only what changed, and a code cell that
starts with "# solution (folded)" is folded, as the exercises' solutions are in every lesson.
"""

from pathlib import Path

import nbformat

MD, CODE = "markdown", "code"


def build(cells: list[tuple[str, str]], path: Path, prefix: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == MD else nbformat.v4.new_code_cell(src)
        cell.id = f"{prefix}-{i:02d}"
        if kind == CODE and src.startswith("# solution (folded)"):
            cell.metadata["jupyter"] = {"source_hidden": True}
        nb.cells.append(cell)
    nbformat.write(nb, path)
