"""Issue 24's rules, one test (or more) per item: nothing is overwritten unasked, no silent wrong
result, every bad input is one line with exit code 2 before any work, a killed run loses nothing."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_utilities import BadInput, ContextUnet, ModelConfig, TrainConfig, procedural_dataset, save_model, train
from diffusion_utilities.plotting import make_grid, save_gif
from diffusion_utilities.schedule import timesteps_for
from diffusion_utilities.cli import main

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["hero", "non-hero", "food", "spell", "side-facing"]


def _weights(path: Path, **card) -> Path:
    torch.manual_seed(0)
    save_model(ContextUnet(3, 16, 5, 16).eval(), path, {"diffusion": {}, "class_names": NAMES, **card})
    return path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def _one_line(err: str) -> bool:
    return err.startswith("error:") and "\n" not in err and "Traceback" not in err


# 1. one train run per --out at a time, and a killed run leaves no lock behind ------------------------
TINY = ["--n-sprites", "200", "--n-feat", "16", "--batch-size", "10", "--ema-decay", "0.9", "--no-progress"]


def test_a_second_train_into_the_same_out_is_refused_while_the_first_lives(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "diffusion_utilities", "train", "--out", str(out), *TINY,
                              "--epochs", "500", "--checkpoint-every", "2"], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600  # a loaded machine starves it; reading its stderr first would wait for ever
        while not (out / "checkpoint.safetensors").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        if not (out / "checkpoint.safetensors").exists():
            first.kill()
            pytest.fail(f"the first run wrote no checkpoint: {first.communicate()[1].decode()[-2000:]}")
        for extra in ([], ["--resume"], ["--overwrite"]):
            code, _, err = _run(capsys, "train", "--out", out, *TINY, "--epochs", "500", "--checkpoint-every", "2", *extra)
            assert code == 2 and _one_line(err) and "another train run is using" in err, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # the kernel dropped the dead run's lock: the folder is usable at once, and its stale temporary files go
    (out / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"")  # as a kill during a checkpoint write leaves
    code, _, err = _run(capsys, "train", "--out", out, *TINY, "--epochs", "1", "--overwrite")
    assert code == 0, err
    assert not list(out.glob(".*.tmp*"))


def test_stale_temporary_files_of_a_killed_checkpoint_write_are_removed_on_the_next_start(tmp_path):
    from diffusion_utilities.files import atomic_write

    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.safetensors.x1y2.tmp", out / ".model.safetensors.q9.tmp.safetensors"]
    for p in stale:
        p.write_bytes(b"")
    (out / "snapshots").mkdir()
    (out / "snapshots" / ".epoch_01.safetensors.k3.tmp").write_bytes(b"")
    (out / ".notes.txt.tmp").write_text("not ours: kept")
    train(TrainConfig(epochs=1, batch_size=20, n_sprites=20), out, procedural_dataset(20, 0), ModelConfig(n_feat=8),
          progress=False)
    assert not any(p.exists() for p in stale) and not (out / "snapshots" / ".epoch_01.safetensors.k3.tmp").exists()
    assert (out / ".notes.txt.tmp").exists()
    # atomic_write's own temporary file matches what is cleaned
    seen = []
    atomic_write(out / "a.png", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(".a.png.") and ".tmp" in seen[0]


# 2. train-classifier never replaces the shipped classifier unasked ---------------------------------
def test_train_classifier_keeps_an_existing_classifier_unless_overwrite(tmp_path, capsys, monkeypatch):
    shipped = ROOT / "weights" / "sprite_classifier.safetensors"
    (tmp_path / "weights").mkdir()
    target = tmp_path / "weights" / "sprite_classifier.safetensors"
    target.write_bytes(shipped.read_bytes())
    monkeypatch.chdir(tmp_path)  # the default --out is relative: weights/sprite_classifier.safetensors
    code, _, err = _run(capsys, "train-classifier", "--n", "100", "--epochs", "1")
    assert code == 2 and _one_line(err) and "already exists; pass --overwrite" in err, err
    assert target.read_bytes() == shipped.read_bytes()
    code, _, err = _run(capsys, "train-classifier", "--n", "100", "--epochs", "1", "--overwrite")
    assert code == 0, err
    assert target.read_bytes() != shipped.read_bytes()


# 3. dataset --out never replaces a dataset, or the course's own files, unasked ---------------------
def test_dataset_keeps_the_courses_download_and_earlier_datasets_unless_overwrite(tmp_path, capsys):
    course = tmp_path / "course"
    course.mkdir()
    theirs = np.full((3, 16, 16, 3), 7, np.uint8)
    np.save(course / "sprites_1788_16x16.npy", theirs)
    code, _, err = _run(capsys, "dataset", "--n", "20", "--course-names", "--out", course)
    assert code == 2 and _one_line(err) and "sprites_1788_16x16.npy already exists" in err and "--overwrite" in err
    assert np.array_equal(np.load(course / "sprites_1788_16x16.npy"), theirs)

    ours = tmp_path / "ours"
    assert _run(capsys, "dataset", "--n", "30", "--out", ours)[0] == 0
    code, _, err = _run(capsys, "dataset", "--n", "20", "--out", ours, "--sheet")
    assert code == 2 and _one_line(err) and "--overwrite" in err
    assert len(np.load(ours / "sprites.npy")) == 30 and not (ours / "sheet.png").exists()
    assert _run(capsys, "dataset", "--n", "20", "--out", ours, "--overwrite")[0] == 0
    assert len(np.load(ours / "sprites.npy")) == 20


def test_save_dataset_refuses_to_replace_unless_overwrite(tmp_path):
    from diffusion_utilities import save_dataset

    save_dataset(tmp_path, procedural_dataset(10, 0))
    with pytest.raises(BadInput, match="already exists.*overwrite"):
        save_dataset(tmp_path, procedural_dataset(12, 1))
    save_dataset(tmp_path, procedural_dataset(12, 1), overwrite=True)
    assert len(np.load(tmp_path / "sprites.npy")) == 12


# 4. outputs are written atomically and never through a link ----------------------------------------
def test_sample_replaces_a_symlink_at_its_outputs_instead_of_writing_through_it(tmp_path, capsys):
    weights = _weights(tmp_path / "W.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    victims = {}
    for name in ("samples.png", "samples.gif"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        (out / name).symlink_to(victims[name])
    code, _, err = _run(capsys, "sample", "--weights", weights, "--n", "2", "--sampler", "ddim", "--steps", "2",
                        "--out", out)
    assert code == 2 and "samples.png exists" in err, err  # a link there is an earlier output too: kept unasked
    code, _, err = _run(capsys, "sample", "--weights", weights, "--n", "2", "--sampler", "ddim", "--steps", "2",
                        "--out", out, "--overwrite")
    assert code == 0, err
    for name, victim in victims.items():
        assert victim.read_text() == "precious"
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert Image.open(out / "samples.png").format == "PNG" and Image.open(out / "samples.gif").format == "GIF"


def test_pictures_and_datasets_are_written_atomically(tmp_path, monkeypatch):
    from diffusion_utilities import save_dataset, save_grid

    (tmp_path / "g.png").write_bytes(b"old")

    def dies(self, fp, *a, **k):
        Path(fp).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_grid(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == b"old" and os.listdir(tmp_path) == ["g.png"]
    monkeypatch.undo()

    folder = tmp_path / "ds"
    save_dataset(folder, procedural_dataset(10, 0))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_save = np.save

    def dies_on_labels(f, arr, *a, **k):
        real_save(f, arr, *a, **k)
        if arr.dtype == np.float32:  # the labels, after the sprites were written
            raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", dies_on_labels)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(folder, procedural_dataset(12, 1), overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == sorted(before)  # no temporary files left
    # each file is whole: the old one or the new one, and sprites.npy (replaced first) is readable
    assert len(np.load(folder / "labels.npy")) == 10 and len(np.load(folder / "sprites.npy")) in (10, 12)


# 5. 16-bit PNGs are scaled, not clipped ----------------------------------------------------------
def _grey16(path: Path, value: int, size: int = 16) -> None:
    a = np.full((size, size), value, np.uint16)
    a[:, ::2] = 65535  # every other column: two colours in every tile of a sheet
    Image.fromarray(a).save(path)


def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path):
    from diffusion_utilities.importing import from_images, from_sheet

    (tmp_path / "imgs").mkdir()
    _grey16(tmp_path / "imgs" / "g.png", 32896)  # 32896 / 257 = 128
    assert Image.open(tmp_path / "imgs" / "g.png").mode.startswith("I")
    data, _ = from_images(tmp_path / "imgs")
    assert data.sprites[0, 0, 1].tolist() == [128, 128, 128] and data.sprites[0, 0, 0].tolist() == [255, 255, 255]
    _grey16(tmp_path / "sheet.png", 0, size=32)
    sheet, _ = from_sheet(tmp_path / "sheet.png", (16, 16))
    assert len(sheet) == 4 and sheet.sprites[-1, -1, 1].tolist() == [0, 0, 0]
    assert sheet.sprites[-1, -1, 0].tolist() == [255, 255, 255]


# 6. weights that hold NaN, Inf or integers are refused at load ------------------------------------
@pytest.mark.parametrize("damage, message", [
    (lambda s: s["out.3.weight"].view(-1).__setitem__(0, float("nan")), r"out\.3\.weight holds NaN or infinite"),
    (lambda s: s["up0.0.bias"].fill_(float("inf")), r"up0\.0\.bias holds NaN or infinite"),
    (lambda s: s.__setitem__("out.3.weight", s["out.3.weight"].to(torch.int32)), r"out\.3\.weight is int32"),
])
def test_weights_with_nan_inf_or_integer_tensors_are_refused(tmp_path, capsys, damage, message):
    from diffusion_utilities.weights import load_model, read_tensors, save_tensors

    path = _weights(tmp_path / "W.safetensors")
    tensors, card = read_tensors(path)
    damage(tensors)
    save_tensors(path, tensors, card)
    path.with_suffix(".json").unlink()
    with pytest.raises(BadInput, match=message):
        load_model(path)
    for command in (["sample", "--out", tmp_path / "o"], ["export-course-weights", "--out", tmp_path / "x"],
                    ["bench", "--repeats", "1"]):
        code, _, err = _run(capsys, command[0], "--weights", path, *command[1:])
        assert code == 2 and _one_line(err), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


def test_a_classifier_with_nan_weights_is_refused(tmp_path):
    from diffusion_utilities.evaluation import load_classifier
    from diffusion_utilities.weights import read_tensors, save_tensors

    tensors, card = read_tensors(ROOT / "weights" / "sprite_classifier.safetensors")
    tensors["head.bias"] = torch.full_like(tensors["head.bias"], float("nan"))
    save_tensors(tmp_path / "c.safetensors", tensors, card)
    with pytest.raises(BadInput, match="head.bias holds NaN"):
        load_classifier(tmp_path / "c.safetensors")


# 7, 18, 21. a tampered checkpoint is refused up front, in one line ---------------------------------
def _tampered(tmp_path, monkeypatch, tamper):
    from diffusion_utilities import training
    from diffusion_utilities.weights import read_tensors, save_tensors

    data, cfg = procedural_dataset(40, 0), TrainConfig(epochs=2, batch_size=20, n_sprites=40, checkpoint_every=1)
    train(TrainConfig(epochs=1, batch_size=20, n_sprites=40, checkpoint_every=1), tmp_path, data, ModelConfig(n_feat=8),
          progress=False)
    ckpt = tmp_path / "checkpoint.safetensors"
    tensors, card = read_tensors(ckpt)
    card["training"]["epochs"] = 2  # so that resuming has steps left to run
    tamper(tensors, card["state"])
    save_tensors(ckpt, tensors, card)
    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained before the checkpoint was checked"))
    return lambda: train(cfg, tmp_path, data, ModelConfig(n_feat=8), progress=False, resume=True)


def _drop(tensors, prefix):
    for k in [k for k in tensors if k.startswith(prefix)]:
        del tensors[k]


@pytest.mark.parametrize("tamper, message", [
    (lambda t, s: _drop(t, "optim."), "has no optimizer state"),
    (lambda t, s: s.__setitem__("step", 10**12), "step 1000000000000 is outside"),
    (lambda t, s: s.__setitem__("step", "2"), "step '2' is outside"),
    (lambda t, s: s.pop("step"), "has no step"),
    (lambda t, s: s.pop("param_groups"), "param_groups"),
    (lambda t, s: s.__setitem__("param_groups", [{"lr": 1}]), "param_groups"),
    (lambda t, s: t.__setitem__("optim.0.exp_avg", torch.zeros(3)), r"optim\.0\.exp_avg is \(3,\)"),
    (lambda t, s: t.pop("ema.out.3.bias"), "ema.out.3.bias"),
    (lambda t, s: t.pop("model.out.3.bias"), "model.out.3.bias"),
    (lambda t, s: s.__setitem__("losses", "low"), "losses"),
    (lambda t, s: s.__setitem__("losses", [0.1, "x"]), "losses"),
    (lambda t, s: s.__setitem__("wall_time_s", None), "wall_time_s"),
    (lambda t, s: t["model.out.3.weight"].fill_(float("nan")), r"holds NaN or infinite values"),
    (lambda t, s: t["optim.0.exp_avg_sq"].fill_(float("inf")), r"holds NaN or infinite values"),
])
def test_a_tampered_checkpoint_is_refused_before_training(tmp_path, monkeypatch, tamper, message):
    resume = _tampered(tmp_path, monkeypatch, tamper)
    with pytest.raises(BadInput, match=message) as e:
        resume()
    assert "\n" not in str(e.value) and "last good" not in str(e.value) and "--overwrite" in str(e.value)


def test_nan_init_from_weights_are_refused_not_blamed_on_the_learning_rate(tmp_path, capsys):
    from diffusion_utilities.weights import read_tensors, save_tensors

    start = _weights(tmp_path / "start.safetensors")
    tensors, card = read_tensors(start)
    tensors["out.3.bias"].fill_(float("nan"))
    save_tensors(start, tensors, card)
    start.with_suffix(".json").unlink()
    code, _, err = _run(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1", "--init-from", start)
    assert code == 2 and _one_line(err) and "start.safetensors" in err and "NaN" in err and "--lr" not in err, err
    assert not (tmp_path / "run").exists()


# 8. labels must be one-hot rows (or mixes of them) ------------------------------------------------
@pytest.mark.parametrize("labels, message", [
    (np.arange(10, dtype=np.float32)[:, None] % 5, "class indices"),
    (np.eye(5, dtype=np.float32)[np.arange(10) % 5] * 1000, "greater than 1"),
    (np.ones((10, 5), np.float32), "sum to more than 1"),
])
def test_labels_that_are_not_one_hot_are_refused(labels, message):
    from diffusion_utilities.data import check_sprite_arrays

    with pytest.raises(BadInput, match=message):
        check_sprite_arrays(np.zeros((10, 16, 16, 3), np.uint8), labels)
    check_sprite_arrays(np.zeros((10, 16, 16, 3), np.uint8), np.full((10, 5), 0.2, np.float32))  # an even mix is fine


# 9. an earlier dataset inside the image tree is not imported --------------------------------------
def test_an_earlier_datasets_folder_inside_the_images_is_skipped_and_listed(tmp_path, capsys):
    images = tmp_path / "images"
    (images / "slimes").mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 200, 0)).save(images / "slimes" / "a.png")
    assert _run(capsys, "dataset", "--from-images", images, "--out", images / "ds1", "--sheet")[0] == 0
    code, out, err = _run(capsys, "dataset", "--from-images", images, "--out", tmp_path / "ds2")
    assert code == 0, err
    card = json.loads((tmp_path / "ds2" / "dataset.json").read_text())
    assert card["class_names"] == ["slimes"] and card["count"] == 1
    assert "ds1" in err + out  # said, not silent


# 10, 22. cards and dataset.json: bounded reads, no blocking on a FIFO, a folder is bad input ------------
def test_a_huge_dataset_json_is_refused_without_reading_it(tmp_path, monkeypatch):
    from diffusion_utilities import files, load_dataset, save_dataset

    save_dataset(tmp_path, procedural_dataset(10, 0))
    with open(tmp_path / "dataset.json", "a") as f:
        f.write(" " * (files.MAX_JSON_BYTES + 1))
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("read the whole file"))
    monkeypatch.setattr(Path, "read_bytes", lambda *a, **k: pytest.fail("read the whole file"))
    with pytest.raises(BadInput, match="dataset.json is larger than"):
        load_dataset(tmp_path)


def _does_not_block(fn, fifo: Path):
    result = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # release it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"blocked on the FIFO {fifo}")
    return result.get("error")


def test_a_fifo_in_place_of_a_card_or_dataset_file_does_not_block(tmp_path):
    from diffusion_utilities import load_dataset, load_model, save_dataset

    save_dataset(tmp_path / "ds", procedural_dataset(10, 0))
    (tmp_path / "ds" / "dataset.json").unlink()
    os.mkfifo(tmp_path / "ds" / "dataset.json")
    error = _does_not_block(lambda: load_dataset(tmp_path / "ds"), tmp_path / "ds" / "dataset.json")
    assert isinstance(error, BadInput) and "not a regular file" in str(error)

    weights = _weights(tmp_path / "W.safetensors")
    weights.with_suffix(".json").unlink()
    os.mkfifo(weights.with_suffix(".json"))
    error = _does_not_block(lambda: load_model(weights), weights.with_suffix(".json"))
    assert isinstance(error, BadInput) and "not a regular file" in str(error)

    (tmp_path / "ds2").mkdir()
    os.mkfifo(tmp_path / "ds2" / "sprites.npy")
    error = _does_not_block(lambda: load_dataset(tmp_path / "ds2"), tmp_path / "ds2" / "sprites.npy")
    assert isinstance(error, BadInput) and "not a regular file" in str(error)


def test_a_folder_in_place_of_the_card_is_exit_2(tmp_path, capsys):
    weights = _weights(tmp_path / "W.safetensors")
    weights.with_suffix(".json").unlink()
    weights.with_suffix(".json").mkdir()
    code, _, err = _run(capsys, "sample", "--weights", weights, "--out", tmp_path / "o", "--steps", "2")
    assert code == 2 and _one_line(err) and "W.json" in err, err


def test_a_count_that_is_not_a_number_is_named_as_such(tmp_path):
    from diffusion_utilities import load_dataset, save_dataset

    save_dataset(tmp_path, procedural_dataset(10, 0))
    card = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**card, "count": "10"}))
    with pytest.raises(BadInput, match=r"\"count\" '10' is not a whole number"):
        load_dataset(tmp_path)


# 11. dataset --size is bounded; running out of memory is not "unreadable" ------------------------
def test_dataset_size_is_bounded_and_memory_errors_are_not_unreadable_files(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import importing

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(images / "a.png")
    code, _, err = _run(capsys, "dataset", "--from-images", images, "--out", tmp_path / "ds", "--size", "20000")
    assert code == 2 and _one_line(err) and "--size" in err, err
    assert not (tmp_path / "ds").exists()

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(importing, "_fit", no_memory)
    code, out, err = _run(capsys, "dataset", "--from-images", images, "--out", tmp_path / "ds")
    assert code == 2 and "out of memory" in err and "unreadable" not in err + out and "skipped" not in err + out


# 12, 13. superscript digits and symlink loops -----------------------------------------------------
def test_sample_context_of_superscript_digits_is_one_line(tmp_path, capsys):
    weights = _weights(tmp_path / "W.safetensors")
    code, _, err = _run(capsys, "sample", "--weights", weights, "--out", tmp_path / "o", "--context", "²")
    assert code == 2 and _one_line(err) and "unknown context '²'" in err, err
    assert not (tmp_path / "o").exists()


def test_a_symlink_loop_as_the_image_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, _, err = _run(capsys, "dataset", "--from-images", tmp_path / "loop", "--out", tmp_path / "ds")
    assert code == 2 and _one_line(err) and "loop" in err, err
    code, _, err = _run(capsys, "dataset", "--n", "10", "--out", tmp_path / "loop")
    assert code == 2 and _one_line(err), err


# 14. a full disk while writing safetensors is one line, and leaves no temporary file ------------------
def test_a_full_disk_while_writing_weights_is_one_line(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    from diffusion_utilities import weights

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(weights, "save_file", full)
    code, _, err = _run(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1")
    assert code == 1 and _one_line(err) and "the disk is full writing" in err and ".safetensors" in err, err
    assert not list((tmp_path / "run").glob(".*tmp*"))


# 15. names that are not UTF-8, printed to a strict UTF-8 stdout --------------------------------------
def test_non_utf8_file_and_class_names_with_a_strict_utf8_stdout(tmp_path):
    images = os.fsencode(tmp_path / "images")
    os.makedirs(os.path.join(images, b"cl\xe9"))
    Image.new("RGB", (16, 16), (0, 200, 0)).save(os.fsdecode(os.path.join(images, b"cl\xe9", b"\xff.png")))
    with open(os.path.join(images, b"cl\xe9", b"bad\xfd.png"), "wb") as f:
        f.write(b"not a png")
    r = subprocess.run([sys.executable, "-m", "diffusion_utilities", "dataset", "--from-images", os.fsdecode(images),
                        "--out", str(tmp_path / "ds")], cwd=ROOT, capture_output=True,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=300)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    assert b"skipped" in r.stderr and b"wrote 1 sprites" in r.stdout


# 16. NaN samples are one line, not a LinAlgError ---------------------------------------------------
class _NaNModel(ContextUnet):
    def forward(self, x, t, c=None):
        return torch.full_like(x, float("nan"))


def test_evaluate_on_nan_samples_is_one_line():
    from diffusion_utilities.evaluation import SpriteClassifier, evaluate, frechet_distance

    card = {"diffusion": {}, "data": {"source": "procedural", "generator_version": _generator(), "count": 10, "seed": 0}}
    with pytest.raises(BadInput, match="row 'ddim'.*NaN"):
        evaluate(_NaNModel(3, 8, 5, 16).eval(), card, SpriteClassifier().eval(), n=4, rows=("ddim",), log=lambda *_: None)
    with pytest.raises(BadInput, match="NaN"):
        frechet_distance(np.full((10, 4), np.nan), np.zeros((10, 4)))


def _generator():
    from diffusion_utilities.sprites import GENERATOR_VERSION

    return GENERATOR_VERSION


def test_sample_refuses_to_write_nan_sprites(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import weights as w

    real = w.load_model
    monkeypatch.setattr(w, "load_model", lambda *a, **k: (_NaNModel(3, 16, 5, 16).eval(), real(*a, **k)[1]))
    code, _, err = _run(capsys, "sample", "--weights", _weights(tmp_path / "W.safetensors"), "--steps", "2",
                        "--out", tmp_path / "o")
    assert code == 2 and _one_line(err.splitlines()[-1]) and "NaN" in err, err  # after the progress bar
    assert not list((tmp_path / "o").glob("*.png"))


# 17. class_names must be a list of strings ----------------------------------------------------------
@pytest.mark.parametrize("names", [5, "abcde", [1, 2, 3, 4, 5], None])
def test_class_names_that_are_not_a_list_of_strings_are_refused(tmp_path, names):
    from diffusion_utilities import load_dataset, load_model, save_dataset

    path = _weights(tmp_path / "W.safetensors", class_names=names)
    if names is None:  # absent or null: an unconditional model's card
        assert load_model(path)[1]["class_names"] is None
        return
    with pytest.raises(BadInput, match="class_names"):
        load_model(path)
    save_dataset(tmp_path / "ds", procedural_dataset(10, 0))
    card = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({**card, "class_names": names}))
    with pytest.raises(BadInput, match="class_names"):
        load_dataset(tmp_path / "ds")


# 19. the library guards what the CLI guards ---------------------------------------------------------
def test_sample_api_checks_memory_and_takes_numpy_integers(monkeypatch):
    from diffusion_utilities import NoiseSchedule, sample

    model, schedule = ContextUnet(3, 8, 5, 16).eval(), NoiseSchedule.linear(20, 1e-4, 0.02)
    monkeypatch.setattr("diffusion_utilities.memory.available_memory", lambda: int(1e9))
    with pytest.raises(BadInput, match="needs about .* of memory"):
        sample(model, schedule, 10**9, sampler="ddim", steps=2)
    out = sample(model, schedule, np.int64(3), sampler="ddim", steps=np.int32(2))
    assert out.x.shape == (3, 3, 16, 16)


def test_a_numpy_array_as_the_models_input_is_one_line():
    model = ContextUnet(3, 8, 5, 16).eval()
    with pytest.raises(BadInput, match="x must be a torch tensor"):
        model(np.zeros((1, 3, 16, 16), np.float32), torch.zeros(1))
    with pytest.raises(BadInput, match="t must be a torch tensor"):
        model(torch.zeros(1, 3, 16, 16), np.zeros(1))
    with pytest.raises(BadInput, match="context must be a torch tensor"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1), np.zeros((1, 5)))


# 20. the out-of-memory hint names the command's own options --------------------------------------------
@pytest.mark.parametrize("args, target, names, not_names", [
    (["bench"], "diffusion_utilities.cli.run_bench", ["--large-batch"], ["--n ", "--n,", "--batch-size"]),
    (["train", "--out", "x", "--n-feat", "1000000"], "diffusion_utilities.cli.train", ["--n-feat", "--batch-size"],
     ["--n ", "--n,"]),
    (["sample", "--out", "x"], "diffusion_utilities.cli.sample", ["--n"], ["--batch-size", "--n-sprites"]),
])
def test_out_of_memory_names_only_the_commands_own_options(tmp_path, capsys, monkeypatch, args, target, names, not_names):
    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(target, oom)
    weights = _weights(tmp_path / "W.safetensors")
    args = [tmp_path / "x" if a == "x" else a for a in args]
    if args[0] in ("bench", "sample"):
        args += ["--weights", weights]
    code, _, err = _run(capsys, *args)
    assert code == 2 and "out of memory" in err, err
    assert all(n in err for n in names) and not any(n in err for n in not_names), err


# 22. a warning is not printed before a one-line refusal -------------------------------------------------
def test_export_refusal_is_the_only_line(tmp_path, capsys):
    path = tmp_path / "W.safetensors"
    save_model(ContextUnet(3, 16, 5, 16), path, {"diffusion": {"timesteps": 50}})  # the labs use 500: a warning
    (tmp_path / "labs").mkdir()
    torch.save({"w": torch.ones(1)}, tmp_path / "labs" / "model_trained.pth")
    code, _, err = _run(capsys, "export-course-weights", "--weights", path, "--out", tmp_path / "labs")
    assert code == 2 and _one_line(err), err
    code, _, err = _run(capsys, "export-course-weights", "--weights", path, "--out", tmp_path / "labs", "--overwrite")
    assert code == 0 and err.startswith("warning:")


# 23. refusals leave no empty --out folder; --update-card checks the folder can be written ---------------
@pytest.mark.parametrize("args", [
    ["sample", "--steps", "0"], ["sample", "--steps", "9999"], ["sample", "--context", "dragon"],
    ["sample", "--guidance", "-1", "--context", "hero"], ["sample", "--eta", "1"],
    ["train", "--n-feat", "12"], ["train", "--init-from", "missing.safetensors"],
    ["export-course-weights", "--weights", "missing.safetensors"], ["demo", "--weights", "missing.safetensors"],
])
def test_refusals_leave_no_empty_out_folder(tmp_path, capsys, args):
    if args[0] == "sample":
        args = [*args, "--weights", _weights(tmp_path / "W.safetensors")]
    if args[0] == "train":
        args = ["train", *TINY, "--epochs", "1", *args[1:]]  # after TINY: its --n-feat is not the one that counts
    out = tmp_path / "new" / "out"
    code, _, err = _run(capsys, *args, "--out", out)
    assert code == 2 and _one_line(err), err
    assert not (tmp_path / "new").exists()


def test_update_card_on_a_folder_that_cannot_be_written_fails_before_the_work(tmp_path, monkeypatch, capsys):
    from diffusion_utilities import evaluation

    weights = _weights(tmp_path / "W.safetensors", data={"source": "procedural", "generator_version": _generator(),
                                                          "count": 10, "seed": 0})
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the folder"))
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == tmp_path else access(p, mode, **k))
    code, _, err = _run(capsys, "evaluate", "--weights", weights, "--update-card", "--rows", "real", "--n", "4")
    assert code == 2 and _one_line(err) and "cannot write" in err and "--update-card" in err, err


# 24. other image formats are read, or listed as skipped (the SHA-256 half of the item is README text) ------
def test_bmp_and_webp_are_imported_and_other_image_formats_are_listed(tmp_path):
    from diffusion_utilities.importing import from_images

    for name in ("a.bmp", "b.webp", "c.png"):
        Image.new("RGB", (16, 16), (0, 200, 0)).save(tmp_path / name)
    Image.new("RGB", (16, 16)).save(tmp_path / "d.tif")
    (tmp_path / "notes.txt").write_text("not an image")
    data, report = from_images(tmp_path)
    assert sorted(report.used) == ["a.bmp", "b.webp", "c.png"]
    assert [name for name, _ in report.skipped] == ["d.tif"]


def test_the_labs_plot_helpers_replace_a_link_instead_of_writing_through_it(tmp_path):
    from diffusion_utilities.course import plot_grid, plot_sample

    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("run_image_w0.png", "anim_w0.gif"):
        (tmp_path / name).symlink_to(victim)
    plot_grid(torch.rand(4, 3, 16, 16) * 2 - 1, 4, 2, tmp_path, 0)
    plot_sample(np.random.rand(2, 4, 3, 16, 16), 4, 2, tmp_path, "anim", 0, save=True)
    assert victim.read_text() == "precious"
    assert Image.open(tmp_path / "run_image_w0.png").format == "PNG" and Image.open(tmp_path / "anim_w0.gif").format == "GIF"


def test_evaluate_on_a_card_without_diffusion_or_data_entries_is_one_line(tmp_path, capsys):
    path = tmp_path / "W.safetensors"
    save_model(ContextUnet(3, 16, 5, 16), path, {"class_names": NAMES, "data": ["not", "a", "dict"]})
    code, _, err = _run(capsys, "evaluate", "--weights", path, "--rows", "real", "--n", "4")
    assert code == 2 and _one_line(err) and "data must be an object" in err, err  # read as the card is read
    save_model(ContextUnet(3, 16, 5, 16), path, {"class_names": NAMES})
    code, _, err = _run(capsys, "evaluate", "--weights", path, "--rows", "real", "--n", "4")
    assert code == 2 and _one_line(err) and "trained on procedural sprites" in err, err


def test_numpy_numbers_are_taken_where_python_ones_are(tmp_path):
    from diffusion_utilities import NoiseSchedule, sample
    from diffusion_utilities.weights import read_card

    cfg = TrainConfig(epochs=np.int64(1), batch_size=np.int32(20), n_sprites=20, lr=np.float32(1e-3))
    card = train(cfg, tmp_path, procedural_dataset(20, 0), ModelConfig(n_feat=np.int64(8)), progress=False)
    assert card["steps"] == 1 and read_card(tmp_path / "model.safetensors")["model"]["n_feat"] == 8
    model = ContextUnet(3, np.int64(8), 5, 16).eval()
    out = sample(model, NoiseSchedule.linear(20, 1e-4, 0.02), 2, sampler="ddim", steps=2,
                 context=torch.eye(5)[:2], guidance=np.float32(1.0), eta=np.float32(0.5))
    assert out.x.shape == (2, 3, 16, 16)


def test_a_npy_whose_header_promises_more_than_the_file_holds_is_refused_before_loading(tmp_path):
    from numpy.lib import format as npy

    from diffusion_utilities import load_dataset

    with open(tmp_path / "sprites.npy", "wb") as f:
        npy.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 16, 16, 3)})
        f.write(bytes(100))  # np.load would first ask for 715 GiB: "out of memory", not a damaged file
    with pytest.raises(BadInput, match=r"sprites\.npy is truncated: its header promises"):
        load_dataset(tmp_path)


# Issue 33 ------------------------------------------------------------------------------------------------
# 4. the library guards what the CLI guards
def _trained_looking(model: ContextUnet) -> ContextUnet:
    """BatchNorm running statistics far from a fresh model's (0, 1), as a trained model's are."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_sample_on_a_train_mode_model_uses_its_running_statistics_and_leaves_it_unchanged(fast):
    from diffusion_utilities import NoiseSchedule, sample

    torch.manual_seed(0)
    model, schedule = _trained_looking(ContextUnet(3, 8, 5, 16)).eval(), NoiseSchedule.linear(20, 1e-4, 0.02)
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    expected = sample(model, schedule, sampler="ddim", steps=3, x_T=x_T, fast=fast).x
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    got = sample(model, schedule, sampler="ddim", steps=3, x_T=x_T, fast=fast).x
    assert model.training and all(m.training for m in model.modules())  # left as the caller had it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shift", [float("nan"), float("inf"), 0.0, -1.0, 1e-17, 1e300, "2", True, None])
