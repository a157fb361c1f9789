"""tools/run_notebooks.py: re-running a notebook with widgets leaves the same widget ids."""

import importlib.util
import json
import uuid
from pathlib import Path

import nbformat

spec = importlib.util.spec_from_file_location("run_notebooks", Path(__file__).resolve().parents[1] / "tools" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebooks)


def _executed_with_widgets():
    """A notebook as a kernel saves it: a slider and its layout, under fresh random ids."""
    slider, layout = uuid.uuid4().hex, uuid.uuid4().hex
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("interact(f, w=(0, 4))", id="slider-cell")
    cell.outputs = [nbformat.v4.new_output("display_data", {
        "application/vnd.jupyter.widget-view+json": {"model_id": slider, "version_major": 2, "version_minor": 0},
        "text/plain": "IntSlider(value=2)"})]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
        layout: {"model_name": "LayoutModel", "state": {}},
        slider: {"model_name": "IntSliderModel", "state": {"layout": f"IPY_MODEL_{layout}", "value": 2}}}}}
    return nb, slider, layout


def test_two_runs_save_the_same_ids_and_references_still_resolve():
    (first, s1, l1), (second, _, _) = _executed_with_widgets(), _executed_with_widgets()
    a, b = (json.dumps(run_notebooks.stable_widget_ids(nb, "06_context")) for nb in (first, second))
    assert a == b and s1 not in a and l1 not in a
    nb = json.loads(a)
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    layout, slider = list(state)  # creation order, as saved
    assert nb["cells"][0]["outputs"][0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == slider
    assert state[slider]["state"]["layout"] == f"IPY_MODEL_{layout}"
    nbformat.validate(nbformat.from_dict(nb))
    other = json.dumps(run_notebooks.stable_widget_ids(_executed_with_widgets()[0], "01_noise_schedule"))
    assert slider not in other  # ids differ between notebooks, so two open in one page do not clash


def test_a_notebook_without_widgets_is_unchanged():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    assert run_notebooks.stable_widget_ids(nb, "x") is nb
