"""The layout of a data folder (the MFNet dataset's, as the released code reads it) and its file readers.

``<split>.txt`` (one frame name per line), ``images/NAME.png`` (4-channel uint8: R, G, B, thermal),
``labels/NAME.png`` (uint8 class ids) and, optionally, ``edge_4x/NAME.png`` (binary semantic-edge map at
1/4 of the label size, or at the label size) with ``edge_4x/edges.json`` ``{"radius": r, "stride": 4}``, the
disc radius its writer used (absent: the release's radius, :data:`~util.data.mfnet.EDGE_RADIUS`). The loader
needs that radius to know which edge cells an ignored pixel can reach (:func:`read_edge_radius`).

The channel order is handled here only: OpenCV holds colour as B, G, R(, A), our arrays as R, G, B(,
thermal), so every conversion between the two goes through :func:`rgb_from_cv2` / :func:`cv2_from_rgb`.
Small files (split lists, the edge record) are written atomically (util.files.atomic_write).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from util.data.media import quiet_media_logs
from util.data.mfnet import EDGE_RADIUS, EDGE_STRIDE
from util.files import atomic_write, write_if_changed

quiet_media_logs()  # OpenCV's own warnings off: our errors name the file (media.py)

PathLike = Union[str, os.PathLike]

IMAGE_DIR, LABEL_DIR, EDGE_DIR = "images", "labels", "edge_4x"
EDGE_RECORD = "edges.json"  # inside EDGE_DIR
THERMAL = 3  # index of the thermal channel of a 4-channel frame, in our order and in OpenCV's alike

# PIL modes that hold one 8-bit channel of integer values ("P" palette PNGs store class ids as indices).
SINGLE_8BIT = ("L", "P", "1")
_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "I;16": 1, "F": 1, "LA": 2, "PA": 2,
             "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4}


class DatasetError(ValueError):
    """A data folder or one of its files is missing, unreadable or malformed."""


def describe_mode(mode: str) -> str:
    """A PIL image mode in words, for error lines ("3 channel(s) (mode RGB)")."""
    if mode in ("I", "I;16", "F"):
        return f"1 channel of {'16' if mode == 'I;16' else '32'}-bit values (mode {mode})"
    return f"{_CHANNELS.get(mode, '?')} channel(s) (mode {mode})"


def rgb_from_cv2(image: np.ndarray) -> np.ndarray:
    """R, G, B(, A) of an (H, W, 3 or 4) picture in OpenCV's B, G, R(, A) order (a 4th channel stays last)."""
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def cv2_from_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's B, G, R(, A) order of an (H, W, 3 or 4) R, G, B(, A) picture, e.g. before cv2 encodes it."""
    return cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)


def luma_from_cv2(image: np.ndarray) -> np.ndarray:
    """(H, W) luma of an (H, W, 3) picture in OpenCV's B, G, R order (the weights follow the channels)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def load_image_file(path: PathLike) -> np.ndarray:
    """Return the (H, W, 4) uint8 image in R, G, B, thermal order; DatasetError names the file otherwise."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: missing, unreadable or corrupt PNG (expected a 4-channel uint8 image)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise DatasetError(f"{path}: expected a 4-channel uint8 image (R, G, B, thermal), "
                           f"got {channels} channel(s) of {image.dtype}")
    return rgb_from_cv2(image)