def test_a_flow_shift_that_is_not_a_sensible_number_is_one_line(shift):
    from diffusion_utilities.schedule import FlowSchedule

    with pytest.raises(BadInput, match="shift must be a number from"):
        FlowSchedule(shift=shift)


def test_sample_shift_1e300_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "F.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 8, 5, 16).eval(), path, {"diffusion": {"objective": "flow"}, "class_names": NAMES})
    for shift in ("1e300", "nan", "0"):
        code, _, err = _run(capsys, "sample", "--weights", path, "--shift", shift, "--n", "2", "--out", tmp_path / "o")
        assert code == 2 and _one_line(err) and "shift must be a number from" in err, err
    assert not (tmp_path / "o").exists()


def test_numpy_numbers_are_taken_by_the_schedule_and_sample():
    from diffusion_utilities import DiffusionConfig, NoiseSchedule, make_schedule, sample
    from diffusion_utilities.schedule import FlowSchedule

    config = DiffusionConfig(timesteps=np.int64(50), beta1=np.float32(1e-4), beta2=np.float64(0.02))
    schedule = make_schedule(config)
    assert schedule.T == 50 and json.dumps(vars(config))  # the config goes into a JSON card
    assert type(config.timesteps) is int and type(config.beta1) is float
    assert FlowSchedule(shift=np.float32(2.0)).shift == 2.0
    model = ContextUnet(3, 8, 5, 16).eval()
    out = sample(model, NoiseSchedule.linear(20, 1e-4, 0.02), 2, sampler="ddim", steps=2, context=torch.eye(5)[:2],
                 guidance=np.float32(1.0), guidance_rescale=np.float32(0.7))
    assert out.x.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("field, value", [("timesteps", 50.0), ("timesteps", "50"), ("beta1", "0.0001"),
                                          ("beta1", None), ("beta2", float("nan")), ("beta1", True)])
