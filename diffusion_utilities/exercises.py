"""The notebooks' exercises: check a learner's function, or the folded solution while it is a stub.

Each exercise is three cells: a stub ``my_x`` that raises NotImplementedError, a folded solution
under another name (``solution_x``), and a check cell that calls ``check_exercise``. The solution's
own name matters: were it ``my_x`` too, running every cell (Run All) would replace the learner's
function with it before the check, and the check would pass whatever the learner wrote.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["check_exercise"]


def check_exercise(yours: Callable, solution: Callable, check: Callable[[Callable], None], passed: str) -> None:
    """Run ``check(yours)``; while ``yours`` still raises NotImplementedError, run ``check(solution)``.

    check: raises (say, AssertionError from ``torch.testing.assert_close``) when a function is wrong.
    passed: what a function that passes has shown, e.g. "matches the library's ddim_step".
    """
    name = getattr(yours, "__name__", "your function")
    try:
        check(yours)
    except NotImplementedError:
        check(solution)
        print(f"{name} is not written yet; the folded solution {passed}. Fill in {name} and run this cell again.")
        return
    print(f"{name} {passed}")
