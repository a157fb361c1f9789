"""diffusion_utilities.distributed: torchrun's ranks, each rank's part of a batch, SageMaker's folders.

Everything but the last test runs in this one process (no process group); the last starts two
gloo processes with torchrun and checks the collectives between them.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_utilities import BadInput, ContextUnet
from diffusion_utilities.distributed import (SAGEMAKER_CHECKPOINTS, SINGLE, World, agreed_checks, any_rank,
                                             average_over_ranks, check_batch_size, convert_sync_batchnorm,
                                             is_main, rank_device, sagemaker_env, shard, torchrun_world,
                                             wait_for_all)


def _torchrun_env(world_size, rank, local_rank, local_world_size=None):
    env = {"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(local_rank)}
    if local_world_size is not None:
        env["LOCAL_WORLD_SIZE"] = str(local_world_size)
    return env


def test_a_plain_process_is_rank_0_of_1():
    assert torchrun_world({}) == SINGLE == World(0, 1, 0)
    assert is_main(SINGLE)


def test_torchrun_variables_give_the_world():
    assert torchrun_world(_torchrun_env(4, 3, 1, 2)) == World(3, 4, 1, 2)
    assert not is_main(World(3, 4, 1, 2))


@pytest.mark.parametrize("env, says", [
    ({"RANK": "0", "LOCAL_RANK": "0"}, "not WORLD_SIZE"),
    (_torchrun_env("two", 0, 0), "whole numbers"),
    (_torchrun_env(2, 2, 0), "do not fit"),
    (_torchrun_env(2, 0, 1, 1), "do not fit"),
])
def test_broken_torchrun_variables_are_refused_in_one_line(env, says):
    with pytest.raises(BadInput, match=says) as e:
        torchrun_world(env)
    assert "\n" not in str(e.value) and "torchrun" in str(e.value)


def test_is_main_without_a_world_reads_torchruns_variables_and_never_raises(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert is_main()
    monkeypatch.setenv("RANK", "1")  # a stray RANK describes no torchrun world: this process must still speak
    assert is_main()
    monkeypatch.setenv("RANK", "not a number")
    assert is_main()
    for name, value in _torchrun_env(2, 1, 1, 2).items():  # rank 1 of a real torchrun run: rank 0 speaks for it
        monkeypatch.setenv(name, value)
    assert not is_main()


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n, batch", [(1000, 100), (1003, 84), (10, 4), (5, 12)])
def test_the_ranks_together_take_every_sprite_of_an_epoch_once(world_size, n, batch):
    if batch % world_size:
        batch = batch - batch % world_size or world_size
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    seen = []
    for k in range((n + batch - 1) // batch):  # the steps of one epoch, as one process takes them
        step = perm[k * batch:(k + 1) * batch]
        parts = [shard(step, World(r, world_size, r, world_size)) for r in range(world_size)]
        seen += [int(i) for p in parts if p.weight > 0 for i in p.indices]
        if len(step) == batch:  # a full batch splits evenly, weight 1
            assert [len(p.indices) for p in parts] == [batch // world_size] * world_size
            assert all(p.weight == 1.0 for p in parts)
        assert all(len(p.indices) >= 1 for p in parts)  # DDP needs every rank in every backward
    assert sorted(seen) == list(range(n))


def test_shard_weights_make_the_average_of_rank_means_the_whole_batch_mean():
    """DDP averages the ranks' gradients: sum_r weight_r * mean_r / world must be the batch mean."""
    losses = torch.rand(1000, dtype=torch.float64)
    for b in (41, 7, 3, 1):  # short last batches: parts of unequal sizes, or empty ones
        batch = torch.arange(b)
        for world_size in (2, 3, 4):
            parts = [shard(batch, World(r, world_size, r, world_size)) for r in range(world_size)]
            ddp = sum(p.weight * losses[p.indices].mean() for p in parts) / world_size
            torch.testing.assert_close(ddp, losses[:b].mean())


def test_one_process_takes_the_whole_batch():
    batch = torch.arange(10)
    part = shard(batch, SINGLE)
    assert part.indices is batch and part.weight == 1.0


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    check_batch_size(100, World(0, 4, 0, 4))
    check_batch_size(101, SINGLE)
    with pytest.raises(BadInput, match=r"--batch-size 101 does not split evenly over 2 processes.*\(e\.g\. 100 or 102\)"):
        check_batch_size(101, World(1, 2, 1, 2))
    with pytest.raises(BadInput, match=r"multiple of 4 \(e\.g\. 4\)"):
        check_batch_size(3, World(0, 4, 0, 4))


def test_rank_device():
    two = World(1, 2, 1, 2)
    assert rank_device(torch.device("cuda:1"), SINGLE) == torch.device("cuda:1")  # one process: as given
    assert rank_device(torch.device("cpu"), two) == torch.device("cpu")
    with pytest.raises(BadInput, match="names one GPU"):
        rank_device(torch.device("cuda:0"), two)
    with pytest.raises(BadInput, match="not on mps"):
        rank_device(torch.device("mps"), two)
    if torch.cuda.device_count() < 2:
        with pytest.raises(BadInput, match="no CUDA GPU|has 1 GPUs"):
            rank_device(torch.device("cuda"), two)


def test_one_process_needs_no_process_group():
    """SINGLE makes no collective call: these would raise without an initialised group."""
    assert not torch.distributed.is_initialized()
    assert any_rank(True, SINGLE) and not any_rank(False, SINGLE)
    t = torch.tensor([1.5, 2.0])
    assert average_over_ranks(t, SINGLE) is t
    wait_for_all(SINGLE)
    error = BadInput("--out is a file; give a folder")
    with pytest.raises(BadInput) as e:
        with agreed_checks(SINGLE):
            raise error
    assert e.value is error  # one process: the block's own exception, unchanged
    with agreed_checks(SINGLE):
        pass


