"""available_memory: MemAvailable, capped by the memory limits of the process's cgroups."""

from pathlib import Path

import pytest

from diffusion_utilities.errors import BadInput
from diffusion_utilities.memory import _cgroup_room, available_memory, check_memory

GB = 1 << 30
HOST_FREE = 60 * GB  # what /proc/meminfo reports: the whole host's, inside a container too


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def proc(tmp_path):
    _write(tmp_path / "proc" / "meminfo", f"MemTotal: 65000000 kB\nMemAvailable: {HOST_FREE // 1024} kB\n")
    return tmp_path / "proc"


def test_without_cgroup_files_the_host_figure_is_used(proc, tmp_path):
    assert available_memory(proc, tmp_path / "no-cgroups") == HOST_FREE


def _v2(folder: Path, limit: str, current: int, active: int = 0, inactive: int = 0) -> None:
    _write(folder / "memory.max", f"{limit}\n")
    _write(folder / "memory.current", f"{current}\n")
    _write(folder / "memory.stat", f"anon 100\nfile {active + inactive}\nactive_file {active}\ninactive_file {inactive}\n")


def _v1(folder: Path, limit: int, usage: int, active: int = 0, inactive: int = 0) -> None:
    _write(folder / "memory.limit_in_bytes", f"{limit}\n")
    _write(folder / "memory.usage_in_bytes", f"{usage}\n")
    _write(folder / "memory.stat", f"cache {active + inactive}\ntotal_active_file {active}\n"
                                   f"total_inactive_file {inactive}\nhierarchical_memory_limit {limit}\n")


V1_NO_LIMIT = 9223372036854771712


def test_v2_limit_of_a_container_caps_the_host_figure(proc, tmp_path):
    # A container in its own cgroup namespace: /proc/self/cgroup says "0::/" and the limit is at the root.
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/\n")
    _v2(root, str(4 * GB), 3 * GB, active=GB // 4, inactive=GB // 2)
    assert available_memory(proc, root) == 4 * GB - 3 * GB + GB // 4 + GB // 2  # page cache can be dropped


def test_v2_path_outside_the_mount_falls_back_to_its_root(proc, tmp_path):
    # Docker without a cgroup namespace on a v2 host shows the host's path, which the mount lacks.
    root = tmp_path / "cg"
    _v2(root, str(2 * GB), GB)
    for path in ("/system.slice/docker-abc.scope", "/../sibling"):
        _write(proc / "self" / "cgroup", f"0::{path}\n")
        _v2(tmp_path / "sibling", "1", 0)  # ".." must not lead out of the mount
        assert available_memory(proc, root) == GB, path


def test_v2_every_level_counts_and_the_tightest_wins(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/outer/inner\n")
    _v2(root / "outer" / "inner", str(5 * GB), 2 * GB)  # 3 GB of room here ...
    _v2(root / "outer", str(4 * GB), 3 * GB)  # ... but only 1 GB here: a sibling uses the rest
    assert available_memory(proc, root) == GB
    _v2(root / "outer", "max", 3 * GB)
    assert available_memory(proc, root) == 3 * GB
    _v2(root / "outer" / "inner", "max", 2 * GB)
    assert available_memory(proc, root) == HOST_FREE


def test_v2_on_a_hybrid_host_is_under_unified(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "4:memory:/\n0::/job\n")
    _v2(root / "unified" / "job", str(3 * GB), GB)
    assert available_memory(proc, root) == 2 * GB


def test_v1_walks_up_to_a_limited_parent(proc, tmp_path):
    # A Slurm task under a job limited to 2 GB, with a sibling task using 1.5 GB of it.
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "5:cpu,cpuacct:/\n4:memory:/slurm/job/task0\n0::/\n")
    _v1(root / "memory" / "slurm" / "job" / "task0", V1_NO_LIMIT, GB // 4, inactive=GB // 8)
    _v1(root / "memory" / "slurm" / "job", 2 * GB, GB * 7 // 4, inactive=GB // 8)
    _v1(root / "memory", V1_NO_LIMIT, 10 * GB)
    assert available_memory(proc, root) == 2 * GB - GB * 7 // 4 + GB // 8
    _v1(root / "memory" / "slurm" / "job", V1_NO_LIMIT, GB * 7 // 4)
    assert _cgroup_room(proc, root) is None  # v1's "no limit" is no limit, not 8 EB of room


def test_usage_over_the_limit_reads_as_nothing_free(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/\n")
    _v2(root, str(GB), 2 * GB)
    assert available_memory(proc, root) == 0


def test_nothing_readable_is_unknown(tmp_path):
    assert available_memory(tmp_path / "none", tmp_path / "none") is None
    _write(tmp_path / "p" / "self" / "cgroup", "")
    (tmp_path / "p" / "self" / "cgroup").write_bytes(b"0::/\xff\xfe\n")  # not UTF-8
    assert _cgroup_room(tmp_path / "p", tmp_path / "none") is None


def test_check_memory_names_the_need_and_the_fix(monkeypatch):
    monkeypatch.setattr("diffusion_utilities.memory.available_memory", lambda: 2 * 10**9)
    check_memory(10**9, "sampling", "use a smaller batch")
    with pytest.raises(BadInput, match=r"^sampling needs about 3.0 GB of memory and 2.0 GB is free; use a smaller batch$"):
        check_memory(3 * 10**9, "sampling", "use a smaller batch")


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux's /proc/meminfo")
def test_this_linux_machine_gives_a_figure_no_larger_than_its_memory():
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))
    free = available_memory()
    assert isinstance(free, int) and 0 < free <= total
