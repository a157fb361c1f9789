"""The one error type this package raises for bad input.

Every message is one line that names the problem and the fix; the CLI prints it to
stderr and exits with code 2 instead of showing a traceback. Raise it before any work is done
wherever the input can be checked up front.
"""

__all__ = ["BadInput"]


class BadInput(ValueError):
    """An argument, array or file that this package cannot use, with a one-line reason."""
