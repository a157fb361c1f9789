"""The notebooks' exercises: check a learner's function, or the folded solution while it is a stub.

Each exercise is three cells: a stub ``my_x`` that raises NotImplementedError, a folded solution
under another name (``solution_x``), and a check cell that calls ``check_exercise``. The solution's
own name matters: were it ``my_x`` too, running every cell (Run All) would replace the learner's
function with it before the check, and the check would pass whatever the learner wrote.
"""

from __future__ import annotations

import dis
import inspect
from typing import Callable

__all__ = ["check_exercise"]


def check_exercise(yours: Callable, solution: Callable, check: Callable[[Callable], None], passed: str) -> None:
    """Run ``check(yours)``; while ``yours`` is still the stub, run ``check(solution)``.

    The stub is told apart by a NotImplementedError raised in ``yours``'s own body; one raised by
    something it calls (an operation a device lacks, say) is the learner's error to see, and propagates.

    check: raises (say, AssertionError from ``torch.testing.assert_close``) when a function is wrong.
    passed: what a function that passes has shown, e.g. "matches the library's ddim_step".
    """
    name = getattr(yours, "__name__", "your function")
    try:
        check(yours)
    except NotImplementedError as e:
        if not _raised_by(yours, e):  # written, but something it calls is not implemented: show that
            raise
        check(solution)
        print(f"{name} is not written yet; the folded solution {passed}. Fill in {name} and run this cell again.")
        return
    print(f"{name} {passed}")


def _raised_by(fn: Callable, error: BaseException) -> bool:
    """Whether ``error`` came from a ``raise`` statement in ``fn``'s own body (the stub).

    Not from something it called: a Python helper leaves a frame of its own, and a C++ operation
    (a tensor op a device lacks) leaves none, so the last frame is fn's but the instruction that
    raised is a call, not a raise.
    """
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:  # a partial or a callable object: cannot tell, so take it for the stub
        return True
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code is not code:
        return False
    ops = {i.offset: i.opname for i in dis.get_instructions(code)}
    return ops.get(tb.tb_lasti, "RAISE_VARARGS") == "RAISE_VARARGS"  # unknown offset: as before