def test_a_diffusion_config_of_the_wrong_type_is_one_line(field, value):
    from diffusion_utilities import DiffusionConfig, make_schedule

    with pytest.raises(BadInput, match=field):
        make_schedule(DiffusionConfig(**{field: value}))


# 2. a card is data: each value checked, named with its file, before anything is built from it
@pytest.mark.parametrize("card, field", [
    ({"diffusion": {"beta1": "0.0001"}}, "beta1"), ({"diffusion": {"beta1": None}}, "beta1"),
    ({"diffusion": {"timesteps": 5.5}}, "timesteps"), ({"diffusion": {"shift": 2}}, "shift"),
    ({"data": {"source": "procedural", "generator_version": 1, "seed": 0}}, "data.count"),
    ({"data": {"source": "procedural", "generator_version": 1, "seed": 0, "count": 0}}, "data.count"),
    ({"data": {"source": "procedural", "generator_version": 1, "seed": "x", "count": 10}}, "data.seed"),
])
def test_a_card_value_of_the_wrong_type_is_one_line_naming_the_field_and_the_file(tmp_path, capsys, card, field):
    path = _weights(tmp_path / "W.safetensors", **card)
    for command in (["sample", "--n", "2", "--steps", "2", "--out", tmp_path / "o"],
                    ["evaluate", "--rows", "real", "--n", "4"]):
        code, _, err = _run(capsys, *command, "--weights", path)
        assert code == 2 and _one_line(err) and field in err and "W.safetensors" in err, err
    assert not (tmp_path / "o").exists()


