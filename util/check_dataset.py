"""Read MFNet-format frame files and check a data folder before training.

Folder layout (SPEC.md section 1): ``<split>.txt`` (one frame name per line),
``images/NAME.png`` (4-channel uint8: R, G, B, thermal), ``labels/NAME.png``
(uint8 class ids) and, optionally, ``edge_4x/NAME.png`` (binary semantic-edge
map at 1/4 of the label size, or at the label size).

The check only reads files; it never writes, renames or caches anything.

    python -m util.check_dataset --data-dir dataset/synthetic [--splits train val] [--need-edges]
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from util.mfnet import EDGE_STRIDE, N_CLASS, STANDARD_SPLITS

PathLike = Union[str, os.PathLike]

IMAGE_DIR, LABEL_DIR, EDGE_DIR = "images", "labels", "edge_4x"

# PIL modes that hold one 8-bit channel of integer values ("P" palette PNGs store class ids as indices).
_SINGLE_8BIT = ("L", "P", "1")
_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "I;16": 1, "F": 1, "LA": 2, "PA": 2,
             "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4}


class DatasetError(ValueError):
    """A data folder or one of its files is missing, unreadable or malformed."""


def _describe_mode(mode: str) -> str:
    if mode in ("I", "I;16", "F"):
        return f"1 channel of {'16' if mode == 'I;16' else '32'}-bit values (mode {mode})"
    return f"{_CHANNELS.get(mode, '?')} channel(s) (mode {mode})"


def load_image_file(path: PathLike) -> np.ndarray:
    """Return the (H, W, 4) uint8 image in R, G, B, thermal order; DatasetError names the file otherwise."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: missing, unreadable or corrupt PNG (expected a 4-channel uint8 image)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise DatasetError(f"{path}: expected a 4-channel uint8 image (R, G, B, thermal), "
                           f"got {channels} channel(s) of {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)  # cv2 decodes 4-channel PNGs as B, G, R, A


