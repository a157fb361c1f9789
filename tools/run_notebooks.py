"""Execute notebooks in place from a clean kernel and save their outputs (``make notebooks``).

    python tools/run_notebooks.py notebooks/*.ipynb

Each notebook runs with its own folder as the working directory, like JupyterLab does,
and its wall time is printed so docs can quote it. A notebook that fails is reported (with the
error's last line) and the others still run; the exit code is 1 if any failed.
"""

import hashlib
import json
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
    nbformat.write(stable_widget_ids(nb, path.stem), path)
    return seconds


def stable_widget_ids(nb, name: str):
    """``nb`` with its ipywidgets' random model ids replaced by ids derived from ``name`` and their order.

    The kernel gives every widget model a fresh uuid4 on each run, and they appear in the outputs,
    in the saved widget state and in its cross references ("IPY_MODEL_<id>"), so every re-run rewrote
    dozens of lines that mean nothing. Widgets are created in the same order each run, so the
    i-th model gets the same id every time; every occurrence is renamed, so the references still hold.
    """
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    ids = list(state.get("state", {}))  # in the order the kernel created them
    if not ids:
        return nb
    text = json.dumps(nb)
    for i, old in enumerate(ids):
        text = text.replace(old, hashlib.sha256(f"{name}/{i}".encode()).hexdigest()[:32])
    return nbformat.from_dict(json.loads(text))


if __name__ == "__main__":
    failed = []
    for name in sys.argv[1:]:
        try:
            print(f"{name}: {run(Path(name)):.1f} s", flush=True)
        except CellExecutionError as e:  # keep timing the others; say which cell broke
            failed.append(name)
            print(f"{name}: FAILED: {str(e).strip().splitlines()[-1]}", flush=True)
    sys.exit(1 if failed else 0)
