"""available_memory: MemAvailable, capped by the memory limits of the process's cgroups."""

from pathlib import Path

import pytest

from diffusion_utilities.errors import BadInput, available_memory, check_memory

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


def test_v2_limit_of_a_container_caps_the_host_figure(proc, tmp_path):
    # A container in its own cgroup namespace: /proc/self/cgroup says "0::/" and the limit is at the root.
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/\n")
    _write(root / "memory.max", f"{4 * GB}\n")
    _write(root / "memory.current", f"{1 * GB}\n")
    _write(root / "memory.stat", f"anon 100\ninactive_file {GB // 2}\nactive_file 5\n")
    assert available_memory(proc, root) == 4 * GB - GB + GB // 2  # dropping page cache frees room


def test_v2_tightest_limit_among_parents_wins_and_max_means_none(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/outer/inner\n")
    _write(root / "outer" / "inner" / "memory.max", "max\n")
    _write(root / "outer" / "inner" / "memory.current", f"{GB}\n")
    _write(root / "outer" / "memory.max", f"{3 * GB}\n")
    _write(root / "outer" / "memory.current", f"{2 * GB}\n")
    assert available_memory(proc, root) == GB
    _write(root / "outer" / "memory.max", "max\n")
    assert available_memory(proc, root) == HOST_FREE


def test_v1_limit_and_v1_unlimited(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "5:cpu,cpuacct:/\n4:memory:/jobs/abc\n0::/\n")
    group = root / "memory" / "jobs" / "abc"
    _write(group / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit" ...
    _write(group / "memory.usage_in_bytes", f"{GB}\n")
    _write(group / "memory.stat", f"total_inactive_file {GB // 4}\nhierarchical_memory_limit {2 * GB}\n")
    assert available_memory(proc, root) == 2 * GB - GB + GB // 4  # ... but a parent sets 2 GB
    _write(group / "memory.stat", "total_inactive_file 0\nhierarchical_memory_limit 9223372036854771712\n")
    assert available_memory(proc, root) == HOST_FREE


def test_usage_over_the_limit_reads_as_nothing_free(proc, tmp_path):
    root = tmp_path / "cg"
    _write(proc / "self" / "cgroup", "0::/\n")
    _write(root / "memory.max", f"{GB}\n")
    _write(root / "memory.current", f"{2 * GB}\n")
    assert available_memory(proc, root) == 0


def test_nothing_readable_is_unknown(tmp_path):
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_check_memory_names_the_need_and_the_fix(monkeypatch):
    monkeypatch.setattr("diffusion_utilities.errors.available_memory", lambda: 2 * 10**9)
    check_memory(10**9, "sampling", "use a smaller batch")
    with pytest.raises(BadInput, match=r"^sampling needs about 3.0 GB of memory and 2.0 GB is free; use a smaller batch$"):
        check_memory(3 * 10**9, "sampling", "use a smaller batch")


def test_this_machine_reports_a_positive_figure():
    free = available_memory()
    assert free is None or free > 0
