import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusion_utilities import ContextUnet, ModelConfig, TrainConfig, procedural_dataset, train
from diffusion_utilities.errors import BadInput
from diffusion_utilities.training import TrainingDiverged
from diffusion_utilities.weights import read_tensors

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-sprites", "200", "--n-feat", "16", "--batch-size", "10", "--epochs", "3", "--ema-decay", "0.9",
        "--checkpoint-every", "2", "--no-progress"]


def _train_cli(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "diffusion_utilities", "train", "--out", str(out), *TINY, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ref = _train_cli(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    run = _train_cli(tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) == 128 + signal.SIGTERM
    assert "checkpoint saved" in run.stderr.read()
    from diffusion_utilities.weights import read_card

    stopped_at = read_card(ckpt)["state"]["step"]
    assert 0 < stopped_at < 60 and stopped_at % 20 != 0, "should stop mid-epoch (20 steps per epoch)"
    assert not (tmp_path / "run" / "model.safetensors").exists()

    resumed = _train_cli(tmp_path / "run", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = load_file(tmp_path / "ref" / "model.safetensors")
    b = load_file(tmp_path / "run" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the card too: the interrupted epoch's loss averages the whole epoch, not only the steps after the resume
    ref_card, run_card = read_card(tmp_path / "ref" / "model.safetensors"), read_card(tmp_path / "run" / "model.safetensors")
    assert run_card["epoch_losses"] == ref_card["epoch_losses"] and run_card["final_loss"] == ref_card["final_loss"]


@pytest.mark.slow
def test_resume_refuses_a_different_recipe(tmp_path):
    first = _train_cli(tmp_path)
    assert first.wait(timeout=300) == 0
    other = _train_cli(tmp_path, "--resume", "--lr", "0.01")
    assert other.wait(timeout=120) == 2
    err = other.stderr.read().strip()
    assert err.startswith("error:") and "different training config" in err and "\n" not in err
    assert "(lr: checkpoint 0.000316" in err and ", now 0.01)" in err  # names the field that differs


def test_a_new_run_never_replaces_an_earlier_one_unasked(tmp_path):
    data, tiny = procedural_dataset(40, 0), ModelConfig(n_feat=8)
    cfg = TrainConfig(epochs=2, batch_size=20, n_sprites=40, checkpoint_every=0, snapshot_epochs=(1,))
    train(cfg, tmp_path, data, tiny, progress=False)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with pytest.raises(BadInput, match="already holds a training run.*--resume.*--overwrite"):
        train(TrainConfig(epochs=1, batch_size=20, n_sprites=40, seed=1), tmp_path, data, tiny, progress=False)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    # --overwrite starts afresh: the old checkpoint and snapshots go, the new run's card is what is left
    card = train(TrainConfig(epochs=1, batch_size=20, n_sprites=40, seed=1), tmp_path, data, tiny, progress=False,
                 overwrite=True)
    assert card["training"]["seed"] == 1 and card["steps"] == 2
    assert not list((tmp_path / "snapshots").glob("*.safetensors"))
    assert read_tensors(tmp_path / "checkpoint.safetensors")[1]["state"]["step"] == 2


def test_overwrite_keeps_the_old_run_until_every_input_has_been_checked(tmp_path):
    data, tiny = procedural_dataset(40, 0), ModelConfig(n_feat=8)
    cfg = TrainConfig(epochs=2, batch_size=20, n_sprites=40, checkpoint_every=0, snapshot_epochs=(1,))
    train(cfg, tmp_path, data, tiny, progress=False)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(BadInput, match="weights not found"):
        train(cfg, tmp_path, data, tiny, progress=False, overwrite=True, init_from=tmp_path / "nope.safetensors")
    with pytest.raises(BadInput, match="pass one of them"):
        train(cfg, tmp_path, data, tiny, progress=False, overwrite=True, resume=True)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == files
    # a finished model without a checkpoint: --resume cannot continue it, and must not replace it
    (tmp_path / "checkpoint.safetensors").unlink()
    with pytest.raises(BadInput, match="no checkpoint.safetensors to resume from.*--overwrite"):
        train(cfg, tmp_path, data, tiny, progress=False, resume=True)


def test_bad_out_folders_fail_before_training(tmp_path):
    data, cfg = procedural_dataset(20, 0), TrainConfig(epochs=1, batch_size=20, n_sprites=20)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(BadInput, match="is a file; give a folder"):
        train(cfg, tmp_path / "a_file", data, ModelConfig(n_feat=8), progress=False)
    with pytest.raises(BadInput, match="cannot create the --out folder"):
        train(cfg, tmp_path / "a_file" / "run", data, ModelConfig(n_feat=8), progress=False)


def test_resume_refuses_model_weights_in_place_of_a_checkpoint(tmp_path):
    data, tiny = procedural_dataset(20, 0), ModelConfig(n_feat=8)
    cfg = TrainConfig(epochs=1, batch_size=20, n_sprites=20)
    train(cfg, tmp_path / "a", data, tiny, progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "checkpoint.safetensors").write_bytes((tmp_path / "a" / "model.safetensors").read_bytes())
    with pytest.raises(BadInput, match="is not a training checkpoint"):
        train(cfg, tmp_path / "b", data, tiny, progress=False, resume=True)


def _fails_from(monkeypatch, first_bad_step: int, what: str):
    """Make training go bad from a step on: a NaN loss, or NaN weights behind a finite loss."""
    from diffusion_utilities import training

    real, calls = training.train_step, []

    def step(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) > first_bad_step:
            if what == "loss":
                return loss * float("nan")
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(training, "train_step", step)


@pytest.mark.parametrize("what", ["loss", "weights"])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, what):
    data = procedural_dataset(40, 0)
    _fails_from(monkeypatch, 5, what)  # steps 1..5 are good; checkpoints every 2 steps
    cfg = TrainConfig(epochs=50, batch_size=10, n_sprites=40, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match="kept the last good checkpoint"):
        train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False)
    tensors, card = read_tensors(tmp_path / "checkpoint.safetensors")
    assert card["state"]["step"] == 4  # the last checkpoint before the bad step 6
    assert all(torch.isfinite(v).all() for v in tensors.values())


def test_divergence_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    _fails_from(monkeypatch, 0, "loss")
    cfg = TrainConfig(epochs=1, batch_size=10, n_sprites=40, checkpoint_every=0)
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written yet"):
        train(cfg, tmp_path, procedural_dataset(40, 0), ModelConfig(n_feat=16), progress=False)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    from diffusion_utilities.files import atomic_write

    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"old")

    def dies(tmp):
        tmp.write_bytes(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.bin"]


def test_training_lowers_the_loss(tmp_path):
    data = procedural_dataset(300, 0)
    card = train(TrainConfig(epochs=4, batch_size=50, n_sprites=300, checkpoint_every=0), tmp_path, data,
                 ModelConfig(n_feat=16), progress=False)
    losses = card["epoch_losses"]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.85
    assert card["data"]["generator_version"] and card["class_names"][0] == "hero"


def test_bf16_autocast_training_lowers_the_loss_and_is_recorded(tmp_path):
    data = procedural_dataset(300, 0)
    card = train(TrainConfig(epochs=4, batch_size=50, n_sprites=300, checkpoint_every=0, precision="bf16"), tmp_path,
                 data, ModelConfig(n_feat=16), progress=False)
    losses = card["epoch_losses"]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.85
    assert card["training"]["precision"] == "bf16"
    from diffusion_utilities.weights import read_tensors

    tensors, _ = read_tensors(tmp_path / "model.safetensors")
    assert all(v.dtype == torch.float32 for k, v in tensors.items() if v.is_floating_point()), "weights stay fp32"


def test_unknown_precision_is_one_clear_error(tmp_path):
    with pytest.raises(BadInput, match="precision must be one of fp32, bf16"):
        train(TrainConfig(precision="fp16"), tmp_path, procedural_dataset(20, 0), ModelConfig(n_feat=16), progress=False)


def test_a_checkpoint_from_before_a_recipe_field_existed_still_resumes(tmp_path):
    from diffusion_utilities.weights import read_tensors, save_tensors

    data = procedural_dataset(40, 0)
    cfg = TrainConfig(epochs=1, batch_size=10, n_sprites=40, checkpoint_every=0)
    train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False)
    ckpt = tmp_path / "checkpoint.safetensors"
    tensors, card = read_tensors(ckpt)
    del card["training"]["precision"]  # as written by the version before bf16 training
    save_tensors(ckpt, tensors, card)
    resumed = train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False, resume=True)
    assert resumed["steps"] == 4