def test_a_card_promising_a_huge_model_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from diffusion_utilities import load_model, model as model_module

    path = _weights(tmp_path / "W.safetensors")
    card = json.loads((tmp_path / "W.json").read_text())
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={"card": json.dumps({**card, "model": {**card["model"], "n_feat": 4096}})})
    (tmp_path / "W.json").unlink()
    monkeypatch.setattr(model_module.ContextUnet, "__init__", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(BadInput, match="n_feat=16"):
        load_model(path)


def test_an_init_from_card_with_images_seen_total_not_a_number_is_refused_before_training(tmp_path, capsys):
    path = _weights(tmp_path / "W.safetensors", images_seen_total="lots")
    code, _, err = _run(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1", "--init-from", path)
    assert code == 2 and _one_line(err) and "images_seen_total" in err and "W.safetensors" in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_an_uppercase_sha256_in_the_card_matches(tmp_path):
    from diffusion_utilities import load_model

    path = _weights(tmp_path / "W.safetensors")
    card = json.loads((tmp_path / "W.json").read_text())
    (tmp_path / "W.json").write_text(json.dumps({**card, "sha256": card["sha256"].upper()}))
    load_model(path)
    (tmp_path / "W.json").write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(BadInput, match="damaged or was replaced"):
        load_model(path)


# 5. a message names the real cause, once
@pytest.mark.parametrize("rank", ["1", "abc", " 2"])
def test_a_stray_rank_variable_does_not_silence_the_message(tmp_path, capsys, monkeypatch, rank):
    monkeypatch.setenv("RANK", rank)
    code, _, err = _run(capsys, "sample", "--weights", _weights(tmp_path / "W.safetensors"), "--steps", "0",
                        "--out", tmp_path / "o")
    assert code == 2 and _one_line(err) and "steps must be" in err, err


def test_under_torchrun_only_rank_0_prints_the_message(tmp_path, capsys, monkeypatch):
    weights = _weights(tmp_path / "W.safetensors")
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        code, _, err = _run(capsys, "sample", "--weights", weights, "--steps", "0", "--out", tmp_path / "o")
        assert code == 2 and bool(err) == printed, err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("diffusion_utilities.cli.sample", interrupted)
    code, _, err = _run(capsys, "sample", "--weights", _weights(tmp_path / "W.safetensors"), "--steps", "2",
                        "--out", tmp_path / "new" / "o")
    assert code == 130 and "\n" not in err and "Traceback" not in err and "interrupted" in err, err
    assert not (tmp_path / "new").exists()


def test_the_shipped_weights_are_found_from_another_working_folder(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import cli

    monkeypatch.chdir(tmp_path)  # e.g. notebooks/, where a JupyterLab terminal opens
    for default in (cli.SHIPPED, cli.COURSE, cli.CLASSIFIER):
        assert not default.is_absolute() and (ROOT / default).exists()
    args = cli.build_parser().parse_args(["sample"])
    assert cli.weights_path(args.weights) == ROOT / cli.SHIPPED
    code, out, err = _run(capsys, "sample", "--n", "2", "--steps", "2", "--sampler", "ddim", "--no-gif", "--out", "o")
    assert code == 0 and (tmp_path / "o" / "samples.png").exists(), err
    (tmp_path / "weights").mkdir()  # a weights folder of one's own, here, comes first
    _weights(tmp_path / cli.SHIPPED)
    assert cli.weights_path(cli.SHIPPED) == cli.SHIPPED


def test_guidance_rescale_without_guidance_is_refused(tmp_path, capsys):
    code, _, err = _run(capsys, "sample", "--weights", _weights(tmp_path / "W.safetensors"), "--context", "hero",
                        "--guidance-rescale", "0.7", "--out", tmp_path / "o")
    assert code == 2 and _one_line(err) and "--guidance-rescale" in err and "--guidance)" in err, err
    assert not (tmp_path / "o").exists()


def test_default_steps_are_at_most_t(tmp_path, capsys):
    path = _weights(tmp_path / "W.safetensors", diffusion={"timesteps": 5, "prediction": "v", "zero_terminal_snr": True})
    code, out, err = _run(capsys, "sample", "--weights", path, "--n", "2", "--no-gif", "--out", tmp_path / "o")
    assert code == 0 and "with dpm-solver++ in 5 steps" in out, err


def test_demo_on_an_unconditional_model_samples_without_classes(tmp_path, capsys):
    path = tmp_path / "U.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 8, 1, 16).eval(), path, {"diffusion": {"timesteps": 4}})
    code, out, err = _run(capsys, "demo", "--weights", path, "--out", tmp_path / "o")
    assert code == 0 and "drop --context" not in err and (tmp_path / "o" / "samples.png").exists(), err


# 1. nothing lost, nothing exposed
def test_atomic_write_follows_the_umask_and_keeps_an_existing_files_mode(tmp_path):
    import stat

    from diffusion_utilities.files import atomic_write

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "private.txt", lambda tmp: tmp.write_text("x"))
        assert mode(tmp_path / "private.txt") == 0o600
        os.umask(0o022)
        atomic_write(tmp_path / "shared.txt", lambda tmp: tmp.write_text("x"))
        assert mode(tmp_path / "shared.txt") == 0o644
        os.chmod(tmp_path / "shared.txt", 0o600)  # made private by hand: replacing it keeps it so
        atomic_write(tmp_path / "shared.txt", lambda tmp: tmp.write_text("y"))
        assert mode(tmp_path / "shared.txt") == 0o600 and (tmp_path / "shared.txt").read_text() == "y"
    finally:
        os.umask(old)


def test_train_refuses_an_out_holding_another_runs_snapshots(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "snapshots").mkdir(parents=True)
    _weights(out / "snapshots" / "epoch_02.safetensors")  # e.g. a copy of weights/
    code, _, err = _run(capsys, "train", "--out", out, *TINY, "--epochs", "1", "--snapshot-epochs", "1")
    assert code == 2 and _one_line(err) and "snapshots" in err and "--overwrite" in err, err
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_02.json", "epoch_02.safetensors"]


def test_overwrite_never_deletes_through_a_linked_snapshots_folder(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    _weights(precious / "epoch_01.safetensors")
    (precious / ".epoch_01.safetensors.k3.tmp").write_bytes(b"someone else's")
    out = tmp_path / "run"
    out.mkdir()
    (out / "snapshots").symlink_to(precious)
    before = sorted(p.name for p in precious.iterdir())
    code, _, err = _run(capsys, "train", "--out", out, *TINY, "--epochs", "1", "--snapshot-epochs", "1", "--overwrite")
    assert sorted(p.name for p in precious.iterdir()) == before
    assert code == 2 and _one_line(err) and "snapshots" in err and "link" in err, err


# 2. a checkpoint is data: Adam's settings come from the run's own config, only its state tensors from the file
def _resumed_weights(out: Path, tamper_groups) -> dict:
    from diffusion_utilities.weights import read_tensors, save_tensors

    ckpt = out / "checkpoint.safetensors"
    tensors, card = read_tensors(ckpt)
    card["training"]["epochs"] = 2  # so that resuming has steps left to run
    for group in card["state"]["param_groups"]:
        group.update(tamper_groups)
    save_tensors(ckpt, tensors, card)
    train(TrainConfig(epochs=2, batch_size=20, n_sprites=40, checkpoint_every=1), out, procedural_dataset(40, 0),
          ModelConfig(n_feat=8), progress=False, resume=True)
    return read_tensors(out / "model.safetensors")[0]


@pytest.mark.parametrize("groups", [{"maximize": True}, {"betas": [0.9, 3.0]}, {"amsgrad": True},
                                    {"weight_decay": 0.5, "eps": 0.1}])
def test_adams_settings_in_a_checkpoint_are_the_runs_own_not_the_files(tmp_path, groups):
    import shutil

    first = tmp_path / "a"
    train(TrainConfig(epochs=1, batch_size=20, n_sprites=40, checkpoint_every=1), first, procedural_dataset(40, 0),
          ModelConfig(n_feat=8), progress=False)
    shutil.copytree(first, tmp_path / "b")
    clean, tampered = _resumed_weights(first, {}), _resumed_weights(tmp_path / "b", groups)
    for k, v in clean.items():
        assert torch.equal(v, tampered[k]), k


@pytest.mark.parametrize("tamper, message", [
    (lambda t, s: t["optim.0.step"].fill_(-5), r"optim\.0\.step is -5"),
    (lambda t, s: t["optim.0.step"].fill_(0.5), r"optim\.0\.step is 0\.5, where Adam's step count is a whole number"),
    (lambda t, s: t["optim.0.exp_avg_sq"].fill_(-1.0), r"optim\.0\.exp_avg_sq has negative values"),
])
def test_adams_state_tensors_are_checked(tmp_path, monkeypatch, tamper, message):
    resume = _tampered(tmp_path, monkeypatch, tamper)
    with pytest.raises(BadInput, match=message) as e:
        resume()
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)


# 3. every output location is checked before the work
@pytest.mark.parametrize("command", ["sample", "dataset", "train"])
def test_an_out_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch, command):
    from diffusion_utilities import cli, training

    out = tmp_path / "read-only"
    out.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == out else access(p, mode, **k))
    for module, work in ((cli, "sample"), (cli, "procedural_dataset"), (training, "train_step")):
        monkeypatch.setattr(module, work, lambda *a, **k: pytest.fail("worked before checking --out"))
    args = {"sample": ["--weights", _weights(tmp_path / "W.safetensors")], "dataset": ["--n", "10"],
            "train": TINY}[command]
    code, _, err = _run(capsys, command, *args, "--out", out)
    assert code == 2 and _one_line(err) and "cannot write" in err and str(out) in err, err


