"""`train` past one process: under torchrun (two gloo processes on the CPU) and in a SageMaker container.

Each test starts real processes, as a learner or a training job would: torchrun's own launcher
(``python -m torch.distributed.run``) and ``python -m diffusion_utilities train``, with the SM_*
variables of a SageMaker container pointed at temporary folders.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion_utilities import load_model
from diffusion_utilities.weights import read_card

ROOT = Path(__file__).resolve().parents[1]
# 200 sprites at a global batch of 20: 10 steps an epoch, 10 sprites a rank
TINY = ["--n-sprites", "200", "--n-feat", "16", "--batch-size", "20", "--ema-decay", "0.9", "--no-progress",
        "--device", "cpu"]
CHANNEL_TINY = TINY[2:]  # with a data channel, no --n-sprites: the channel gives the sprites
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small CPU: one thread each

pytestmark = pytest.mark.slow


def _torchrun(out, *extra, nproc=2):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), "-m", "diffusion_utilities", "train", "--out", str(out), *TINY, *extra],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _plain(*args, env=ENV, tiny=TINY):
    return subprocess.Popen([sys.executable, "-m", "diffusion_utilities", "train", *tiny, *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _workers(launcher_pid: int) -> list[int]:
    """The python processes torchrun started (its children that run diffusion_utilities), by rank order of start."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == launcher_pid and b"diffusion_utilities" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def _wait_for(path: Path, proc, seconds=180):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert path.exists(), proc.communicate()[1][-2000:]


def test_two_processes_train_one_model_with_one_card(tmp_path):
    code, out, err = _finish(_torchrun(tmp_path / "run", "--epochs", "2"))
    assert code == 0, err[-2000:]
    assert out.count("trained 20 steps") == 1, out  # rank 0 reports; rank 1 is silent
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["checkpoint.safetensors", "model.json", "model.safetensors"]
    model, card = load_model(tmp_path / "run" / "model.safetensors")
    assert card["steps"] == 20 and card["images_seen"] == 400 and len(card["epoch_losses"]) == 2
    assert card["hardware"].startswith("2 processes on ")
    assert card["training"]["batch_size"] == 20  # the global batch, as in one process
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_bad_input_is_reported_once_and_every_rank_stops(tmp_path):
    code, out, err = _finish(_torchrun(tmp_path / "run", "--epochs", "1", "--batch-size", "15"))
    assert code != 0
    assert err.count("does not split evenly over 2 processes") == 1, err[-3000:]
    # a refusal only rank 0 can make (it alone inspects --out) stops rank 1 too, and is said once
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "model.safetensors").write_bytes(b"")
    code, out, err = _finish(_torchrun(tmp_path / "held", "--epochs", "1"))
    assert code != 0 and err.count("already holds a training run") == 1, err[-3000:]


def test_sigterm_to_one_rank_checkpoints_once_and_the_run_resumes_with_two_or_one_processes(tmp_path):
    run = _torchrun(tmp_path / "run", "--epochs", "6", "--checkpoint-every", "2")
    _wait_for(tmp_path / "run" / "checkpoint.safetensors", run)
    ranks = _workers(run.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGTERM)  # one rank only: the other learns of it from the all-reduce
    code, out, err = _finish(run)
    assert code != 0
    assert err.count("checkpoint saved — continue with --resume") == 1, err[-3000:]
    stopped_at = read_card(tmp_path / "run" / "checkpoint.safetensors")["state"]["step"]
    assert 0 < stopped_at < 60, stopped_at
    assert not (tmp_path / "run" / "model.safetensors").exists()
    shutil.copytree(tmp_path / "run", tmp_path / "alone")

    code, out, err = _finish(_torchrun(tmp_path / "run", "--epochs", "6", "--checkpoint-every", "2", "--resume"))
    assert code == 0, err[-2000:]
    assert out.count(f"resuming from step {stopped_at} ") == 1 and "trained 60 steps" in out, out
    card = read_card(tmp_path / "run" / "model.safetensors")
    assert card["steps"] == 60 and len(card["epoch_losses"]) == 6

    # the same checkpoint, resumed by one process: the world size is not part of a run
    code, out, err = _finish(_plain("--out", str(tmp_path / "alone"), "--epochs", "6", "--checkpoint-every", "2",
                                    "--resume"))
    assert code == 0, err[-2000:]
    assert f"resuming from step {stopped_at} " in out
    card = read_card(tmp_path / "alone" / "model.safetensors")
    assert card["steps"] == 60 and not card["hardware"].startswith("2 processes")


def test_in_a_sagemaker_container_train_reads_the_channel_writes_the_model_folder_and_resumes(tmp_path):
    data, model_dir, ckpt_dir = tmp_path / "channel", tmp_path / "model", tmp_path / "checkpoints"
    made = subprocess.run([sys.executable, "-m", "diffusion_utilities", "dataset", "--n", "120", "--seed", "3",
                           "--out", str(data)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    model_dir.mkdir()
    env = {**ENV, "SM_MODEL_DIR": str(model_dir), "SM_CHANNEL_TRAINING": str(data), "SM_CHANNELS": '["training"]',
           "DIFFUSION_CHECKPOINT_DIR": str(ckpt_dir), "SM_CURRENT_HOST": "algo-1", "SM_HOSTS": '["algo-1"]'}
    # no --out, no --data: the job's folders (as sagemaker/train_entry.py starts it); the channel gives the sprites
    code, _, err = _finish(_plain("--epochs", "8", env=env))
    assert code == 2 and "--n-sprites" in err and "the job's data channel" in err, err[-2000:]
    first = _plain("--epochs", "8", "--checkpoint-every", "2", env=env, tiny=CHANNEL_TINY)
    _wait_for(ckpt_dir / "checkpoint.safetensors", first)
    first.send_signal(signal.SIGTERM)  # a spot interruption, or a job stopped on request
    code, _, err = _finish(first)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    stopped_at = read_card(ckpt_dir / "checkpoint.safetensors")["state"]["step"]
    assert not (model_dir / "model.safetensors").exists()

    code, out, err = _finish(_plain("--epochs", "8", "--checkpoint-every", "2", env=env, tiny=CHANNEL_TINY))  # restarted
    assert code == 0, err[-2000:]
    assert f"resuming from step {stopped_at} " in out, out
    model, card = load_model(model_dir / "model.safetensors")  # the card beside it, its SHA-256 checked
    assert (model_dir / "model.json").exists()
    assert card["data"]["count"] == 120 and card["steps"] == 8 * 6  # 120 sprites at batch 20: 6 steps an epoch
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.safetensors"]
