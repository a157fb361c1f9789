"""tools/device_check.sh is run once per GPU session, with minutes of device time: a dry run here,
on the CPU and at toy sizes, keeps it from breaking between those sessions (a renamed flag, a moved file)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_script_runs_every_step_on_toy_sizes(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "QUICK": "1", "DEVICE": "cpu", "OUT": str(out), "WORK": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "tools/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = (out / "log.txt").read_text()
    assert run.returncode == 0, log[-3000:]
    assert "failed: nothing" in log
    for default in ("ddpm in 500 steps", "dpm-solver++ in 10 steps", "heun in 9 steps"):  # the three shipped models
        assert f"sampled 4 sprites with {default}" in log, log[-3000:]
    bench = json.loads((out / "bench_cuda.json").read_text())
    assert [r["name"] for r in bench["rows"]] == ["sample-ddim25-b32", "train"]
    rows = json.loads((out / "recipe_course_eval.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["real", "ddpm", "ddim-eta1"]
    card = json.loads((out / "recipe_course_card.json").read_text())
    assert card["training"]["batch_size"] == 100 and card["training"]["precision"] == "fp32"  # the course recipe
    assert "01_noise_schedule.ipynb: " in (out / "notebooks_gpu.txt").read_text()
    assert "sample-ddpm500-large+compile: first call (compiling)" in (out / "bench_compile.txt").read_text()
    study = [r["name"] for r in json.loads((out / "study.json").read_text())["rows"]]
    assert study == ["fp32", "bf16", "autocast+profile@2x"], study