def test_a_sagemaker_model_folder_that_is_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import cli, training
    from diffusion_utilities.distributed import SageMakerEnv

    (tmp_path / "model").write_text("a file, not SM_MODEL_DIR's folder")
    env = SageMakerEnv(tmp_path / "model", tmp_path / "ckpt", None, None, 0, ("algo-1",), "algo-1")
    monkeypatch.setattr(cli, "sagemaker_env", lambda: env)
    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained before checking SM_MODEL_DIR"))
    code, _, err = _run(capsys, "train", *TINY, "--epochs", "1")
    assert code == 2 and _one_line(err) and str(tmp_path / "model") in err, err


@pytest.mark.parametrize("card_text", ["[" * 100_000 + "]" * 100_000, '{"steps": ' + "9" * 5000 + "}"])
def test_a_header_card_too_deep_or_too_long_a_number_is_one_line(tmp_path, card_text):
    from safetensors.torch import save_file

    from diffusion_utilities import load_model

    save_file({"w": torch.zeros(1)}, str(tmp_path / "W.safetensors"), metadata={"card": card_text})
    with pytest.raises(BadInput, match="W.safetensors's header holds a card that is not valid JSON"):
        load_model(tmp_path / "W.safetensors")


# Issue 33, what round 3 left ------------------------------------------------------------------------------
# 5. a message names the real cause, once; an option that does nothing is refused
@pytest.mark.parametrize("extra", [["--timesteps", "50"], ["--timesteps", "500"], ["--schedule", "cosine"],
                                   ["--schedule", "linear"], ["--prediction", "eps"], ["--zero-terminal-snr"]])
