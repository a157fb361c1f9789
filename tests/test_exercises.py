import json
from pathlib import Path

import pytest
import torch

from diffusion_utilities.exercises import check_exercise

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _double_check(fn):
    torch.testing.assert_close(fn(torch.arange(3.0)), torch.tensor([0.0, 2.0, 4.0]))


def solution_double(x):
    return 2 * x


def test_a_stub_falls_back_to_the_solution_and_says_so(capsys):
    def my_double(x):
        raise NotImplementedError

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert "my_double is not written yet; the folded solution doubles" in capsys.readouterr().out


def test_a_written_answer_is_the_one_checked(capsys):
    def my_double(x):
        return x + x

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert capsys.readouterr().out == "my_double doubles\n"


def test_a_wrong_answer_fails_even_though_the_solution_is_right():
    def my_double(x):
        return 3 * x

    with pytest.raises(AssertionError):
        check_exercise(my_double, solution_double, _double_check, "doubles")


def test_not_implemented_from_deeper_down_is_shown_not_taken_for_the_stub():
    # A written answer that calls something missing (an op a device lacks, say) must show that error,
    # not "not written yet" with the solution's pass.
    def unsupported(x):
        raise NotImplementedError("aten::op is not implemented for this device")

    def my_double(x):
        return unsupported(x) * 2

    with pytest.raises(NotImplementedError, match="aten::op"):
        check_exercise(my_double, solution_double, _double_check, "doubles")


def test_not_implemented_from_a_torch_op_called_directly_is_shown_too():
    # C++ ops leave no Python frame: the last frame is the learner's, but it raised in a call.
    def my_double(x):
        sparse = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2]]), x, (3,), check_invariants=True)
        return 2 * sparse.view(3)  # view is not implemented for sparse tensors

    with pytest.raises(NotImplementedError):
        check_exercise(my_double, solution_double, _double_check, "doubles")


def test_a_stub_that_raises_an_instance_with_a_message_is_still_the_stub(capsys):
    def my_double(x):
        x = x + 0  # a line of the learner's before the raise
        raise NotImplementedError("write this")

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert "not written yet" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_other_cell_redefines_the_learners_function(path):
    # Run All executes every cell, folded ones too: a solution named like the stub would replace the
    # learner's function before its check, and the check would pass whatever the learner wrote.
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    defined = [{line.split("(")[0][4:] for line in src.splitlines() if line.startswith("def ")} for src in code]
    stubs = {name for src, names in zip(code, defined) if "NotImplementedError" in src for name in names}
    for name in stubs:
        assert sum(name in names for names in defined) == 1, f"{path.name}: {name} is defined in more than one cell"