def test_a_checkpoint_from_a_cuda_graph_run_resumes_without_one(tmp_path):
    # cuda_graph says how the steps ran, not what they compute: a GPU run may go on on a CPU
    from diffusion_utilities.weights import read_tensors, save_tensors

    data = procedural_dataset(40, 0)
    cfg = TrainConfig(epochs=1, batch_size=10, n_sprites=40, checkpoint_every=0)
    first = train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False)
    assert first["training"]["cuda_graph"] is False  # None means "on for CUDA", and the card says which it was
    ckpt = tmp_path / "checkpoint.safetensors"
    tensors, card = read_tensors(ckpt)
    card["training"]["cuda_graph"] = True  # as written by a run on a GPU
    card["state"]["cuda_rng"] = {"seed": 12345, "offset": 4096}
    save_tensors(ckpt, tensors, card)
    resumed = train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False, resume=True)
    assert resumed["steps"] == 4 and resumed["training"]["cuda_graph"] is False
    with pytest.raises(BadInput, match="different training config"):  # what it computes still has to match
        train(TrainConfig(epochs=1, batch_size=10, n_sprites=40, checkpoint_every=0, lr=2e-3), tmp_path, data,
              ModelConfig(n_feat=16), progress=False, resume=True)
    del card["training"]  # a card with no recipe at all is refused in one line too, not with a traceback
    save_tensors(ckpt, tensors, card)
    with pytest.raises(BadInput, match="different training config"):
        train(cfg, tmp_path, data, ModelConfig(n_feat=16), progress=False, resume=True)


