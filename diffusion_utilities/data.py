"""Sprite datasets on disk, in the course's layout, checked before training touches them.

A dataset folder holds ``sprites.npy`` (N, H, W, 3) uint8 and ``labels.npy`` (N, K) one-hot
(or the course's own names, ``sprites_1788_16x16.npy`` and ``sprite_labels_nc_1788_16x16.npy``),
and optionally ``dataset.json`` with class names, the count and which two files hold the set.
``np.load`` runs with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy
from PIL import Image

from .errors import BadInput
from .files import atomic_write, check_regular_file, read_json_object
from .memory import check_memory
from .plotting import save_grid
from .sprites import CLASS_NAMES, GENERATOR_VERSION, make_sprites, sprite_sheet, sprites_to_tensor, tensor_to_sprites
from .checks import is_whole

__all__ = [
    "SpriteData",
    "COURSE_FILES",
    "check_sprite_arrays",
    "check_class_names",
    "check_dataset_out",
    "load_dataset",
    "save_dataset",
    "procedural_dataset",
    "sprites_to_tensor",
    "tensor_to_sprites",
]

COURSE_FILES = ("sprites_1788_16x16.npy", "sprite_labels_nc_1788_16x16.npy")
PLAIN_FILES = ("sprites.npy", "labels.npy")
SHEET = "sheet.png"  # the optional picture of a dataset, written beside it


@dataclass
class SpriteData:
    """Sprites and their labels, as the arrays on disk.

    sprites: (N, H, W, 3) uint8;  labels: (N, K) float32, rows one-hot or mixes (K = 0: unlabelled)
    """

    sprites: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sprites)


def check_sprite_arrays(sprites, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate the course layout; returns (sprites uint8, labels float32) or raises one BadInput line."""
    if not isinstance(sprites, np.ndarray):
        raise BadInput(f"sprites must be a numpy array, got {type(sprites).__name__}")
    if sprites.ndim != 4 or sprites.shape[-1] != 3:
        raise BadInput(f"sprites have shape {sprites.shape}; expected (N, H, W, 3) RGB images")
    n, h, w, _ = sprites.shape
    if n == 0:
        raise BadInput("the dataset has no sprites")
    if h != w or h % 4:
        raise BadInput(f"sprites are {h}×{w}; expected square images whose side is a multiple of 4 (e.g. 16×16)")
    if sprites.dtype != np.uint8:
        raise BadInput(f"sprites have dtype {sprites.dtype}; expected uint8 pixel values 0..255")
    if labels is None:
        labels = np.zeros((n, 0), np.float32)
    if not isinstance(labels, np.ndarray):
        raise BadInput(f"labels must be a numpy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise BadInput(f"labels have shape {labels.shape}; expected (N, n_classes) one-hot rows")
    if len(labels) != n:
        raise BadInput(f"{n} sprites but {len(labels)} labels; the two files must have the same length")
    if labels.dtype.kind not in "biuf":
        raise BadInput(f"labels have dtype {labels.dtype}; expected numbers (one-hot rows)")
    labels = labels.astype(np.float32)
    if labels.size and (not np.isfinite(labels).all() or (labels < 0).any()):
        raise BadInput("labels contain negative, NaN or infinite values; expected one-hot rows of 0 and 1")
    if labels.size and labels.max() > 1 + 1e-4:  # one class per column: a weight above 1 is not a label
        if labels.shape[1] == 1:
            raise BadInput(f"labels are one column of values up to {labels.max():g}: class indices, not one-hot rows; "
                           f"convert them with np.eye(n_classes)[indices]")
        raise BadInput(f"labels hold values greater than 1 (up to {labels.max():g}); expected one-hot rows of 0 and 1")
    if labels.size and labels.sum(1).max() > 1 + 1e-4:  # a mix of classes sums to 1; all zeros is "no context"
        raise BadInput("some label rows sum to more than 1; expected one-hot rows (or mixes that sum to 1)")
    return sprites, labels


def check_class_names(names, where: str, fix: str) -> None:
    """One BadInput line unless ``names`` is None (none recorded) or a list of strings."""
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise BadInput(f"{where} has class_names {json.dumps(names)[:80]}; it must be a list of strings, e.g. "
                       f'["hero", "food"]; {fix}')


def load_dataset(folder: Path) -> SpriteData:
    """Load a dataset folder: the files its ``dataset.json`` names, else our names or the course's."""
    folder = Path(folder)
    if folder.is_file():
        raise BadInput(f"{folder} is a file; give the folder that holds it (made by `python -m diffusion_utilities dataset --out`)")
    if not folder.is_dir():
        raise BadInput(f"dataset folder not found: {folder}")
    meta = _read_meta(folder)
    if "files" in meta:  # a folder may also hold an older set under the other names; the card says which is current
        s_name, l_name = _recorded_files(folder, meta["files"])
    else:
        for s_name, l_name in (PLAIN_FILES, COURSE_FILES):
            if (folder / s_name).exists():
                break
        else:
            raise BadInput(f"{folder} has neither {PLAIN_FILES[0]} nor {COURSE_FILES[0]}; "
                           f"make one with `dataset --out`")
    sprites = load_npy(folder / s_name)
    labels = load_npy(folder / l_name) if (folder / l_name).exists() else None
    sprites, labels = check_sprite_arrays(sprites, labels)
    fix = f"re-create the dataset with `python -m diffusion_utilities dataset --out {folder}`"
    count = meta.get("count", len(sprites))
    if not is_whole(count):
        raise BadInput(f"{folder / 'dataset.json'}: \"count\" {count!r} is not a whole number; {fix}")
    if count != len(sprites):
        raise BadInput(f"{folder / 'dataset.json'} says {count} sprites but {s_name} holds {len(sprites)}; {fix}")
    check_class_names(meta.get("class_names"), folder / "dataset.json", fix)
    names = list(meta.get("class_names") or [])
    if names and len(names) != labels.shape[1]:  # the card would name classes the model is not trained on
        raise BadInput(f"{folder / 'dataset.json'} has {len(names)} class names for the {labels.shape[1]} label "
                       f"columns of {l_name}; give one name per column, or {fix}")
    if labels.shape[1] and not names:  # none recorded (the course's own files): the course's, or numbered
        names = list(CLASS_NAMES) if labels.shape[1] == len(CLASS_NAMES) else [f"class{i}" for i in range(labels.shape[1])]
    return SpriteData(sprites, labels, names, meta)


def _read_meta(folder: Path) -> dict:
    """``folder/dataset.json`` as a dict ({} when there is none), or one BadInput line."""
    path = folder / "dataset.json"
    if not path.exists():
        return {}
    return read_json_object(path, f"re-create the dataset with `python -m diffusion_utilities dataset --out {folder}`")


def _recorded_files(folder: Path, files) -> tuple[str, str]:
    """The (sprites, labels) file names that dataset.json records, checked to be files in ``folder``."""
    fix = f"re-create the dataset with `python -m diffusion_utilities dataset --out {folder}`"
    names_ok = isinstance(files, list) and all(isinstance(f, str) and Path(f).name == f for f in files)
    if not (names_ok and len(files) == 2):
        raise BadInput(f"{folder / 'dataset.json'} has a bad \"files\" entry {files!r}; {fix}")
    for name in files:
        if not (folder / name).is_file():
            raise BadInput(f"{folder / 'dataset.json'} names {name}, which is missing from {folder}; {fix}")
    return files[0], files[1]


def load_npy(path: Path) -> np.ndarray:
    fix = "re-create the dataset with `python -m diffusion_utilities dataset`"
    check_regular_file(path, fix)
    try:
        _check_npy_size(path, fix)
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(f"cannot read {path} as a numpy array ({str(e).splitlines()[0][:120]})") from None


def _check_npy_size(path: Path, fix: str) -> None:
    """The array a .npy header promises must be in the file and fit in memory, checked before loading it.

    np.load allocates what the header says first: a damaged or crafted header would otherwise be
    "out of memory" (or the kernel's kill), not a damaged file.
    """
    with open(path, "rb") as f:
        version = npy.read_magic(f)
        read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if read_header is None:  # a newer format: np.load checks it
            return
        shape, _, dtype = read_header(f)
        if dtype.hasobject:  # np.load refuses it (no pickles)
            return
        need, held = math.prod(shape) * dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell()
    if held < need:
        raise BadInput(f"{path} is truncated: its header promises a {shape} {dtype} array ({need:,} bytes) but it "
                       f"holds {held:,}; {fix}")
    check_memory(need, f"loading {path}", fix)


def check_dataset_out(folder: Path, course_names: bool = False, sheet: bool = False, overwrite: bool = False) -> None:
    """One BadInput line if saving a dataset in ``folder`` would replace a file there, unless ``overwrite``.

    Checked before any work: a dataset of another run, or the course's own download under
    ``course_names``, is replaced only when asked for.
    """
    if overwrite:
        return
    names = [*(COURSE_FILES if course_names else PLAIN_FILES), "dataset.json", *([SHEET] if sheet else [])]
    there = [name for name in names if os.path.lexists(Path(folder) / name)]
    if there:
        raise BadInput(f"{Path(folder) / there[0]} already exists; pass --overwrite (overwrite=True) to replace the "
                       f"dataset there, or choose another --out")


def save_dataset(folder: Path, data: SpriteData, course_names: bool = False, sheet: bool = False,
                 overwrite: bool = False) -> None:
    """Write ``sprites.npy``/``labels.npy`` (or the course's file names) and ``dataset.json``, each atomically.

    ``sheet``: also write ``sheet.png`` (10 sprites per class, or the first 50 of an unlabelled set).
    A folder that already holds any of these files is refused unless ``overwrite`` (see
    ``check_dataset_out``). dataset.json is written last: a run killed before it leaves arrays
    that disagree with the old card's count, which ``load_dataset`` refuses. With ``overwrite``, files ``save_dataset`` wrote here that this one does not (the other file names, a
    sheet of the old sprites) are removed, so the folder holds one dataset and nothing that shows
    another; files it did not write (say, the course's own download) are left alone. A sheet.png
    beside a dataset.json written before sheets were recorded counts as ours.
    """
    folder = Path(folder)
    check_dataset_out(folder, course_names, sheet, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        earlier = _read_meta(folder)
    except BadInput:
        earlier = {}  # an unreadable card owns nothing
    s_name, l_name = COURSE_FILES if course_names else PLAIN_FILES
    for name, array in ((s_name, data.sprites), (l_name, data.labels)):
        atomic_write(folder / name, lambda tmp: _save_npy(tmp, array))
    if sheet:
        _save_sheet(data, folder / SHEET)
    meta = {**data.meta, "class_names": data.class_names, "count": len(data), "files": [s_name, l_name],
            "sheet": SHEET if sheet else None}  # always present, so an older card is told by its absence
    atomic_write(folder / "dataset.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    files = earlier.get("files")
    for name in files if isinstance(files, list) else []:
        if name in PLAIN_FILES + COURSE_FILES and name not in (s_name, l_name):
            (folder / name).unlink(missing_ok=True)
    # ours: recorded as the sheet, or written by `dataset --sheet` before dataset.json recorded sheets
    # (a card of ours, from its "files", without the "sheet" key)
    if not sheet and (earlier.get("sheet") == SHEET or ("files" in earlier and "sheet" not in earlier)):
        (folder / SHEET).unlink(missing_ok=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a temporary file's name
        np.save(f, array)


def _save_sheet(data: SpriteData, path: Path) -> None:
    if data.labels.shape[1]:
        picture = Image.fromarray(sprite_sheet(data.sprites, data.labels, per_class=10, scale=4))
        atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    else:
        save_grid(data.sprites[:50], path, nrow=10)


def procedural_dataset(n: int, seed: int = 0) -> SpriteData:
    """``n`` procedural sprites (see :mod:`diffusion_utilities.sprites`) with their metadata."""
    sprites, labels = make_sprites(n, seed)
    meta = {"source": "procedural", "generator_version": GENERATOR_VERSION, "seed": seed}
    return SpriteData(sprites, labels, list(CLASS_NAMES), meta)
