"""Bring your own sprites: a folder of images or a sprite sheet in, a dataset in the course's layout out.

- ``from_images(DIR)``: PNG/JPEG/GIF/BMP/WebP files found recursively; each first-level subfolder is a class
  (its name is kept), files directly in DIR are unlabelled (an all-zero label row: "no context").
- ``from_sheet(FILE, tile)``: cut a sprite sheet into tiles, skipping empty (single-colour) ones.

Every image is converted to RGB: alpha is composited on a background colour (default white),
greyscale and palette images are expanded (16-bit greyscale scaled to 8 bits), and images that are not ``size``×``size`` are padded
to a square with the background and resized, nearest-neighbour for pixel art or area averaging.
A file that cannot be read is reported by name and skipped, never ending the whole import; so
are images in other formats, and folders that hold an earlier dataset (a ``dataset.json``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .data import SpriteData
from .errors import BadInput
from .files import check_regular_file
from .memory import check_memory
from .checks import is_whole

__all__ = ["from_images", "from_sheet", "parse_tile", "parse_colour", "check_options", "ImportReport", "read_sprites", "read_mask",
           "IMAGE_SUFFIXES", "MAX_SIZE"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
RESIZE = ("nearest", "area")
MAX_SIZE = 256  # sprites: 16 is the course's; a 20,000-pixel side would need 1.2 GB an image


@dataclass
class ImportReport:
    """What an import used and what it skipped, with the reason for each skipped file."""

    used: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"used {len(self.used)} images, skipped {len(self.skipped)}"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def parse_tile(text: str) -> tuple[int, int]:
    """'16' or '16x16' -> (width, height)."""
    parts = str(text).lower().split("x")
    try:
        w, h = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise BadInput(f"--tile takes N or WxH in pixels, e.g. 16 or 16x16; got {text!r}") from None
    if len(parts) > 2 or w < 1 or h < 1:
        raise BadInput(f"--tile takes N or WxH in pixels, e.g. 16 or 16x16; got {text!r}")
    return w, h


def parse_colour(text: str) -> tuple[int, int, int]:
    """'#ffffff', 'ffffff' or '255,255,255' -> (r, g, b)."""
    t = str(text).strip().lstrip("#")
    try:
        if "," in t:
            rgb = tuple(int(v) for v in t.split(","))
        else:
            rgb = tuple(int(t[i:i + 2], 16) for i in (0, 2, 4)) if len(t) == 6 else ()
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise BadInput(f"background colour must be #rrggbb or r,g,b with values 0-255; got {text!r}")
    return rgb


def _to_rgb(img, background: tuple[int, int, int]):
    """Any PIL mode -> RGB, compositing transparency over ``background``."""
    if img.mode.startswith("I"):  # 16-bit greyscale ("I;16", or "I" holding 0..65535): Pillow would clip at 255
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _fit(img, size: int, resize: str, background: tuple[int, int, int]) -> np.ndarray:
    """Pad to a square with the background, then resize to size×size; returns (size, size, 3) uint8."""
    w, h = img.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    if img.size != (size, size):
        img = img.resize((size, size), Image.NEAREST if resize == "nearest" else Image.BOX)
    return np.asarray(img, dtype=np.uint8)


def check_options(size: int, resize: str) -> None:
    """One BadInput line unless ``size`` (the sprites' side) and ``resize`` can be imported to."""
    if resize not in RESIZE:
        raise BadInput(f"unknown --resize {resize!r}; choose nearest (pixel art) or area")
    if not is_whole(size) or size < 4 or size % 4:
        raise BadInput(f"size must be a multiple of 4 (the U-Net halves it twice), got {size!r}")
    if size > MAX_SIZE:
        raise BadInput(f"--size {size} is larger than {MAX_SIZE} pixels, more than a sprite needs; the course's is 16")


def _image_files(folder: Path, exclude: Path | None) -> tuple[list[Path], ImportReport]:
    """The image files below ``folder`` to import, and a report that lists what was left out and why."""
    # realpath, not resolve: it never raises on a symbolic link loop
    root, skip = os.path.realpath(folder), os.path.realpath(exclude) if exclude is not None else None
    if skip is not None and (skip == root or not Path(skip).is_relative_to(root)):
        skip = None  # only a folder inside the image folder holds images that are not sprites
    found = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and not (skip and Path(os.path.realpath(p)).is_relative_to(skip)))
    datasets = sorted({p.parent for p in found if p.name == "dataset.json" and p.parent != folder})
    found = [p for p in found if not any(p.is_relative_to(d) for d in datasets)]
    report = ImportReport()
    for d in datasets:
        report.skipped.append((f"{d.relative_to(folder)}/", "an earlier dataset (it holds dataset.json), not images"))
    known = Image.registered_extensions()  # other image formats are said, not silently passed over
    for p in found:
        if p.suffix.lower() not in IMAGE_SUFFIXES and p.suffix.lower() in known:
            report.skipped.append((str(p.relative_to(folder)), f"{p.suffix} files are not read; convert it to PNG"))
    return [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES], report


