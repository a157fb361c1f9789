"""sagemaker/on-start.sh, run against a stand-in conda layout (no SageMaker instance here).

The stand-in: $CONDA/envs/<name> folders, a $CONDA/bin/activate that records which environment
was activated and puts a fake pip first on PATH (it records its arguments), and a sudo that runs
its command as the current user. The real python (with torch and this package) runs the script's
final import check. What this cannot show: AWS's own environments, network installs, the
5-minute limit. docs/sagemaker.md says so.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "sagemaker" / "on-start.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")


def _layout(tmp_path, envs):
    conda, bin_dir = tmp_path / "conda", tmp_path / "fakebin"
    for name in (*envs, "JupyterSystemEnv"):
        (conda / "envs" / name).mkdir(parents=True)
    (conda / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (conda / "bin" / "activate").write_text(
        f'echo "activate $1" >> {calls}\nexport CONDA_ENV_NAME="$1"\nexport PATH="{bin_dir}:$PATH"\n')
    # each argument in <>, so an argument split at a space (or two run together) shows
    (bin_dir / "pip").write_text(f'#!/bin/sh\n{{ printf "pip[%s]" "$CONDA_ENV_NAME"; printf " <%s>" "$@"; echo; }} >> {calls}\n'
                                 'for a in "$@"; do case "$prev" in -r) cat "$a" >> ' + str(calls) + ';; esac; prev=$a; done\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    sudo = tmp_path / "sudobin"
    sudo.mkdir()
    (sudo / "sudo").write_text('#!/bin/sh\nshift 3\nexec "$@"\n')  # drops "-u USER -H"
    for f in (bin_dir / "pip", bin_dir / "python", sudo / "sudo"):
        f.chmod(0o755)
    return conda, calls, sudo


def _run(tmp_path, conda, sudo, repo, **extra):
    log = tmp_path / "course-setup.log"
    env = {**os.environ, "CONDA": str(conda), "LOG": str(log), "RUN_AS": subprocess.check_output(["id", "-un"], text=True).strip(),
           "REPO": str(repo), "PATH": f"{sudo}:{os.environ['PATH']}", **extra}
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    return r, log


def _wait_for_end(log, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = log.read_text()
        if "course setup finished" in text or "FAILED" in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the background install did not finish:\n{log.read_text()}")


def test_installs_into_the_pytorch_env_and_keeps_its_torch(tmp_path):
    conda, calls, sudo = _layout(tmp_path, ["python3", "pytorch"])  # AL2023's names
    r, log = _run(tmp_path, conda, sudo, ROOT)
    assert r.returncode == 0, r.stderr
    assert "installing the course into conda env pytorch in the background" in r.stdout  # reaches CloudWatch
    text = _wait_for_end(log)
    assert "course setup finished" in text and "kernel env: torch" in text, text
    recorded = calls.read_text()
    assert "activate JupyterSystemEnv" in recorded and "pip[JupyterSystemEnv] <install> <--quiet> <jupyterlab_widgets>=3,<4>" in recorded
    assert "activate pytorch" in recorded and f"pip[pytorch] <install> <--quiet> <--no-deps> <-e> <{ROOT}>" in recorded
    installed = [line for line in recorded.splitlines() if not line.startswith(("activate", "pip["))]
    assert "numpy>=1.26" in installed and "ipywidgets>=8.1" in installed
    assert not any(line.startswith(("torch", "jupyterlab>")) for line in installed)  # AWS's CUDA torch stays


def test_falls_back_to_the_al2_env_name_and_honours_wheels(tmp_path):
    conda, calls, sudo = _layout(tmp_path, ["pytorch_p310"])
    r, log = _run(tmp_path, conda, sudo, ROOT, WHEELS="/data/my wheels")  # a space: one argument all the same
    assert r.returncode == 0 and "conda env pytorch_p310" in r.stdout
    _wait_for_end(log)
    recorded = calls.read_text()
    assert "pip[pytorch_p310] <install> <--quiet> <--no-index> <--find-links> </data/my wheels> <--no-deps> <-e>" in recorded
    assert "pip[JupyterSystemEnv] <install> <--quiet> <--no-index> <--find-links> </data/my wheels> <jupyterlab" in recorded


@pytest.mark.parametrize("envs, repo, message", [
    (["python3"], ROOT, "error: no conda environment 'pytorch or pytorch_p310'"),
    (["pytorch"], Path("/no/such/clone"), "error: no clone of the course at /no/such/clone"),
])
def test_a_problem_is_one_line_in_cloudwatch_and_the_instance_still_starts(tmp_path, envs, repo, message):
    conda, calls, sudo = _layout(tmp_path, envs)
    r, log = _run(tmp_path, conda, sudo, repo)
    assert r.returncode == 0  # a failing script would keep the instance from starting at all
    assert message in r.stdout and message in log.read_text()
    assert not calls.exists()  # nothing was installed


def test_a_failed_install_says_so_in_the_log(tmp_path):
    conda, calls, sudo = _layout(tmp_path, ["pytorch"])
    (tmp_path / "fakebin" / "pip").write_text('#!/bin/sh\ncase "$*" in *" -e "*) echo "ERROR: no network" >&2; exit 1;; esac\n')
    r, log = _run(tmp_path, conda, sudo, ROOT)
    assert r.returncode == 0
    text = _wait_for_end(log)
    assert "ERROR: no network" in text and "course setup FAILED" in text and "course setup finished" not in text
