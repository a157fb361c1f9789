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


def available_memory(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still allocate before swapping or being killed; None where unknown.

    The smaller of Linux's MemAvailable and the room left under any memory limit of the process's
    cgroups (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). Containers (Docker, SageMaker,
    Kubernetes) set such limits, and /proc/meminfo there reports the whole host: a 4 GB container
    on a 64 GB machine would otherwise be told it has 60 GB free. Page cache the kernel can drop
    (``inactive_file``) is not counted as used, as ``docker stats`` does not count it.
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


def _cgroup_room(proc: Path, cgroups: Path) -> int | None:
    """Room left under the tightest memory limit of this process's cgroups and their parents."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
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
                rooms += _v2_rooms(mount, relative)
        elif "memory" in controllers.split(","):
            rooms += _v1_rooms(cgroups / "memory", relative)
    return max(0, min(rooms)) if rooms else None


def _v2_rooms(mount: Path, relative: Path) -> list[int]:
    """max - (current - inactive_file) at every level from the process's cgroup up to the mount."""
    folder = mount / relative
    if not folder.is_dir():  # a container's own cgroup namespace mounts its cgroup as the root
        folder = mount
    rooms = []
    while True:
        limit = _read_int(folder / "memory.max")
        current = _read_int(folder / "memory.current")
        if limit is not None and current is not None:
            rooms.append(limit - current + _stat(folder / "memory.stat", "inactive_file"))
        if folder == mount or folder.parent == folder:
            return rooms
        folder = folder.parent


def _v1_rooms(mount: Path, relative: Path) -> list[int]:
    """v1 reports the tightest limit of the cgroup and its parents as ``hierarchical_memory_limit``."""
    folder = mount / relative
    if not folder.is_dir():
        folder = mount
    stat = folder / "memory.stat"
    limit = _stat(stat, "hierarchical_memory_limit", None) or _read_int(folder / "memory.limit_in_bytes")
    usage = _read_int(folder / "memory.usage_in_bytes")
    if limit is None or usage is None or limit >= 1 << 62:  # v1 writes "no limit" as about 2**63
        return []
    return [limit - usage + _stat(stat, "total_inactive_file")]


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None for "max" (no limit), a missing file or anything else."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path, key: str, default: int | None = 0) -> int | None:
    """One ``key value`` line of a cgroup memory.stat file."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return default


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
