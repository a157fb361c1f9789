"""The one error type this package raises for bad input.

Every message is one line that names the problem and the fix; the CLI prints it to
stderr and exits with code 2 instead of showing a traceback.
"""

import json
from pathlib import Path

__all__ = ["BadInput", "out_folder", "read_json_object", "available_memory", "check_memory"]


class BadInput(ValueError):
    """An argument, array or file that this package cannot use, with a one-line reason."""


def out_folder(path: Path, *files: str) -> Path:
    """Create an output folder before any work is done, so a bad --out fails in the first second.

    files: names the command will write there; each must not already be a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create the --out folder {path}: {e.strerror}; choose another --out") from None
    for name in files:
        if (path / name).is_dir():
            raise BadInput(f"{path / name} is a folder, but this command writes a file there; move it or choose another --out")
    return path


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object, or one BadInput line naming it and ``fix``."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path} is not a JSON object; {fix}")
    return value


def available_memory() -> int | None:
    """Bytes a process can still allocate without swapping (Linux's MemAvailable); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(need: int, what: str, fix: str) -> None:
    """Refuse work that cannot fit in memory before it starts, where the free memory is known.

    Without this, a request far too big is not a MemoryError but the kernel killing the process
    (exit 137, no message) after it has filled the machine's memory and swap.
    """
    free = available_memory()
    if free is not None and need > free:
        raise BadInput(f"{what} needs about {_gigabytes(need)} of memory and {_gigabytes(free)} is free; {fix}")


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"