def from_images(folder: Path, size: int = 16, resize: str = "nearest",
                background: tuple[int, int, int] = (255, 255, 255), exclude: Path | None = None
                ) -> tuple[SpriteData, ImportReport]:
    """Import every image below ``folder``; first-level subfolders that hold images are the classes.

    ``exclude``: a folder whose images are left out, such as the dataset's own output folder when it
    lies inside ``folder`` (its sheet.png is not a sprite, and must not become a class on a re-run).
    Any other folder that holds a dataset.json (an earlier dataset, with its sheet.png) is left out
    too, and listed in the report, as are images in formats this import does not read.
    """
    check_options(size, resize)
    folder = Path(folder)
    if not folder.is_dir():
        loop = " (a symbolic link that leads nowhere or in a loop)" if folder.is_symlink() else ""
        raise BadInput(f"image folder not found: {folder}{loop}")
    files, report = _image_files(folder, exclude)
    check_memory(2 * len(files) * size * size * 3, f"importing {len(files):,} images at {size}×{size}",
                 "import fewer images, or choose a smaller --size")
    sprites, label_idx = [], []
    # a class is a first-level subfolder with images in it: not an empty one, nor a dataset --out made inside
    classes = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    for path in files:
        name = str(path.relative_to(folder))
        try:
            with Image.open(path) as img:
                img.seek(0)  # a GIF's first frame
                sprites.append(_fit(_to_rgb(img, background), size, resize, background))
        except MemoryError:
            raise  # not the file's fault: the CLI says so in one line
        except Exception as e:  # noqa: BLE001 — any unreadable file is reported and skipped
            report.skipped.append((name, (str(e).splitlines() or [type(e).__name__])[0][:120] or type(e).__name__))
            continue
        report.used.append(name)
        top = path.relative_to(folder).parts
        label_idx.append(classes.index(top[0]) if len(top) > 1 else -1)
    if not sprites:
        raise BadInput(f"no usable images in {folder} ({len(files)} image files found, {len(report.skipped)} "
                       f"skipped); add PNG, JPEG, GIF, BMP or WebP files")
    labels = np.zeros((len(sprites), len(classes)), np.float32)
    for i, k in enumerate(label_idx):
        if k >= 0:
            labels[i, k] = 1
    counts = {c: int(labels[:, i].sum()) for i, c in enumerate(classes)}
    counts["(unlabelled)"] = int((labels.sum(1) == 0).sum())
    meta = {"source": "images", "folder": str(folder), "files": report.used, "counts": counts,
            "skipped": [{"file": f, "reason": r} for f, r in report.skipped], "resize": resize,
            "background": list(background)}
    return SpriteData(np.stack(sprites), labels, classes, meta), report