def write_image_file(path: PathLike, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Write an (H, W, 4) uint8 R, G, B, thermal image as the PNG :func:`load_image_file` reads back
    (``params``: cv2.imencode's, e.g. the PNG compression); OSError names the file when it fails."""
    write_png(path, cv2_from_rgb(image), params)


def write_png(path: PathLike, array: np.ndarray, params: Sequence[int] = ()) -> None:
    """Write ``array`` as a PNG exactly as cv2 holds it (a label or edge map; colour pictures go through
    :func:`write_image_file`); OSError names the file when it fails."""
    ok, data = cv2.imencode(".png", array, list(params))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    data.tofile(str(path))


def load_single_channel(path: PathLike, what: str) -> np.ndarray:
    """The (H, W) uint8 values of a single-channel 8-bit PNG; DatasetError names the file and ``what`` it is."""
    try:
        with Image.open(path) as im:
            if im.mode not in SINGLE_8BIT:
                raise DatasetError(f"{path}: expected a single-channel 8-bit {what}, got {describe_mode(im.mode)}")
            # PIL, not cv2: cv2 would expand palette PNGs to colour instead of returning the indices.
            return np.array(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as exc:  # PIL signals bad files with OSError, SyntaxError, ValueError, zlib/struct errors...
        raise DatasetError(f"{path}: missing, unreadable or corrupt PNG ({exc})") from None


def load_label_file(path: PathLike) -> np.ndarray:
    """Return the (H, W) uint8 class-id map; DatasetError names the file when it is unreadable or not single-channel."""
    return load_single_channel(path, "label map")


def load_edge_file(path: PathLike) -> np.ndarray:
    """Return the binary edge map as uint8 0/1 (any value > 0 is an edge, so 0/1 and 0/255 files both work)."""
    return (load_single_channel(path, "edge map") > 0).astype(np.uint8)


def edge_size(label_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the 1/4-resolution edge map for a label of size ``label_hw``: ceil(H/4), ceil(W/4)."""
    return (-(-label_hw[0] // EDGE_STRIDE), -(-label_hw[1] // EDGE_STRIDE))


def split_path(data_dir: PathLike, split: str) -> Path:
    """The split file of ``split`` in ``data_dir``: ``data_dir/<split>.txt`` (the one place that names it)."""
    return Path(data_dir) / f"{split}.txt"


def read_split(data_dir: PathLike, split: str) -> list[str]:
    """Frame names listed in ``data_dir/<split>.txt`` (blank lines ignored); DatasetError if the file is missing
    or lists a name that leaves the data folder (see :func:`outside_names`)."""
    path = split_path(data_dir, split)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise DatasetError(f"{path}: split file not found (expected one frame name per line)") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    problems = outside_names(data_dir, names, path)
    if problems:
        raise DatasetError("\n".join(problems))
    return names


def write_split(data_dir: PathLike, split: str, names: Sequence[str]) -> Path:
    """Write ``data_dir/<split>.txt`` listing ``names``, one a line, atomically; returns its path."""
    return atomic_write(split_path(data_dir, split), lambda f: f.write("".join(f"{n}\n" for n in names)))


def write_edge_record(data_dir: PathLike, radius: float) -> Path:
    """Record in ``data_dir/edge_4x/edges.json`` the disc radius the edge maps there were made with (the
    writer of edge maps calls it, so that the loader reads the radius back); returns its path."""
    doc = {"radius": radius, "stride": EDGE_STRIDE}
    path = Path(data_dir) / EDGE_DIR / EDGE_RECORD
    write_if_changed(path, json.dumps(doc) + "\n")  # the same radius again: the file is left as it is
    return path


def read_edge_radius(data_dir: PathLike) -> float:
    """The disc radius of ``data_dir``'s edge maps from ``edge_4x/edges.json``; the release's radius
    (EDGE_RADIUS) when there is no record. DatasetError names the file when it is malformed."""
    path = Path(data_dir) / EDGE_DIR / EDGE_RECORD
    if not path.is_file():
        return EDGE_RADIUS
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        radius, stride = doc["radius"], doc["stride"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: unreadable edge record ({exc}); expected {{\"radius\": R, \"stride\": "
                           f"{EDGE_STRIDE}}} (remake it with python -m util.edges --overwrite)") from None
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise DatasetError(f"{path}: radius {radius!r} is not a number >= 0")
    if stride != EDGE_STRIDE:
        raise DatasetError(f"{path}: stride {stride!r}, expected {EDGE_STRIDE} (edge maps at 1/{EDGE_STRIDE} of "
                           f"the label size)")
    return radius


def frame_sizes(data_dir: PathLike, split: str = "train") -> set[tuple[int, int]]:
    """The (height, width) of the images of ``split`` (headers only; unreadable files are left out)."""
    sizes = set()
    for name in read_split(data_dir, split):
        try:
            with Image.open(Path(data_dir) / IMAGE_DIR / f"{name}.png") as im:
                sizes.add((im.height, im.width))
        except Exception:  # the dataset check reports it
            pass
    return sizes


def outside_names(data_dir: PathLike, names: Sequence[str], listed_in: Optional[Path] = None) -> list[str]:
    """One problem per frame name that would read or write outside ``data_dir``, before anything is opened.

    A frame name is a plain file name: no folder separator, not ``.`` or ``..``, no NUL. Its files
    (images/, labels/, edge_4x/ NAME.png) must not be links that resolve outside the data folder or
    outside that sub-folder (a linked images/ folder is fine; a linked file that leads elsewhere is not)."""
    data_dir = Path(data_dir)
    where = f"{listed_in}: " if listed_in else ""
    problems: list[str] = []
    for name in names:
        if name in (".", "..") or any(c in name for c in "/\\\0") or os.path.isabs(name):
            problems.append(f"{where}frame name {name!r} is not a plain file name (it would leave {data_dir}); "
                            f"split lists hold names such as 00001D, without folders")
            continue
        for sub in (IMAGE_DIR, LABEL_DIR, EDGE_DIR):
            path = data_dir / sub / f"{name}.png"
            if not path.is_symlink():
                continue
            target = path.resolve()
            if not any(root in target.parents for root in (data_dir.resolve(), (data_dir / sub).resolve())):
                problems.append(f"{path}: a link to {target}, outside {data_dir}; frames must stay inside the "
                                f"data folder (copy the file in, or link the whole {sub}/ folder)")
    return problems
