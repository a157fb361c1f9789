"""The two number checks most inputs need, for configs, arguments and the values read from cards.

Each turns a number of the right kind into a plain Python one (numpy's too: np.int64(500) is a fine
number of time steps, and a card is written as JSON) or raises one BadInput line naming the value.
"""

import math
import numbers

from .errors import BadInput

__all__ = ["whole_number", "real_number", "is_whole", "is_real"]


def is_whole(value) -> bool:
    """True for an int or numpy integer, False for a bool (a slip in a config or card, not a number)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """True for a finite int, float or numpy number; False for a bool, a string, NaN or ±inf."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def whole_number(value, name: str, low: int, high: int | None = None, hint: str = "") -> int:
    """``value`` as a Python int (a numpy integer too), or one BadInput line unless it is in [low, high].

    A bool, a float (even 3.0) or a string is refused: in a config or a card it is a slip, not a number.
    """
    if not is_whole(value) or value < low or (
            high is not None and value > high):
        span = f"≥ {low:,}" if high is None else f"from {low:,} to {high:,}"
        raise BadInput(f"{name} must be a whole number {span}{' ' + hint if hint else ''}, got {value!r}")
    return int(value)


def real_number(value, name: str, low: float = -math.inf, high: float = math.inf, *, above: bool = False,
                hint: str = "") -> float:
    """``value`` as a Python float (an int or a numpy number too), or one BadInput line unless it is finite
    and in [low, high] (``above``: in (low, high]). A bool or a string is refused."""
    if not is_real(value) or (value <= low if above else value < low) or value > high:
        if high < math.inf:  # a bounded range says "finite" by itself
            kind, span = "a number", f"{'above' if above else 'from'} {low:g} {'and at most' if above else 'to'} {high:g}"
        else:
            kind, span = "a finite number", f"{'>' if above else '≥'} {low:g}" if low > -math.inf else ""
        raise BadInput(f"{name} must be {kind}{' ' + span if span else ''}{' ' + hint if hint else ''}, got {value!r}")
    return float(value)