def test_cli_scales_the_default_learning_rate_with_the_batch(tmp_path):
    from diffusion_utilities.weights import read_card

    run = _train_cli(tmp_path, "--epochs", "1", "--batch-size", "40")
    assert run.wait(timeout=300) == 0, run.stderr.read()
    assert read_card(tmp_path / "model.safetensors")["training"]["lr"] == pytest.approx(1e-3 * (40 / 100) ** 0.5)


def test_init_from_starts_at_the_given_weights_and_records_them(tmp_path):
    from diffusion_utilities.files import sha256_file
    from diffusion_utilities.weights import load_model

    data = procedural_dataset(100, 0)
    first = train(TrainConfig(epochs=1, batch_size=50, n_sprites=100, checkpoint_every=0), tmp_path / "a", data,
                  ModelConfig(n_feat=16), progress=False)
    start = tmp_path / "a" / "model.safetensors"
    # lr tiny: after one step the weights must still be the starting ones, not a fresh initialisation
    card = train(TrainConfig(epochs=1, batch_size=100, n_sprites=100, lr=1e-9, seed=7, checkpoint_every=0),
                 tmp_path / "b", data, ModelConfig(n_feat=16), progress=False, init_from=start)
    a, _ = load_model(start)
    b, _ = load_model(tmp_path / "b" / "model.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if va.is_floating_point() and "running" not in k:
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=0)
    assert card["init_from"]["sha256"] == sha256_file(start) and card["init_from"]["steps"] == first["steps"]
    assert card["images_seen_total"] == first["images_seen"] + card["images_seen"]


def test_init_from_refuses_weights_of_another_shape(tmp_path):
    data = procedural_dataset(100, 0)
    train(TrainConfig(epochs=1, batch_size=50, n_sprites=100, checkpoint_every=0), tmp_path / "a", data,
          ModelConfig(n_feat=16), progress=False)
    with pytest.raises(BadInput, match="has n_feat=16 and this run n_feat=8"):
        train(TrainConfig(epochs=1, n_sprites=100), tmp_path / "b", data, ModelConfig(n_feat=8), progress=False,
              init_from=tmp_path / "a" / "model.safetensors")


def test_init_from_adapts_to_another_number_of_classes_and_keeps_the_no_context_prediction(tmp_path):
    from diffusion_utilities.weights import load_model

    data = procedural_dataset(100, 0)  # 5 classes
    train(TrainConfig(epochs=1, batch_size=50, n_sprites=100, checkpoint_every=0), tmp_path / "a", data,
          ModelConfig(n_feat=16), progress=False)
    start = tmp_path / "a" / "model.safetensors"
    unlabelled = type(data)(data.sprites, np.zeros((100, 0), np.float32), [], {**data.meta, "source": "images"})
    card = train(TrainConfig(epochs=1, batch_size=100, n_sprites=100, lr=1e-9, checkpoint_every=0), tmp_path / "b",
                 unlabelled, ModelConfig(n_feat=16, n_cfeat=1), progress=False, init_from=start)
    assert card["init_from"]["reinitialised"] == ["contextembed1.model.0.weight", "contextembed2.model.0.weight"]
    a, _ = load_model(start)
    b, _ = load_model(tmp_path / "b" / "model.safetensors")
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "running" in k}, strict=False)  # one step moved them
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    with torch.no_grad():
        torch.testing.assert_close(b(x, t), a(x, t), atol=1e-4, rtol=1e-3)


def test_optimizer_state_resumes_in_the_weights_layout_and_keeps_this_devices_adam(tmp_path):
    # Safetensors stores tensors contiguous and a GPU checkpoint's groups say fused=True; a resume
    # must give the moments the channels_last layout of their weights and keep this optimiser's kind.
    from diffusion_utilities.checkpoints import load_optimizer as _load_optimizer, optimizer_tensors as _optimizer_tensors
    from diffusion_utilities.weights import read_tensors, save_tensors

    torch.manual_seed(0)
    model = ContextUnet(n_feat=16).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3, 16, 16), torch.rand(4)).square().mean().backward()
    opt.step()
    tensors, groups = _optimizer_tensors(opt)
    save_tensors(tmp_path / "opt.safetensors", tensors, {})
    loaded, _ = read_tensors(tmp_path / "opt.safetensors")
    groups = [{**g, "fused": True} for g in groups]  # as written by a run on a GPU
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    _load_optimizer(fresh, loaded, groups)
    assert not fresh.param_groups[0]["fused"]
    conv = model.init_conv.conv1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for name in ("exp_avg", "exp_avg_sq"):
        assert fresh.state[conv][name].stride() == conv.stride()
        torch.testing.assert_close(fresh.state[conv][name], opt.state[conv][name], rtol=0, atol=0)


def test_images_seen_counts_each_epochs_short_last_batch(tmp_path):
    card = train(TrainConfig(epochs=2, batch_size=10, n_sprites=45, checkpoint_every=0), tmp_path,
                 procedural_dataset(45, 0), ModelConfig(n_feat=8), progress=False)
    assert card["steps"] == 10 and card["images_seen"] == card["images_seen_total"] == 90  # not 10 steps × 10
