import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "diffusion_utilities", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_help_lists_the_commands():
    out = cli("--help").stdout
    for command in ("dataset", "train", "sample", "evaluate"):
        assert command in out


@pytest.mark.slow
def test_dataset_train_sample_end_to_end(tmp_path):
    r = cli("dataset", "--n", "100", "--seed", "3", "--out", tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "data" / "sprites.npy").shape == (100, 16, 16, 3)
    assert np.load(tmp_path / "data" / "labels.npy").shape == (100, 5)
    r = cli("train", "--data", tmp_path / "data", "--epochs", "1", "--n-feat", "16", "--out", tmp_path / "run",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "run" / "model.safetensors"
    for sampler, steps in (("ddpm", 20), ("ddim", 5), ("ddpm-no-noise", 10)):
        out = tmp_path / sampler
        r = cli("sample", "--weights", weights, "--sampler", sampler, "--steps", steps, "--n", 6, "--seed", 1,
                "--context", "food", "--out", out)
        assert r.returncode == 0, r.stderr
        assert Image.open(out / "samples.png").size[0] > 16 * 4
        gif = Image.open(out / "samples.gif")
        assert gif.n_frames > 2


@pytest.mark.parametrize("args, message", [
    (["sample", "--sampler", "leapfrog"], "unknown sampler 'leapfrog'"),
    (["sample", "--steps", "0"], "steps must be a whole number from 1 to 500 (T = 500)"),
    (["sample", "--steps", "501"], "steps must be a whole number from 1 to 500 (T = 500)"),
    (["sample", "--guidance", "nan", "--context", "hero"], "guidance must be a finite number ≥ 0"),
    (["sample", "--context", "dragon"], "unknown context 'dragon'"),
    (["sample", "--precision", "fp16"], "precision must be fp32 or bf16"),
    (["sample", "--cuda-graph", "--device", "cpu"], "cuda_graph needs the model on a CUDA device"),
    (["train", "--out", "x", "--cuda-graph", "--device", "cpu"], "--cuda-graph needs a CUDA GPU and this run is on cpu"),
    (["sample", "--weights", "nowhere.safetensors"], "weights file not found: nowhere.safetensors"),
    (["train", "--out", "x", "--data", "no/such/folder"], "dataset folder not found"),
    (["train", "--out", "x", "--schedule", "quadratic"], "unknown schedule 'quadratic'"),
    (["train", "--out", "x", "--epochs", "0"], "expected a number ≥ 1"),
    (["train", "--out", "x", "--seed", "-1"], "argument --seed: expected a number ≥ 0"),
    (["sample", "--seed", "99999999999999999999999"], "expected a seed below 2**63"),
    (["train", "--out", "x", "--lr", "1e300"], "lr must be a number between 0 and 1"),
    (["train", "--out", "x", "--checkpoint-every", "-1"], "argument --checkpoint-every: expected a number ≥ 0"),
    (["train", "--out", "x", "--epochs", "2", "--snapshot-epochs", "0,99"], "snapshot_epochs [0, 99] are outside"),
    (["train", "--out", "x", "--timesteps", "1000000000000"], "timesteps must be a whole number from 1 to 100,000"),
    (["train", "--out", "x", "--device", "meta"], "device meta is not supported"),
    (["train", "--out", "FILE"], "is a file; give a folder"),
    (["sample", "--eta", "1"], "eta is the ddim sampler's noise level; ddpm ignores it"),
    (["sample", "--n", "100000000000"], "sampling 100,000,000,000 sprites at once needs about 11,250,000.0 GB"),
    (["sample", "--n", "5000", "--guidance", "1", "--context", "hero"], "needs about 1.1 GB of memory and 1.0 GB is free"),
    (["evaluate", "--n", "3000", "--rows", "ddim,cfg-w2"], "for each row needs about 0.7 GB of memory and 0.5 GB"),
    (["evaluate", "--rows", ""], "argument --rows: '' has an empty name"),
    (["evaluate", "--n", "3000", "--rows", "real", "--classifier", "nowhere.safetensors"], "classifier weights not found"),  # no sampling, so no memory check first
    (["evaluate", "--rows", "ddpm,,ddim"], "'ddpm,,ddim' has an empty name; give row names, comma-separated"),
    (["sample", "--weights", "W", "--out", "FILE"], "is a file; give a folder"),
    (["demo", "--weights", "typo.safetensors", "--out", "x"], "weights file not found: typo.safetensors"),
    (["dataset", "--out", "FILE"], "is a file; give a folder"),
    (["dataset", "--out", "x", "--n", "1000000"], "making 1,000,000 sprites needs about 2.2 GB of memory and 0.5 GB is free"),
    (["train", "--out", "x", "--n-sprites", "200000"], "holding 200,000 sprites as float32 tensors needs about 0.6 GB"),
    (["dataset"], "the following arguments are required: --out"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, monkeypatch, args, message):
    # In-process through main(), which `python -m diffusion_utilities` exits with (test_wrong_array_shape_exit_2
    # goes through a real process): 30 torch start-ups would cost two minutes of the suite.
    from diffusion_utilities.cli import main

    weights_needed = args[0] == "sample" and "--weights" not in args
    if weights_needed or "W" in args or args[0] == "evaluate":
        from diffusion_utilities import ContextUnet, save_model

        save_model(ContextUnet(3, 16, 5, 16), tmp_path / "W",
                   {"diffusion": {}, "class_names": ["hero", "non-hero", "food", "spell", "side-facing"]})
    if weights_needed:
        args = [*args, "--weights", "W", "--out", "x"]
    if args[0] == "evaluate":
        args = [*args, "--weights", "W"]
    (tmp_path / "FILE").write_text("a file where a folder is expected")
    args = [tmp_path / a if a in ("x", "FILE", "W") else a for a in args]
    if "--n" in args or "--n-sprites" in args:  # the same free memory on every machine
        free = 1e9 if "5000" in args else 5e8
        monkeypatch.setattr("diffusion_utilities.memory.available_memory", lambda: int(free))
    monkeypatch.chdir(ROOT)  # the default --weights and --out are relative to the repository
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and "\n" not in err and "Traceback" not in err
    if "--n" in args or "--n-sprites" in args:  # refused before any work: no --out folder left behind
        assert not (tmp_path / "x").exists()


def test_export_keeps_the_courses_own_pth_until_overwrite_is_passed(tmp_path, capsys):
    from diffusion_utilities import ContextUnet, save_model
    from diffusion_utilities.cli import main

    weights = tmp_path / "W"
    save_model(ContextUnet(3, 16, 5, 16), weights, {"diffusion": {}})
    out = tmp_path / "labs"
    out.mkdir()
    theirs = {"w": torch.ones(1)}
    torch.save(theirs, out / "model_trained.pth")
    args = ["export-course-weights", "--weights", str(weights), "--out", str(out)]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and "model_trained.pth already exists and holds other weights; pass --overwrite" in errors[0]
    assert torch.equal(torch.load(out / "model_trained.pth", weights_only=True)["w"], theirs["w"])
    assert main([*args, "--overwrite"]) == 0
    assert "w" not in torch.load(out / "model_trained.pth", weights_only=True)


def test_wrong_array_shape_exit_2(tmp_path):
    np.save(tmp_path / "sprites.npy", np.zeros((5, 16, 16), np.uint8))
    np.save(tmp_path / "labels.npy", np.zeros((5, 5), np.float32))
    r = cli("train", "--data", tmp_path, "--out", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "(N, H, W, 3)" in r.stderr


def test_sample_animates_the_first_64_sprites_and_grids_them_all(tmp_path, capsys):
    from diffusion_utilities import ContextUnet, save_model
    from diffusion_utilities.cli import main

    save_model(ContextUnet(3, 8, 5, 16), tmp_path / "W", {"diffusion": {}, "class_names": ["a", "b", "c", "d", "e"]})
    code = main(["sample", "--weights", str(tmp_path / "W"), "--n", "72", "--sampler", "ddim", "--steps", "2",
                 "--out", str(tmp_path / "out")])
    assert code == 0 and "animation (the first 64 sprites)" in capsys.readouterr().out
    rows_of = lambda height, scale: (height - 1) // (16 * scale + 1)  # make_grid: 1 px between rows
    assert rows_of(Image.open(tmp_path / "out" / "samples.png").size[1], 4) == 9  # 72 sprites, 8 a row
    gif = Image.open(tmp_path / "out" / "samples.gif")
    assert rows_of(gif.size[1] - 2 - 16, 3) == 8  # 64 sprites: figure margins 2 px above, 16 below
