"""Files the commands read and write: output folders made before any work (and removed again when
a command is refused), regular files only, size-capped JSON."""

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import BadInput

__all__ = ["out_folder", "settle_out_folders", "check_regular_file", "read_json_object", "atomic_write",
           "remove_stale_temps", "sha256_file"]

MAX_JSON_BYTES = 32 << 20  # a card or dataset.json; a crafted one of gigabytes would fill the memory when parsed


def out_folder(path: Path, *files: str, name: str = "--out", fix: str | None = None) -> Path:
    """Create an output folder before any work is done, so a bad --out fails in the first second.

    files: names the command will write there; each must not already be a folder. name: what messages call it;
    fix: what they tell the user to do (default: choose another ``name``).
    """
    path, chosen_fix = Path(path), fix
    fix = fix or f"choose another {name}"
    if path.exists() and not path.is_dir():
        raise BadInput(f"{name} {path} is a file; {chosen_fix or 'give a folder'}")
    new = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create the {name} folder {path}: {e.strerror}; {fix}") from None
    _made.extend(new)  # deepest first
    if not os.access(path, os.W_OK | os.X_OK):  # a read-only folder (or file system): now, not after the work
        raise BadInput(f"cannot write in the {name} folder {path} (read-only or not yours); {fix}")
    for file in files:
        if (path / file).is_dir():
            raise BadInput(f"{path / file} is a folder, but this command writes a file there; move it, or {fix}")
    return path


_made: list[Path] = []  # folders out_folder created in this process, deepest first


def settle_out_folders(failed: bool) -> None:
    """After a command: if it ``failed``, remove the folders ``out_folder`` made that are still empty
    (a refusal leaves nothing behind); either way, forget them."""
    for path in _made if failed else []:
        try:
            path.rmdir()  # only an empty folder goes
        except OSError:
            pass
    _made.clear()


def check_regular_file(path: Path, fix: str) -> Path:
    """One BadInput line unless ``path`` is a regular file (a FIFO or device would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}; {fix}") from None
    if stat.S_ISDIR(mode):
        raise BadInput(f"{path} is a folder, not a file; {fix}")
    if not stat.S_ISREG(mode):
        raise BadInput(f"{path} is not a regular file (a pipe or a device?); {fix}")
    return Path(path)


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object, or one BadInput line naming it and ``fix``.

    At most MAX_JSON_BYTES are read, and only from a regular file.
    """
    check_regular_file(path, fix)
    with open(path, "rb") as f:
        text = f.read(MAX_JSON_BYTES + 1)
    if len(text) > MAX_JSON_BYTES:
        raise BadInput(f"{path} is larger than {MAX_JSON_BYTES >> 20} MB, too large for a card; {fix}")
    try:
        value = json.loads(text.decode())
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, an integer of too many digits
        raise BadInput(f"{path} is not valid JSON ({str(e)[:120]}); {fix}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path} is not a JSON object; {fix}")
    return value


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never half of one
    (and at worst a temporary file ``.NAME.*.tmp*``: see ``remove_stale_temps``). A link at
    ``path`` is replaced, never written through. The temporary file ends in ``path``'s own suffix,
    so writers that choose a format by the name (Pillow, matplotlib) choose the right one. A file
    replaced keeps its mode (a chmod 600 stays private); a new one gets what the umask allows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes every file 0600, whatever the umask says
        os.replace(tmp, path)
    except OSError as e:  # a full disk: named as the file being written, not its temporary name (or none)
        Path(tmp).unlink(missing_ok=True)
        if e.filename not in (None, tmp, str(tmp)):
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def remove_keeping_mode(path: Path) -> None:
    """Delete the regular file at ``path`` now, but let this process's next ``atomic_write`` there give the
    new file its mode (``train --overwrite`` deletes the old run's checkpoint before the new run writes one:
    a file made private by hand stays private)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        _REMOVED_MODES[os.path.abspath(path)] = stat.S_IMODE(st.st_mode)
    Path(path).unlink(missing_ok=True)


_REMOVED_MODES: dict[str, int] = {}  # absolute path -> the mode of the file remove_keeping_mode deleted there


def _mode_for(path: Path) -> int:
    """The permission bits for a file written to ``path``: those of the regular file it replaces (or that
    ``remove_keeping_mode`` deleted there), or for a new file (or one replacing a link) 0666 less the
    umask, as open() would give it."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        if os.path.abspath(path) in _REMOVED_MODES:
            return _REMOVED_MODES.pop(os.path.abspath(path))
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux tells it without changing it; os.umask would change it, for a moment, for every thread
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: Path, *names: str) -> None:
    """Delete the temporary files ``atomic_write`` left in ``folder`` for files named ``names`` (glob patterns).

    A kill -9 during a write leaves one beside the file; call this only where no other process can be
    writing (training holds its --out folder's lock).
    """
    for name in names:
        for p in Path(folder).glob(f".{name}.*.tmp*"):
            p.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
