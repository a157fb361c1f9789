"""Execute notebooks in place from a clean kernel and save their outputs (``make notebooks``).

    python tools/run_notebooks.py notebooks/*.ipynb

Each notebook runs with its own folder as the working directory, like JupyterLab does,
and its wall time is printed so docs can quote it. A notebook that fails is reported (with the
error's last line) and the others still run; the exit code is 1 if any failed.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:  # keep diffs small: execution metadata changes every run
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, path)
    return seconds


if __name__ == "__main__":
    failed = []
    for name in sys.argv[1:]:
        try:
            print(f"{name}: {run(Path(name)):.1f} s", flush=True)
        except CellExecutionError as e:  # keep timing the others; say which cell broke
            failed.append(name)
            print(f"{name}: FAILED: {str(e).strip().splitlines()[-1]}", flush=True)
    sys.exit(1 if failed else 0)