def _load_single_channel(path: PathLike, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in _SINGLE_8BIT:
                raise DatasetError(f"{path}: expected a single-channel 8-bit {what}, got {_describe_mode(im.mode)}")
            # PIL, not cv2: cv2 would expand palette PNGs to colour instead of returning the indices.
            return np.array(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as exc:  # PIL signals bad files with OSError, SyntaxError, ValueError, zlib/struct errors...
        raise DatasetError(f"{path}: missing, unreadable or corrupt PNG ({exc})") from None


def load_label_file(path: PathLike) -> np.ndarray:
    """Return the (H, W) uint8 class-id map; DatasetError names the file when it is unreadable or not single-channel."""
    return _load_single_channel(path, "label map")


def load_edge_file(path: PathLike) -> np.ndarray:
    """Return the binary edge map as uint8 0/1 (any value > 0 is an edge, so 0/1 and 0/255 files both work)."""
    return (_load_single_channel(path, "edge map") > 0).astype(np.uint8)


def read_split(data_dir: PathLike, split: str) -> list[str]:
    """Frame names listed in ``data_dir/<split>.txt`` (blank lines ignored); DatasetError if the file is missing."""
    path = Path(data_dir) / f"{split}.txt"
    try:
        text = path.read_text()
    except OSError:
        raise DatasetError(f"{path}: split file not found (expected one frame name per line)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def edge_size(label_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the 1/4-resolution edge map for a label of size ``label_hw``: ceil(H/4), ceil(W/4)."""
    return (-(-label_hw[0] // EDGE_STRIDE), -(-label_hw[1] // EDGE_STRIDE))


def _header_size(path: Path, modes, expected: str, decode: bool, problems: list[str]) -> Optional[tuple[int, int]]:
    """(height, width) of a PNG whose PIL mode is one of `modes`; else None, with the problem appended."""
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                problems.append(f"{path}: expected {expected}, got {_describe_mode(im.mode)}")
                return None
            if decode:
                im.load()
            return (im.height, im.width)
    except Exception as exc:
        problems.append(f"{path}: unreadable or corrupt PNG ({exc})")
        return None


def _check_frame(data_dir: Path, name: str, n_class: int, need_edges: bool, decode_images: bool) -> list[str]:
    """Problems of one frame, each naming the file."""
    problems: list[str] = []
    image_path = data_dir / IMAGE_DIR / f"{name}.png"
    label_path = data_dir / LABEL_DIR / f"{name}.png"
    edge_path = data_dir / EDGE_DIR / f"{name}.png"

    image_hw = None
    if not image_path.is_file():
        problems.append(f"{image_path}: image file not found")
    else:
        image_hw = _header_size(image_path, {"RGBA"}, "a 4-channel uint8 image (R, G, B, thermal)",
                                decode_images, problems)

    label_hw = None
    if not label_path.is_file():
        problems.append(f"{label_path}: label file not found")
    else:
        try:
            label = load_label_file(label_path)
            label_hw = label.shape
            top = int(label.max())
            if top >= n_class:
                bad = np.unique(label[label >= n_class]).tolist()
                problems.append(f"{label_path}: label ids {bad} outside 0..{n_class - 1}")
        except DatasetError as exc:
            problems.append(str(exc))

    if image_hw and label_hw and image_hw != label_hw:
        problems.append(f"{image_path}: image size {image_hw[0]}x{image_hw[1]} differs from "
                        f"label size {label_hw[0]}x{label_hw[1]} ({label_path})")

    if edge_path.is_file():
        hw = _header_size(edge_path, _SINGLE_8BIT, "a single-channel 8-bit edge map", decode_images, problems)
        if hw and label_hw and hw not in (edge_size(label_hw), tuple(label_hw)):
            eh, ew = edge_size(label_hw)
            problems.append(f"{edge_path}: edge map size {hw[0]}x{hw[1]}, expected {eh}x{ew} "
                            f"(label size / {EDGE_STRIDE}, rounded up) or {label_hw[0]}x{label_hw[1]}")
    elif need_edges:
        problems.append(f"{edge_path}: edge map not found (edges are required)")
    return problems


def check_dataset(data_dir: PathLike, splits: Optional[Sequence[str]] = None, n_class: int = N_CLASS,
                  need_edges: bool = False, decode_images: bool = True, workers: Optional[int] = None) -> list[str]:
    """Every problem of ``data_dir`` at once (empty list when the folder is usable), each naming the file.

    ``splits`` defaults to the five standard splits. Existing edge maps are always checked; missing ones
    count only when ``need_edges``. ``decode_images=False`` reads only image and edge headers (size,
    channels), which is much faster but misses corrupt pixel data; label maps are always decoded.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return [f"{data_dir}: data folder not found"]
    problems: list[str] = []
    names: dict[str, None] = {}
    for split in (STANDARD_SPLITS if splits is None else splits):
        try:
            split_names = read_split(data_dir, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if not split_names:
            problems.append(f"{data_dir / (split + '.txt')}: split file lists no frames")
        seen: set[str] = set()
        for name in split_names:
            if name in seen:
                problems.append(f"{data_dir / (split + '.txt')}: frame {name} listed more than once")
            seen.add(name)
            names[name] = None
    for sub in (IMAGE_DIR, LABEL_DIR):
        if names and not (data_dir / sub).is_dir():
            problems.append(f"{data_dir / sub}: folder not found")
    if need_edges and names and not (data_dir / EDGE_DIR).is_dir():
        problems.append(f"{data_dir / EDGE_DIR}: folder not found (edges are required)")
        need_edges = False  # one line for the folder rather than one per frame

    workers = workers or min(8, os.cpu_count() or 1)  # decoding (zlib) releases the GIL
    with ThreadPoolExecutor(workers) as pool:
        for frame_problems in pool.map(
                lambda n: _check_frame(data_dir, n, n_class, need_edges, decode_images), names):
            problems.extend(frame_problems)
    return problems


def verify_dataset(data_dir: PathLike, splits: Optional[Sequence[str]] = None, n_class: int = N_CLASS,
                   need_edges: bool = False, decode_images: bool = True) -> None:
    """Raise DatasetError listing every problem found by :func:`check_dataset`; return None when all is well."""
    problems = check_dataset(data_dir, splits, n_class, need_edges, decode_images)
    if problems:
        raise DatasetError(f"dataset check failed for {data_dir}: {len(problems)} problem(s)\n"
                           + "\n".join(problems))


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Check an MFNet-format data folder; prints OK or every problem.")
    parser.add_argument("--data-dir", required=True, help="folder holding images/, labels/, [edge_4x/] and <split>.txt")
    parser.add_argument("--splits", nargs="+", default=None, help=f"splits to check (default: {' '.join(STANDARD_SPLITS)})")
    parser.add_argument("--n-class", type=int, default=N_CLASS, help="number of classes (label ids 0..n-1)")
    parser.add_argument("--need-edges", action="store_true", help="require edge_4x/NAME.png for every frame")
    parser.add_argument("--quick", action="store_true", help="read only image/edge headers (labels are still decoded)")
    args = parser.parse_args(None if argv is None else list(argv))

    problems = check_dataset(args.data_dir, args.splits, args.n_class, args.need_edges, not args.quick)
    if problems:
        print(f"dataset check failed for {args.data_dir}: {len(problems)} problem(s)")
        print("\n".join(problems))
        return 1
    splits = list(STANDARD_SPLITS if args.splits is None else args.splits)
    counts = {s: len(read_split(args.data_dir, s)) for s in splits}
    names = {n for s in splits for n in read_split(args.data_dir, s)}
    n_edges = sum((Path(args.data_dir) / EDGE_DIR / f"{n}.png").is_file() for n in names)
    print(f"OK: {args.data_dir}: " + ", ".join(f"{s} {n}" for s, n in counts.items())
          + f" frames; edge maps for {n_edges} of {len(names)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