def test_diffusion_only_options_with_objective_flow_are_refused(tmp_path, capsys, monkeypatch, extra):
    from diffusion_utilities import training

    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained with an option it ignores"))
    code, _, err = _run(capsys, "train", "--objective", "flow", *extra, "--out", tmp_path / "run", *TINY, "--epochs", "1")
    assert code == 2 and _one_line(err) and extra[0] in err and "flow" in err, err
    assert not (tmp_path / "run").exists()


def test_a_flow_config_with_a_diffusion_schedule_is_refused_by_the_library():
    from diffusion_utilities import DiffusionConfig, make_schedule

    for changed in ({"timesteps": 50}, {"schedule": "cosine"}, {"beta2": 0.03}):
        with pytest.raises(BadInput, match=f"flow matching.*{next(iter(changed))}"):
            make_schedule(DiffusionConfig(objective="flow", **changed))
    assert make_schedule(DiffusionConfig(objective="flow")).name == "flow"  # the defaults a flow card records


def test_a_flow_card_from_before_the_refusal_still_loads(tmp_path):
    from diffusion_utilities import load_model_and_schedule
    from diffusion_utilities.schedule import FlowSchedule

    path = tmp_path / "F.safetensors"  # trained with --timesteps 50, which the run never used
    save_model(ContextUnet(3, 8, 5, 16).eval(), path, {"diffusion": {"objective": "flow", "timesteps": 50}})
    assert isinstance(load_model_and_schedule(path)[1], FlowSchedule)


def test_init_from_a_model_of_another_sprite_size_says_so(tmp_path, capsys):
    path = tmp_path / "W20.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 16, 5, 20).eval(), path, {"diffusion": {}, "class_names": NAMES})
    code, _, err = _run(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1", "--init-from", path)
    assert code == 2 and _one_line(err) and "20×20" in err and "16×16" in err and "--n-feat" not in err, err
    code, _, err = _run(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1", "--n-feat", "32",
                        "--init-from", _weights(tmp_path / "W.safetensors"))
    assert code == 2 and _one_line(err) and "--n-feat 16" in err, err  # the one that differs, and the value to pass


PROCEDURAL = {"source": "procedural", "generator_version": "1", "seed": 0, "count": 20}


def test_a_classifier_of_another_class_count_is_refused_naming_both_counts(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import cli
    from diffusion_utilities.evaluation import SpriteClassifier
    from diffusion_utilities.weights import save_tensors

    classifier = tmp_path / "C3.safetensors"
    save_tensors(classifier, SpriteClassifier(3).state_dict(), {"kind": "sprite-classifier", "n_classes": 3, "height": 16})
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated with a classifier that does not fit"))
    code, _, err = _run(capsys, "evaluate", "--weights", _weights(tmp_path / "W.safetensors", data=PROCEDURAL),
                        "--classifier", classifier, "--n", "4")
    assert code == 2 and _one_line(err) and "3 classes" in err and "5" in err and "context has shape" not in err, err


def test_bench_train_rows_on_a_model_of_another_size_are_refused_before_any_row(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import bench

    path = tmp_path / "W20.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 8, 5, 20).eval(), path, {"diffusion": {}, "class_names": NAMES})
    monkeypatch.setattr(bench, "_sample_row", lambda *a, **k: pytest.fail("a sampling row ran before the refusal"))
    for rows in ("sample-ddim25-b32,train", "train-large+bf16"):
        code, _, err = _run(capsys, "bench", "--weights", path, "--device", "cpu", "--rows", rows, "--repeats", "1")
        assert code == 2 and _one_line(err) and "16×16" in err and "20×20" in err, err


_SAMPLERS = re.compile(r"(?<![\w+-])(ddpm-no-noise|dpm-solver\+\+|ddpm|ddim|euler|heun)(?![\w+])")


@pytest.mark.parametrize("diffusion, bad", [({}, "heun-5"), ({"timesteps": 5}, "ddpm"), ({"timesteps": 5}, "heun-3"),
                                            ({"objective": "flow"}, "ddim-5"), ({"timesteps": 5}, "ddim-eta1")])
def test_evaluate_suggests_only_rows_it_takes(tmp_path, monkeypatch, diffusion, bad):
    from diffusion_utilities import evaluation
    from diffusion_utilities.schedule import DiffusionConfig, make_schedule

    class Accepted(Exception):
        pass

    def accepted(*a, **k):
        raise Accepted

    model, card = ContextUnet(3, 8, 5, 16).eval(), {"diffusion": diffusion, "data": PROCEDURAL}
    with pytest.raises(BadInput) as refused:
        evaluation.evaluate(model, card, None, 4, [bad])
    message = str(refused.value)
    monkeypatch.setattr(evaluation, "Evaluator", accepted)  # past the row checks, before any work
    named = message.partition("choose --rows from ")[2].partition(", or SAMPLER-STEPS")[0].split(", ")
    offered = _SAMPLERS.findall(message.partition("SAMPLER-STEPS")[2])
    assert named[0] == "real" and offered, message
    T = make_schedule(DiffusionConfig(**diffusion)).T
    for row in [*named, *(f"{s}-{min(T, 5)}" for s in offered)]:
        with pytest.raises(Accepted):
            evaluation.evaluate(model, card, None, 4, [row])


# 2/3. a file is data; every output checked, a failed write named
def test_dataset_json_with_class_names_for_other_label_columns_is_refused(tmp_path, capsys):
    from diffusion_utilities import load_dataset, save_dataset

    save_dataset(tmp_path / "ds", procedural_dataset(20, 0))
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({**meta, "class_names": NAMES[:4]}))
    with pytest.raises(BadInput, match=r"4 class names.*5 label columns") as e:
        load_dataset(tmp_path / "ds")
    assert "dataset.json" in str(e.value)
    tiny_data = [a for a in TINY if a not in ("--n-sprites", "200")]  # --data gives the sprites
    code, _, err = _run(capsys, "train", "--data", tmp_path / "ds", "--out", tmp_path / "run", *tiny_data, "--epochs", "1")
    assert code == 2 and _one_line(err) and "4 class names" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   OSError("153600 requested and 10112 written")])  # what numpy's tofile says
def test_a_full_disk_while_writing_a_dataset_names_the_file(tmp_path, capsys, monkeypatch, error):
    from diffusion_utilities import data

    def full(path, array):
        Path(path).write_bytes(b"\x93NUMPY")
        raise error

    monkeypatch.setattr(data, "_save_npy", full)
    code, _, err = _run(capsys, "dataset", "--n", "20", "--out", tmp_path / "ds")
    assert code == 1 and _one_line(err) and str(tmp_path / "ds" / "sprites.npy") in err and ".tmp" not in err, err
    assert "the disk is full" in err and "requested" not in err, err  # in words, whatever the library said
    assert not list((tmp_path / "ds").glob(".*tmp*"))


