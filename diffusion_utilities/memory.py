"""How much memory is free, so that work too big to fit is refused in one line before it starts.

Without this, a request far too big is not a MemoryError but the kernel killing the process
(exit 137, no message) after it has filled the machine's memory and swap.
"""

import os
from pathlib import Path

from .errors import BadInput

__all__ = ["available_memory", "check_memory", "sampling_memory", "check_sampling_memory"]


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


# Peak memory of a sampling run on the CPU, per sprite, beyond what the process already holds:
# 0.43 MB at n_feat=64 and 16×16 (measured with `sample --n 256` and `--n 1024`: 0.95 and 1.28 GB
# peak resident). It scales with the size of the feature maps, n_feat·height².
BYTES_PER_SPRITE = 450_000


def sampling_memory(model, n: int, guidance: float = 0.0) -> int:
    """About how many bytes sampling ``n`` sprites at once takes on the CPU (guidance doubles the batch)."""
    per_sprite = BYTES_PER_SPRITE * model.n_feat / 64 * (model.h / 16) ** 2
    return int(n * (2 if guidance else 1) * per_sprite)


def check_sampling_memory(model, n: int, guidance: float, what: str, fix: str) -> None:
    """One BadInput line, before any work, when sampling ``n`` sprites on the CPU cannot fit in memory.

    Only on the CPU: a CUDA allocator says "out of memory" itself, which the CLI turns into one line.
    """
    if next(model.parameters()).device.type == "cpu":
        check_memory(sampling_memory(model, n, guidance), what, fix)