def test_batchnorm_stays_per_rank_on_the_cpu():
    model = ContextUnet(n_feat=8, n_cfeat=5, height=16)
    for world in (SINGLE, World(0, 2, 0, 2)):
        assert convert_sync_batchnorm(model, world) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batchnorm_is_synchronised_on_gpus():
    model = ContextUnet(n_feat=8, n_cfeat=5, height=16).cuda()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    synced = convert_sync_batchnorm(model, World(0, 2, 0, 2))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    assert state.keys() == synced.state_dict().keys()  # checkpoints and the EMA copy load either way
    assert convert_sync_batchnorm(model, SINGLE) is model


def test_outside_sagemaker_there_is_no_sagemaker_env():
    assert sagemaker_env({}) is None
    assert sagemaker_env({"SM_CHANNEL_TRAINING": "/data", "SM_NUM_GPUS": "1"}) is None  # no SM_MODEL_DIR


def test_sagemaker_env_reads_the_containers_folders():
    env = {"SM_MODEL_DIR": "/opt/ml/model", "SM_CHANNELS": '["testing","training"]',
           "SM_CHANNEL_TRAINING": "/opt/ml/input/data/training", "SM_CHANNEL_TESTING": "/opt/ml/input/data/testing",
           "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data", "SM_NUM_GPUS": "4",
           "SM_HOSTS": '["algo-1","algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    sm = sagemaker_env(env)
    assert sm.model_dir == Path("/opt/ml/model")
    assert sm.channel == Path("/opt/ml/input/data/training")
    assert sm.checkpoint_dir == SAGEMAKER_CHECKPOINTS == Path("/opt/ml/checkpoints")
    assert sm.output_data_dir == Path("/opt/ml/output/data")
    assert (sm.num_gpus, sm.hosts, sm.current_host) == (4, ("algo-1", "algo-2"), "algo-2")
    assert sagemaker_env({**env, "DIFFUSION_CHECKPOINT_DIR": "/tmp/ck"}).checkpoint_dir == Path("/tmp/ck")


@pytest.mark.parametrize("channels, expected", [
    ({"SM_CHANNEL_TRAIN": "/d/train", "SM_CHANNEL_SPRITES": "/d/sprites", "SM_CHANNELS": '["sprites","train"]'},
     "/d/train"),  # "train" before the list's order
    ({"SM_CHANNEL_SPRITES": "/d/sprites", "SM_CHANNEL_EXTRA": "/d/extra", "SM_CHANNELS": '["sprites","extra"]'},
     "/d/sprites"),  # else the first channel listed
    ({}, None),  # no channel: procedural sprites
])
def test_sagemaker_channel_choice(channels, expected):
    sm = sagemaker_env({"SM_MODEL_DIR": "/m", **channels})
    assert sm.channel == (Path(expected) if expected else None)
    assert (sm.num_gpus, sm.hosts, sm.output_data_dir) == (0, (), None)


@pytest.mark.parametrize("env, says", [
    ({"SM_CHANNELS": "training"}, "SM_CHANNELS='training' is not a JSON list"),
    ({"SM_HOSTS": '{"a": 1}'}, "SM_HOSTS="),
    ({"SM_NUM_GPUS": "four"}, "SM_NUM_GPUS='four' is not a whole number"),
])
def test_a_broken_sagemaker_variable_is_refused_in_one_line(env, says):
    with pytest.raises(BadInput, match=says) as e:
        sagemaker_env({"SM_MODEL_DIR": "/m", **env})
    assert "\n" not in str(e.value)


WORKER = '''
import json, sys, torch
from diffusion_utilities import BadInput
from diffusion_utilities.distributed import (agreed_checks, any_rank, average_over_ranks, distributed_context,
                                             is_main, shard, torchrun_world)

out = sys.argv[1]
with distributed_context(torch.device("cpu")) as world:
    r = world.rank
    got = {"world": [r, world.world_size, world.local_rank], "is_main": is_main(world), "env_is_main": is_main(),
           "any_one": any_rank(r == 1, world), "any_none": any_rank(False, world),
           "mean": average_over_ranks(torch.tensor([float(r), 10.0 * r]), world).tolist(),
           "shard": shard(torch.arange(100), world).indices.tolist()}
    try:
        with agreed_checks(world):
            if r == 1:  # only rank 1 finds the problem (rank 0 would otherwise wait for it forever)
                raise BadInput("rank 1 refused this")
    except BadInput as e:
        got["refused"] = str(e)
    got["same_after"] = any_rank(True, world)  # both ranks still in step after the refusal
with open(f"{out}/rank{r}.json", "w") as f:
    json.dump(got, f)
'''


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_two_gloo_processes_agree(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this python")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env={**_env_for_children(), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    for i, got in enumerate(ranks):
        assert got["world"] == [i, 2, i]
        assert got["is_main"] == got["env_is_main"] == (i == 0)
        assert got["any_one"] is True and got["any_none"] is False  # one rank's flag reaches both
        assert got["mean"] == [0.5, 5.0]
        assert got["shard"] == list(range(50 * i, 50 * (i + 1)))
        assert got["refused"] == "rank 1 refused this"  # both stop, with rank 1's message
        assert got["same_after"] is True


def _env_for_children():
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