def test_a_failed_write_in_export_course_weights_names_the_file(tmp_path, capsys, monkeypatch):
    def failed(obj, f, *a, **k):
        Path(f).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    weights = tmp_path / "W.safetensors"
    save_model(ContextUnet(3, 64, 5, 16).eval(), weights, {"diffusion": {}, "class_names": NAMES})  # as the labs'
    monkeypatch.setattr(torch, "save", failed)
    code, _, err = _run(capsys, "export-course-weights", "--weights", weights, "--out", tmp_path / "labs")
    assert code == 1 and _one_line(err) and str(tmp_path / "labs" / "model_trained.pth") in err, err
    assert "enforce fail" not in err.partition("(")[0]  # torch's words, if kept, only as the detail
    assert not list((tmp_path / "labs").glob(".*tmp*"))


# 6. in a SageMaker job: messages in the job's own terms; checkpoints on a clock, as well as every N steps
def _in_a_job(monkeypatch, tmp_path):
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("DIFFUSION_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    (tmp_path / "model").mkdir()


def test_a_config_mismatch_in_a_job_names_the_jobs_options_not_out(tmp_path, capsys, monkeypatch):
    _in_a_job(monkeypatch, tmp_path)
    assert _run(capsys, "train", *TINY, "--epochs", "1")[0] == 0
    code, _, err = _run(capsys, "train", *TINY, "--epochs", "1", "--n-feat", "8")  # the checkpoint's run differs
    assert code == 2 and _one_line(err) and "--out" not in err and "--checkpoint-s3-uri" in err, err
    (tmp_path / "checkpoints" / "checkpoint.safetensors").unlink()  # a finished run's model, no checkpoint
    code, _, err = _run(capsys, "train", *TINY, "--epochs", "1")
    assert code == 2 and _one_line(err) and "--out" not in err and "--overwrite" not in err, err
    assert "--checkpoint-s3-uri" in err


def _checkpoint_steps(monkeypatch) -> list[int]:
    from diffusion_utilities import training

    steps, save = [], training.save_checkpoint
    monkeypatch.setattr(training, "save_checkpoint", lambda path, *a: (steps.append(a[-1].step), save(path, *a)))
    return steps


def test_checkpoints_are_also_written_on_a_time_interval(tmp_path, monkeypatch):
    steps = _checkpoint_steps(monkeypatch)
    config = TrainConfig(epochs=1, batch_size=10, n_sprites=400, checkpoint_every=0, checkpoint_minutes=1e-9)
    train(config, tmp_path / "a", procedural_dataset(400, 0), ModelConfig(n_feat=8), progress=False)
    assert steps[:2] == [20, 40], steps  # every 20 steps, where the ranks compare notes anyway
    steps.clear()
    train(TrainConfig(epochs=1, batch_size=10, n_sprites=400, checkpoint_every=0), tmp_path / "b",
          procedural_dataset(400, 0), ModelConfig(n_feat=8), progress=False)
    assert steps == [40, 40], steps  # off by default outside a job: the epoch's end and the finish


def test_a_job_checkpoints_on_a_time_interval_by_default(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import cli
    from diffusion_utilities.distributed import SAGEMAKER_CHECKPOINT_MINUTES

    seen = []
    monkeypatch.setattr(cli, "train", lambda config, *a, **k: seen.append(config) or pytest.fail("stop here"))
    _in_a_job(monkeypatch, tmp_path)
    with pytest.raises(pytest.fail.Exception):
        main(["train", *TINY])
    assert seen[0].checkpoint_minutes == SAGEMAKER_CHECKPOINT_MINUTES > 0
    with pytest.raises(pytest.fail.Exception):
        main(["train", *TINY, "--checkpoint-minutes", "0"])  # asked for: off
    assert seen[1].checkpoint_minutes == 0
    monkeypatch.delenv("SM_MODEL_DIR")
    with pytest.raises(pytest.fail.Exception):
        main(["train", *TINY, "--out", str(tmp_path / "run")])
    assert not seen[2].checkpoint_minutes  # outside a job: steps and epochs only, as before
    code, _, err = _run(capsys, "train", *TINY, "--out", tmp_path / "run", "--checkpoint-minutes", "-1")
    assert code == 2 and _one_line(err) and "checkpoint_minutes" in err, err


@pytest.mark.parametrize("call, says", [
    (lambda: timesteps_for(500, 0), "steps must be a whole"),
    (lambda: make_grid(torch.zeros(2, 3, 4, 4), nrow=0), "nrow must be a whole number"),
    (lambda: save_gif(None, "x.gif", fps=0), "fps must be"),
])
def test_the_plotting_and_grid_helpers_refuse_zero_in_one_line(call, says):
    # issue 33's re-walk: each was a ZeroDivisionError
    with pytest.raises(BadInput, match=says):
        call()


def test_sample_refuses_nan_starting_noise():
    from diffusion_utilities import sample
    from diffusion_utilities.schedule import DiffusionConfig, make_schedule

    net = ContextUnet(3, 16, 5, 16).eval()
    with pytest.raises(BadInput, match="x_T holds NaN"):
        sample(net, make_schedule(DiffusionConfig()), sampler="ddim", steps=2, x_T=torch.full((1, 3, 16, 16), float("nan")))


# Issue 33, the last re-walk: the library helpers hold the same rules as the commands -----------------------
@pytest.mark.parametrize("guidance, rescale, says", [
    (float("nan"), 0.0, "guidance must be"), (float("inf"), 0.0, "guidance must be"), (-1.0, 0.0, "guidance must be"),
    (1.0, float("nan"), "guidance_rescale must be"), (1.0, 2.0, "guidance_rescale must be"),
])
def test_guided_output_refuses_weights_that_are_not_sensible_numbers(guidance, rescale, says):
    from diffusion_utilities.sampling import guided_output

    net, ctx = ContextUnet(3, 16, 5, 16).eval(), torch.eye(5)[:2]
    with pytest.raises(BadInput, match=says):  # a NaN weight gave NaN outputs, without a word
        guided_output(net, torch.zeros(2, 3, 16, 16), torch.full((2, 1, 1, 1), 0.5), ctx, guidance, rescale)
    out = guided_output(net, torch.zeros(2, 3, 16, 16), torch.full((2, 1, 1, 1), 0.5), ctx, np.float32(1.0), np.float64(0.5))
    assert torch.isfinite(out).all()  # numpy numbers are numbers


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_pictures_of_nan_images_are_refused_not_written(tmp_path, bad):
    from diffusion_utilities.plotting import save_grid

    images = torch.zeros(4, 3, 16, 16)
    images[1, 0, 3, 3] = bad  # one pixel: a grid would draw it as black or white, as if it were a colour
    with pytest.raises(BadInput, match="NaN or infinite"):
        save_grid(images, tmp_path / "grid.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("f1, f2, says", [
    (np.zeros((1, 8)), np.random.randn(50, 8), "at least 2"),
    (np.zeros((0, 8)), np.random.randn(50, 8), "at least 2"),
    (np.random.randn(50, 8), np.random.randn(50, 7), "8 and 7"),
    (np.random.randn(50), np.random.randn(50), r"\(N, D\)"),
])
def test_frechet_distance_refuses_features_it_cannot_compare(f1, f2, says):
    from diffusion_utilities.evaluation import frechet_distance

    with pytest.raises(BadInput, match=says):  # were a LinAlgError ("Eigenvalues did not converge") or a matmul error
        frechet_distance(f1, f2)


def test_overwrite_keeps_the_modes_of_the_checkpoint_and_snapshots_it_replaces(tmp_path, capsys):
    import stat

    out = tmp_path / "run"
    args = ["train", "--out", out, *TINY, "--epochs", "1", "--snapshot-epochs", "1", "--checkpoint-every", "5"]
    assert _run(capsys, *args)[0] == 0
    private = [out / "checkpoint.safetensors", out / "model.safetensors", out / "snapshots" / "epoch_01.safetensors"]
    for p in private:
        os.chmod(p, 0o600)  # made private by hand
    assert _run(capsys, *args, "--overwrite")[0] == 0
    # --overwrite deletes the old checkpoint before training (a new run must not resume it): the new files
    # still take the old ones' modes, not the umask's 0644
    assert [oct(stat.S_IMODE(os.stat(p).st_mode)) for p in private] == [oct(0o600)] * 3


def test_a_snapshots_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import training

    out = tmp_path / "run"
    (out / "snapshots").mkdir(parents=True)
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == out / "snapshots" else access(p, mode, **k))
    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained before checking snapshots/"))
    code, _, err = _run(capsys, "train", *TINY, "--epochs", "1", "--snapshot-epochs", "1", "--out", out)
    assert code == 2 and _one_line(err) and "cannot write" in err and str(out / "snapshots") in err, err