def from_sheet(path: Path, tile: tuple[int, int] = (16, 16), margin: int = 0, spacing: int = 0, size: int = 16,
               resize: str = "nearest", background: tuple[int, int, int] = (255, 255, 255)
               ) -> tuple[SpriteData, ImportReport]:
    """Cut a sprite sheet into ``tile`` (w, h) tiles, ``margin`` px from the edges and ``spacing`` px apart."""
    check_options(size, resize)
    if margin < 0 or spacing < 0:
        raise BadInput(f"--margin and --spacing must be ≥ 0, got {margin} and {spacing}")
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"sprite sheet not found: {path}")
    try:
        with Image.open(path) as img:
            sheet = _to_rgb(img, background)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"cannot read sprite sheet {path}: {(str(e).splitlines() or ['unreadable'])[0][:120]}") from None
    tw, th = tile
    cols = (sheet.width - 2 * margin + spacing) // (tw + spacing)
    rows = (sheet.height - 2 * margin + spacing) // (th + spacing)
    if cols < 1 or rows < 1:
        raise BadInput(f"{path} is {sheet.width}×{sheet.height}: too small for {tw}×{th} tiles with margin {margin}")
    report, sprites = ImportReport(), []
    for r in range(rows):
        for c in range(cols):
            x, y = margin + c * (tw + spacing), margin + r * (th + spacing)
            crop = sheet.crop((x, y, x + tw, y + th))
            name = f"{path.name}[row {r}, col {c}]"
            if len(crop.getcolors(maxcolors=2) or [0, 0]) == 1:  # one colour only: an empty tile
                report.skipped.append((name, "empty (single colour)"))
                continue
            sprites.append(_fit(crop, size, resize, background))
            report.used.append(name)
    if not sprites:
        raise BadInput(f"all {rows * cols} tiles of {path} are empty (single colour); check --tile, --margin, --spacing")
    meta = {"source": "sheet", "sheet": str(path), "tile": list(tile), "margin": margin, "spacing": spacing,
            "files": report.used, "counts": {"(unlabelled)": len(sprites)}, "skipped_empty": len(report.skipped)}
    return SpriteData(np.stack(sprites), np.zeros((len(sprites), 0), np.float32), [], meta), report


def read_sprites(path: Path, size: int, resize: str | None = None,
                 background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, list[Path]]:
    """The image ``path``, or every image in the folder ``path`` (not below it), as (N, size, size, 3) uint8 for
    ``edit``. An image of another size is refused with the size it needs, unless ``resize`` says how to fit it."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"--input {path} not found; give a {size}×{size} PNG or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise BadInput(f"--input {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    check_memory(len(files) * size * size * 3 * 8, f"reading {len(files):,} images", "edit fewer at a time")
    sprites = []
    for f in files:
        try:
            with _open_checked(f, "give a PNG") as img:
                if img.size != (size, size) and resize is None:  # from the header: before decoding it
                    raise BadInput(f"{f} is {img.size[0]}×{img.size[1]} and the model draws {size}×{size} sprites; give a "
                                   f"{size}×{size} image, or add --resize nearest (pixel art) or --resize area to fit it")
                img.load()
                rgb = _to_rgb(img, background)
        except BadInput:
            raise
        except (OSError, SyntaxError, ValueError) as e:
            raise BadInput(f"cannot read {f} as an image ({e}); give a PNG") from None
        sprites.append(_fit(rgb, size, resize or "nearest", background))
    return np.stack(sprites), files


MAX_INPUT_SIDE = 4096  # an image to edit (or its mask), before --resize: a 12,000² PNG of 140 kB decodes to 1.4 GB


def _open_checked(path: Path, fix: str):
    """Image.open(path), not yet decoded, once it is known to be a regular file (a FIFO would block) of at most
    MAX_INPUT_SIDE pixels a side (read from its header: a few bytes can promise gigabytes)."""
    check_regular_file(path, fix)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is tighter than Pillow's
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise BadInput(f"{path} is too large an image (over {MAX_INPUT_SIDE}×{MAX_INPUT_SIDE} pixels); {fix}") from None
    if max(img.size) > MAX_INPUT_SIDE:
        img.close()
        raise BadInput(f"{path} is {img.size[0]}×{img.size[1]}, larger than the {MAX_INPUT_SIDE}×{MAX_INPUT_SIDE} an "
                       f"input may be; {fix}")
    return img


def read_mask(path: Path, size: int) -> np.ndarray:
    """A mask image as (size, size) float32, 1 where pixels are kept and 0 where white pixels mark what to fill
    (the usual convention of inpainting tools: paint over what should change). Only black and white are taken."""
    path = Path(path)
    if not os.path.lexists(path):
        raise BadInput(f"--mask {path} not found")
    try:
        with _open_checked(path, "give a black-and-white PNG") as img:
            if img.size != (size, size):  # from the header: before decoding it
                raise BadInput(f"the mask {path} is {img.size[0]}×{img.size[1]}; it must be {size}×{size}, as the sprites")
            grey = np.asarray(_to_rgb(img, (0, 0, 0)).convert("L"), dtype=np.uint8)
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"cannot read the mask {path} as an image ({e}); give a black-and-white PNG") from None
    if not np.isin(grey, (0, 255)).all():
        raise BadInput(f"the mask {path} has grey pixels; use only black (keep) and white (fill)")
    return (grey == 0).astype(np.float32)
