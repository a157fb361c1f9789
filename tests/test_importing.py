import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_utilities import BadInput
from diffusion_utilities.importing import from_images, from_sheet, parse_colour, parse_tile

ROOT = Path(__file__).resolve().parents[1]


def _sprite(colour, size=16, mode="RGB"):
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    for x in range(size // 4, 3 * size // 4):
        for y in range(size // 4, 3 * size // 4):
            img.putpixel((x, y), (*colour, 255))
    if mode == "RGB":
        return img.convert("RGB")
    if mode == "P":
        return img.convert("P")  # palette, transparency dropped to index colours
    if mode == "L":
        return img.convert("L")
    return img


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "slimes").mkdir()
    (tmp_path / "swords" / "deep").mkdir(parents=True)
    _sprite((0, 200, 0), mode="RGBA").save(tmp_path / "slimes" / "a.png")
    _sprite((0, 150, 0), 32, mode="P").save(tmp_path / "slimes" / "b.gif")
    _sprite((90, 90, 90), 24, mode="L").save(tmp_path / "swords" / "c.png")
    _sprite((200, 200, 250)).save(tmp_path / "swords" / "deep" / "d.jpg")
    _sprite((10, 10, 10), 20).save(tmp_path / "loose.png")
    (tmp_path / "swords" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "slimes" / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_import_classes_modes_sizes_and_bad_files(folder):
    data, report = from_images(folder)
    assert data.class_names == ["slimes", "swords"]
    assert data.sprites.shape == (5, 16, 16, 3) and data.sprites.dtype == np.uint8
    assert sorted(n for n, _ in report.skipped) == ["slimes/empty.png", "swords/broken.png"]
    by_file = dict(zip(report.used, data.labels))
    assert by_file["slimes/a.png"].tolist() == [1, 0] and by_file["swords/deep/d.jpg"].tolist() == [0, 1]
    assert by_file["loose.png"].tolist() == [0, 0]  # directly in DIR: unlabelled
    a = data.sprites[report.used.index("slimes/a.png")]
    assert a[0, 0].tolist() == [255, 255, 255] and a[8, 8].tolist() == [0, 200, 0]  # alpha on white
    grey = data.sprites[report.used.index("swords/c.png")]
    assert (grey[..., 0] == grey[..., 1]).all()  # greyscale became RGB
    assert data.meta["counts"] == {"slimes": 2, "swords": 2, "(unlabelled)": 1}


def test_background_colour_and_area_resize(folder):
    data, report = from_images(folder, resize="area", background=(0, 0, 255))
    a = data.sprites[report.used.index("slimes/a.png")]
    assert a[0, 0].tolist() == [0, 0, 255]
    b = data.sprites[report.used.index("slimes/b.gif")]  # 32 -> 16 by averaging 2x2 blocks
    assert b.shape == (16, 16, 3)


def test_zero_usable_images_is_a_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(BadInput, match="no usable images"):
        from_images(tmp_path)


def test_sheet_cut_with_margin_spacing_and_empty_tiles(tmp_path):
    sheet = Image.new("RGB", (2 + 4 * 16 + 3 * 1 + 2, 2 + 2 * 16 + 1 + 2), (255, 255, 255))
    for k in range(5):  # 5 of the 8 tiles are drawn; 3 are empty
        r, c = divmod(k, 4)
        sheet.paste(_sprite((40 * k, 100, 50)), (2 + c * 17, 2 + r * 17))
    sheet.save(tmp_path / "sheet.png")
    data, report = from_sheet(tmp_path / "sheet.png", parse_tile("16x16"), margin=2, spacing=1)
    assert data.sprites.shape == (5, 16, 16, 3) and data.labels.shape == (5, 0)
    assert len(report.skipped) == 3 and data.class_names == []


def test_all_empty_sheet_is_a_clear_error(tmp_path):
    Image.new("RGB", (64, 32), (200, 10, 10)).save(tmp_path / "blank.png")
    with pytest.raises(BadInput, match="all 8 tiles .* are empty"):
        from_sheet(tmp_path / "blank.png", (16, 16))


@pytest.mark.parametrize("text, want", [("16", (16, 16)), ("16x8", (16, 8)), ("8X8", (8, 8))])
def test_parse_tile(text, want):
    assert parse_tile(text) == want


@pytest.mark.parametrize("text", ["", "x16", "16x", "0", "a"])
def test_parse_tile_bad(text):
    with pytest.raises(BadInput, match="--tile"):
        parse_tile(text)


def test_parse_colour():
    assert parse_colour("#ff8000") == (255, 128, 0) and parse_colour("1,2,3") == (1, 2, 3)
    with pytest.raises(BadInput):
        parse_colour("#ff80")


def test_folders_without_images_are_not_classes(folder):
    (folder / "empty_class").mkdir()
    (folder / "ds").mkdir()  # e.g. a dataset --out made inside the image folder
    np.save(folder / "ds" / "sprites.npy", np.zeros((1, 16, 16, 3), np.uint8))
    data, _ = from_images(folder)
    assert data.class_names == ["slimes", "swords"]


@pytest.mark.slow
def test_imported_class_names_reach_sample_context(folder, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "diffusion_utilities", *map(str, a)], cwd=ROOT,
                                    capture_output=True, text=True, timeout=600)
    r = run("dataset", "--from-images", folder, "--out", tmp_path / "ds")
    assert r.returncode == 0 and "skipped swords/broken.png" in r.stderr
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["class_names"] == ["slimes", "swords"]
    r = run("train", "--data", tmp_path / "ds", "--epochs", "2", "--n-feat", "16", "--augment", "--out",
            tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["class_names"] == ["slimes", "swords"] and card["model"]["n_cfeat"] == 2
    r = run("sample", "--weights", tmp_path / "run" / "model.safetensors", "--context", "swords", "--steps", "5",
            "--n", "4", "--out", tmp_path / "out", "--no-gif")
    assert r.returncode == 0, r.stderr
    r = run("sample", "--weights", tmp_path / "run" / "model.safetensors", "--context", "hero", "--steps", "5",
            "--out", tmp_path / "out")
    assert r.returncode == 2 and "choose one of slimes, swords" in r.stderr


@pytest.mark.slow
def test_unconditional_training_on_a_sheet(tmp_path):
    sheet = Image.new("RGB", (64, 64), (255, 255, 255))
    for k in range(16):
        r, c = divmod(k, 4)
        sheet.paste(_sprite((15 * k, 80, 200 - 10 * k)), (c * 16, r * 16))
    sheet.save(tmp_path / "sheet.png")
    run = lambda *a: subprocess.run([sys.executable, "-m", "diffusion_utilities", *map(str, a)], cwd=ROOT,
                                    capture_output=True, text=True, timeout=600)
    assert run("dataset", "--from-sheet", tmp_path / "sheet.png", "--tile", "16", "--out", tmp_path / "ds").returncode == 0
    r = run("train", "--data", tmp_path / "ds", "--epochs", "1", "--n-feat", "16", "--out", tmp_path / "run",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run("sample", "--weights", tmp_path / "run" / "model.safetensors", "--steps", "5", "--n", "2",
            "--out", tmp_path / "out", "--no-gif")
    assert r.returncode == 0, r.stderr
    r = run("sample", "--weights", tmp_path / "run" / "model.safetensors", "--context", "x", "--steps", "5",
            "--out", tmp_path / "out")
    assert r.returncode == 2 and "trained without classes" in r.stderr


def test_a_dataset_made_inside_its_image_folder_is_not_imported_again(folder, capsys):
    from diffusion_utilities.cli import main

    args = ["dataset", "--from-images", str(folder), "--out", str(folder / "ds"), "--sheet"]
    assert main(args) == 0 and (folder / "ds" / "sheet.png").is_file()
    first = json.loads((folder / "ds" / "dataset.json").read_text())
    assert main([*args, "--overwrite"]) == 0  # a re-run: the first run's sheet.png is not a sprite, and ds is not a class
    again = json.loads((folder / "ds" / "dataset.json").read_text())
    assert again["class_names"] == first["class_names"] == ["slimes", "swords"]
    assert again["count"] == first["count"] == 5
    assert main(["dataset", "--from-images", str(folder), "--out", str(folder)]) == 2
    assert "--out is the image folder itself" in capsys.readouterr().err


def test_a_dataset_written_around_its_image_folder_still_imports_it(tmp_path, capsys):
    from diffusion_utilities.cli import main

    images = tmp_path / "images"
    (images / "slimes").mkdir(parents=True)
    _sprite((0, 200, 0)).save(images / "slimes" / "a.png")
    _sprite((0, 100, 0)).save(images / "slimes" / "b.png")
    assert main(["dataset", "--from-images", str(images), "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "dataset.json").read_text())["count"] == 2  # --out holds the images: not excluded