def test_a_classifier_card_promising_a_huge_network_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from diffusion_utilities import evaluation
    from diffusion_utilities.weights import read_tensors, save_tensors

    tensors, card = read_tensors(ROOT / "weights" / "sprite_classifier.safetensors")
    save_tensors(tmp_path / "clf.safetensors", tensors, {**card, "height": 4000})  # a 4000² classifier: ~130 TB of weights
    built = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: built.append(self.weight.device.type))
    with pytest.raises(BadInput, match="do not fit"):  # was "out of memory" after trying to allocate it
        evaluation.load_classifier(tmp_path / "clf.safetensors")
    assert set(built) <= {"meta"}


@pytest.mark.parametrize("diffusion", [{"timesteps": 5}, {"timesteps": 5, "prediction": "v", "zero_terminal_snr": True},
                                       {"timesteps": 20}])
def test_evaluates_default_rows_fit_the_models_t(tmp_path, capsys, monkeypatch, diffusion):
    from diffusion_utilities import cli

    path = tmp_path / "W.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 8, 5, 16).eval(), path, {"diffusion": diffusion, "class_names": NAMES, "data": PROCEDURAL})
    asked = []
    monkeypatch.setattr(cli, "evaluate", lambda model, card, clf, n, rows, *a, **k: asked.extend(rows) or [])
    monkeypatch.setattr(cli, "format_table", lambda rows: "")
    code, _, err = _run(capsys, "evaluate", "--weights", path, "--n", "4")  # no --rows: were refused ("ddpm takes 500")
    T = diffusion["timesteps"]
    assert code == 0, err
    assert asked[0] == "real" and all(s <= T for s in (evaluation_steps(r) for r in asked)), asked
    assert any(r.startswith("ddpm") for r in asked) and any(r.startswith("ddim") for r in asked), asked


def evaluation_steps(row: str) -> int:
    from diffusion_utilities.evaluation import row_spec

    return row_spec(row)[1]


@pytest.mark.parametrize("T, height, left", [(5, 16, "sampling"), (500, 20, "train"), (5, 20, None)])
def test_bench_default_rows_leave_out_what_the_model_cannot_run_and_say_so(tmp_path, capsys, monkeypatch, T, height, left):
    from diffusion_utilities import bench

    path = tmp_path / "W.safetensors"
    torch.manual_seed(0)
    save_model(ContextUnet(3, 8, 5, height).eval(), path, {"diffusion": {"timesteps": T}, "class_names": NAMES})
    ran = []
    monkeypatch.setattr(bench, "_sample_row", lambda name, *a, **k: ran.append(name))
    monkeypatch.setattr(bench, "_train_row", lambda name, *a, **k: ran.append(name))
    monkeypatch.setattr(bench, "format_row", lambda row: "")
    code, out, err = _run(capsys, "bench", "--weights", path, "--device", "cpu", "--repeats", "1")
    if left is None:  # nothing it could run: one line, naming both reasons
        assert code == 2 and _one_line(err) and "T=5" in err and "20×20" in err and not ran, (err, ran)
        return
    assert code == 0, err
    assert ran and all((r.startswith("train") if left == "sampling" else r.startswith("sample")) for r in ran), ran
    assert f"{left} rows left out" in out, out


@pytest.mark.parametrize("after", [0.3, 1.0])
def test_ctrl_c_while_the_command_is_still_importing_is_one_line(tmp_path, after):
    # torch takes seconds to import, before cli.main (which takes Ctrl-C) runs: was a traceback from inside torch
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_utilities", "--help"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    if proc.returncode == 0:
        pytest.skip(f"the import finished within {after} s on this machine")
    assert proc.returncode == 130 and err == "interrupted (Ctrl-C)\n", (proc.returncode, err)


@pytest.mark.parametrize("value", ["abc", "0" * 63, "g" * 64, 12345, ["0" * 64]])
def test_a_malformed_sha256_in_the_card_is_named_as_such_not_as_a_damaged_file(tmp_path, value):
    from diffusion_utilities import load_model

    path = _weights(tmp_path / "W.safetensors")
    card = json.loads((tmp_path / "W.json").read_text())
    (tmp_path / "W.json").write_text(json.dumps({**card, "sha256": value}))
    with pytest.raises(BadInput, match="sha256 must be 64 hex digits"):  # was "the file is damaged or was replaced"
        load_model(path)


def test_a_jobs_checkpoint_folder_that_cannot_be_written_names_the_jobs_fix_not_out(tmp_path, capsys, monkeypatch):
    _in_a_job(monkeypatch, tmp_path)
    (tmp_path / "checkpoints").mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == tmp_path / "checkpoints" else access(p, m, **k))
    code, _, err = _run(capsys, "train", *TINY, "--epochs", "1")
    assert code == 2 and _one_line(err) and "cannot write" in err and "--out" not in err, err
    assert "DIFFUSION_CHECKPOINT_DIR" in err, err


@pytest.mark.parametrize("command", ["sample", "demo"])
def test_sample_and_demo_never_replace_earlier_pictures_unasked(tmp_path, capsys, monkeypatch, command):
    from diffusion_utilities import cli

    out = tmp_path / "outputs"
    out.mkdir()
    (out / "samples.png").write_bytes(b"an earlier grid the user kept")
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("sampled before refusing"))
    weights = ["--weights", _weights(tmp_path / "W.safetensors")]
    code, _, err = _run(capsys, command, *weights, "--out", out, *(["--steps", "2"] if command == "sample" else []))
    assert code == 2 and _one_line(err) and "--overwrite" in err and "samples.png" in err, err
    assert (out / "samples.png").read_bytes() == b"an earlier grid the user kept"
    monkeypatch.undo()
    args = [command, *weights, "--out", out, "--overwrite", *(["--steps", "2", "--no-gif"] if command == "sample" else [])]
    assert _run(capsys, *args)[0] == 0
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("entry, field", [
    ({"diffusion": "linear"}, "diffusion"), ({"sampler": "ddim"}, "sampler"), ({"distillation": "x"}, "distillation"),
    ({"sampler": {"sampler": "ddim", "steps": "4"}}, "sampler.steps"), ({"sampler": {"sampler": "ddim", "steps": -4}}, "sampler.steps"),
    ({"sampler": {"sampler": "ddim", "steps": 4.0}}, "sampler.steps"),
    ({"distillation": {"rounds": "abc"}}, "distillation.rounds"),
])
def test_a_teacher_card_of_the_wrong_shape_is_one_line_naming_the_field(tmp_path, capsys, entry, field):
    # issue 33's re-walk: AttributeError / TypeError tracebacks, "--distill-steps 2.0" advice, or rounds "a", "b", "c"
    teacher = _weights(tmp_path / "T.safetensors", **entry)
    code, _, err = _run(capsys, "train", "--teacher", teacher, "--distill-steps", "2", *TINY, "--epochs", "1",
                        "--out", tmp_path / "run")
    assert code == 2 and _one_line(err) and f"card: {field} must be" in err, err
    assert not (tmp_path / "run").exists()


def test_evaluate_update_card_checks_the_cards_evaluation_entry_before_the_work(tmp_path, capsys, monkeypatch):
    from diffusion_utilities import cli

    weights = _weights(tmp_path / "W.safetensors", data=PROCEDURAL)
    card = json.loads((tmp_path / "W.json").read_text())
    (tmp_path / "W.json").write_text(json.dumps({**card, "evaluation": "broken"}))
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the card"))
    code, _, err = _run(capsys, "evaluate", "--weights", weights, "--rows", "real", "--n", "10", "--update-card")
    assert code == 2 and _one_line(err) and "evaluation must be an object" in err, err


def test_n_sprites_with_a_dataset_is_refused_not_recorded(tmp_path, capsys):
    from diffusion_utilities import save_dataset

    save_dataset(tmp_path / "ds", procedural_dataset(40, 0))
    code, _, err = _run(capsys, "train", "--data", tmp_path / "ds", *TINY, "--epochs", "1", "--out", tmp_path / "run")
    assert code == 2 and _one_line(err) and "--n-sprites" in err, err  # TINY gives --n-sprites 200: was trained on 40
    assert not (tmp_path / "run").exists()


def test_export_course_weights_refuses_a_flow_model_and_leaves_out_another_runs_snapshots(tmp_path, capsys):
    # issue 33's re-walk: the flow model was exported (the labs would sample noise), and weights/snapshots/ (the course
    # model's first run) went out as the student's model_0, model_1 and model_3
    code, _, err = _run(capsys, "export-course-weights", "--weights", ROOT / "weights" / "sprites_flow.safetensors",
                        "--out", tmp_path / "flow")
    assert code == 2 and _one_line(err) and "flow-matching" in err, err
    assert not (tmp_path / "flow").exists() or not list((tmp_path / "flow").iterdir())
    weights = tmp_path / "w"
    (weights / "snapshots").mkdir(parents=True)
    _weights(weights / "mine.safetensors", command="train --out runs/mine")
    _weights(weights / "snapshots" / "epoch_01.safetensors", command="train --out runs/other")
    _weights(weights / "snapshots" / "epoch_02.safetensors", command="train --out runs/mine")
    code, out, err = _run(capsys, "export-course-weights", "--weights", weights / "mine.safetensors", "--out", tmp_path / "labs")
    assert code == 0, err
    assert "left out epoch_01.safetensors" in out
    assert (tmp_path / "labs" / "model_1.pth").exists() and not (tmp_path / "labs" / "model_0.pth").exists()
