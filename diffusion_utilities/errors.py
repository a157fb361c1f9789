"""The one error type this package raises for bad input.

Every message is one line that names the problem and the fix; the CLI prints it to
stderr and exits with code 2 instead of showing a traceback.
"""

import json
from pathlib import Path

__all__ = ["BadInput", "out_folder", "read_json_object"]


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
