"""The one error type this package raises for bad input.

Every message is one line that names the problem and the fix; the CLI prints it to
stderr and exits with code 2 instead of showing a traceback.
"""

import json
import os
import stat
from pathlib import Path

__all__ = ["BadInput", "out_folder", "settle_out_folders", "check_regular_file", "read_json_object",
           "available_memory", "check_memory"]

MAX_JSON_BYTES = 32 << 20  # a card or dataset.json; a crafted one of gigabytes would fill the memory when parsed


class BadInput(ValueError):
    """An argument, array or file that this package cannot use, with a one-line reason."""


def out_folder(path: Path, *files: str) -> Path:
    """Create an output folder before any work is done, so a bad --out fails in the first second.

    files: names the command will write there; each must not already be a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {path} is a file; give a folder")
    new = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create the --out folder {path}: {e.strerror}; choose another --out") from None
    _made.extend(new)  # deepest first
    for name in files:
        if (path / name).is_dir():
            raise BadInput(f"{path / name} is a folder, but this command writes a file there; move it or choose another --out")
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


def available_memory(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still allocate before swapping or being killed; None where unknown.

    The smaller of Linux's MemAvailable and the room left under every memory limit on the process's
    cgroups and their parents (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). Containers (Docker,
    SageMaker, Kubernetes) set such limits, and /proc/meminfo there reports the whole host: a 4 GB
    container on a 64 GB machine would otherwise be told it has 60 GB free. Page cache of files
    (``active_file`` + ``inactive_file``), which the kernel drops before it kills anything, counts
    as free, as MemAvailable counts it.
    """
    known = [n for n in (_meminfo_available(proc), _cgroup_room(proc, cgroups)) if n is not None]
    return min(known) if known else None


def _meminfo_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# (limit file, usage file, the memory.stat keys of file page cache) of each cgroup version; v1's
# total_* keys count the whole subtree, as its usage does
_V2 = ("memory.max", "memory.current", ("active_file", "inactive_file"))
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_active_file", "total_inactive_file"))


def _cgroup_room(proc: Path, cgroups: Path) -> int | None:
    """Room left under the tightest memory limit of this process's cgroups and their parents."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except (OSError, ValueError):  # ValueError: a cgroup name that is not UTF-8
        return None
    rooms = []
    for line in lines:  # "hierarchy-id:controllers:path"; v2 is "0::path"
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = Path(path.lstrip("/"))
        if controllers == "":  # v2, at the root of the mount or (hybrid systems) under unified/
            for mount in (cgroups, cgroups / "unified"):
                rooms += _rooms(mount, relative, *_V2)
        elif "memory" in controllers.split(","):
            rooms += _rooms(cgroups / "memory", relative, *_V1)
    return max(0, min(rooms)) if rooms else None


def _rooms(mount: Path, relative: Path, limit_file: str, usage_file: str, cache_keys: tuple) -> list[int]:
    """limit - (usage - file cache) at every level from the process's cgroup up to the mount.

    Every level counts: a limit on a parent (a Slurm job, a systemd slice) caps the siblings' usage
    together, and a level's usage covers its whole subtree.
    """
    folder = mount / relative
    if ".." in relative.parts or not os.path.isdir(folder):
        # a cgroup namespace (containers) mounts the process's own cgroup as the root; ".." appears
        # for a process outside its namespace's root. os.path.isdir: no PermissionError, unlike pathlib's
        folder = mount
    rooms = []
    while True:
        limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
        if limit is not None and usage is not None and limit < 1 << 62:  # v1 writes "no limit" as about 2**63
            rooms.append(limit - usage + sum(_stat(folder / "memory.stat", k) for k in cache_keys))
        if folder == mount or folder.parent == folder:
            return rooms
        folder = folder.parent


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None for "max" (no limit), a missing file or anything else."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path, key: str) -> int:
    """One ``key value`` line of a cgroup memory.stat file; 0 where it cannot be read."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


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
