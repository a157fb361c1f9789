import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from diffusion_utilities import BadInput, load_dataset, procedural_dataset, save_dataset, sprites_to_tensor
from diffusion_utilities.data import check_sprite_arrays


def test_round_trip_plain_and_course_names(tmp_path):
    data = procedural_dataset(20, seed=0)
    for course in (False, True):
        folder = tmp_path / str(course)
        save_dataset(folder, data, course_names=course)
        back = load_dataset(folder)
        assert np.array_equal(back.sprites, data.sprites) and np.array_equal(back.labels, data.labels)
        assert back.class_names == data.class_names
    assert (tmp_path / "True" / "sprites_1788_16x16.npy").exists()


def test_to_tensor_matches_the_courses_transform():
    from torchvision import transforms

    sprites = procedural_dataset(4, 0).sprites
    course = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    want = np.stack([course(s).numpy() for s in sprites])
    np.testing.assert_allclose(sprites_to_tensor(sprites).numpy(), want, atol=1e-6)


@pytest.mark.parametrize(
    "sprites, labels, message",
    [
        (np.zeros((4, 16, 16), np.uint8), None, r"expected \(N, H, W, 3\)"),
        (np.zeros((4, 16, 16, 4), np.uint8), None, r"expected \(N, H, W, 3\)"),
        (np.zeros((4, 18, 18, 3), np.uint8), None, "multiple of 4"),
        (np.zeros((4, 16, 12, 3), np.uint8), None, "square"),
        (np.zeros((4, 16, 16, 3), np.float32), None, "uint8"),
        (np.zeros((0, 16, 16, 3), np.uint8), None, "no sprites"),
        (np.zeros((4, 16, 16, 3), np.uint8), np.zeros((3, 5)), "4 sprites but 3 labels"),
        (np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4), r"\(N, n_classes\)"),
        (np.zeros((4, 16, 16, 3), np.uint8), np.full((4, 5), np.nan), "NaN"),
        (np.zeros((4, 16, 16, 3), np.uint8), -np.ones((4, 5)), "negative"),
        (np.zeros((4, 16, 16, 3), np.uint8), np.array([["a"] * 5] * 4), "dtype"),
        ([[1, 2]], None, "numpy array"),
    ],
)
def test_bad_arrays(sprites, labels, message):
    with pytest.raises(BadInput, match=message):
        check_sprite_arrays(sprites, labels)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(BadInput, match="has neither"):
        load_dataset(tmp_path)
    (tmp_path / "sprites.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(BadInput, match="cannot read"):
        load_dataset(tmp_path)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "sprites.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="cannot read"):
        load_dataset(tmp_path)


dtypes = st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_])


@settings(max_examples=60, deadline=None)
@given(
    sprites=arrays(dtypes, st.lists(st.integers(0, 20), min_size=1, max_size=5).map(tuple)),
    labels=st.none() | arrays(dtypes, st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple)),
)
def test_loader_either_works_or_raises_badinput(sprites, labels):
    try:
        s, l = check_sprite_arrays(sprites, labels)
    except BadInput as e:
        assert "\n" not in str(e)
        return
    assert s.dtype == np.uint8 and s.ndim == 4 and s.shape[-1] == 3 and l.shape[0] == s.shape[0]
    sprites_to_tensor(s)  # and what passed converts


def test_a_new_set_under_the_other_names_replaces_the_old_one(tmp_path):
    old, new = procedural_dataset(10, seed=0), procedural_dataset(12, seed=1)
    save_dataset(tmp_path, old)
    save_dataset(tmp_path, new, course_names=True, overwrite=True)
    assert not (tmp_path / "sprites.npy").exists()  # written by the first save, so removed by the second
    back = load_dataset(tmp_path)
    assert np.array_equal(back.sprites, new.sprites) and back.meta["count"] == 12


def test_dataset_json_decides_which_files_load(tmp_path):
    old, new = procedural_dataset(10, seed=0), procedural_dataset(12, seed=1)
    np.save(tmp_path / "sprites.npy", old.sprites)  # plain files save_dataset did not write: kept, not loaded
    np.save(tmp_path / "labels.npy", old.labels)
    save_dataset(tmp_path, new, course_names=True)
    assert (tmp_path / "sprites.npy").exists()
    assert np.array_equal(load_dataset(tmp_path).sprites, new.sprites)
    (tmp_path / "sprite_labels_nc_1788_16x16.npy").unlink()
    with pytest.raises(BadInput, match="names sprite_labels_nc_1788_16x16.npy, which is missing"):
        load_dataset(tmp_path)


def test_dataset_json_that_disagrees_with_the_arrays(tmp_path):
    save_dataset(tmp_path, procedural_dataset(10, seed=0))
    fewer = procedural_dataset(7, seed=0)
    np.save(tmp_path / "sprites.npy", fewer.sprites)
    np.save(tmp_path / "labels.npy", fewer.labels)
    with pytest.raises(BadInput, match="says 10 sprites but sprites.npy holds 7"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("text", ['{"class_names": ["a", "b"', "[1, 2]", '{"files": ["../x.npy", "y.npy"]}'])
def test_bad_dataset_json_is_one_line(tmp_path, text):
    save_dataset(tmp_path, procedural_dataset(10, seed=0))
    (tmp_path / "dataset.json").write_text(text)
    fix = r"re-create the dataset with `python -m diffusion_utilities dataset --out"
    with pytest.raises(BadInput, match=rf"dataset\.json .*{fix}") as e:
        load_dataset(tmp_path)
    assert "\n" not in str(e.value)


def test_a_sheet_is_removed_with_the_dataset_it_showed(tmp_path):
    data = procedural_dataset(60, 0)
    save_dataset(tmp_path, data, sheet=True)
    assert (tmp_path / "sheet.png").is_file() and json.loads((tmp_path / "dataset.json").read_text())["sheet"] == "sheet.png"
    save_dataset(tmp_path, procedural_dataset(60, 1), overwrite=True)  # a new set without a sheet: the old one showed other sprites
    assert not (tmp_path / "sheet.png").exists()
    Image.new("RGB", (4, 4)).save(tmp_path / "sheet.png")  # the user's own file, not recorded: left alone
    save_dataset(tmp_path, data, overwrite=True)
    assert (tmp_path / "sheet.png").exists()


def test_a_sheet_from_before_sheets_were_recorded_goes_too(tmp_path):
    save_dataset(tmp_path, procedural_dataset(60, 0), sheet=True)
    card = json.loads((tmp_path / "dataset.json").read_text())
    del card["sheet"]  # as `dataset --sheet` wrote it before dataset.json recorded sheets
    (tmp_path / "dataset.json").write_text(json.dumps(card))
    save_dataset(tmp_path, procedural_dataset(60, 1), overwrite=True)
    assert not (tmp_path / "sheet.png").exists()
