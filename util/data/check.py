"""Check a data folder before training (its layout and file readers: util/data/layout.py).

The check decodes every file and never writes into the data folder. Files that passed are
remembered by (path, size, mtime) in a small JSON file outside it (see :func:`cache_path`), so a
second check decodes only what changed.

    python -m util.check_dataset --data-dir dataset/synthetic [--splits train val] [--need-edges] [--no-cache]

An unlabeled set (dataset.json ``"unlabeled": true``) is checked by :func:`check_unlabeled` instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from util.data import layout
from util.data.info import is_unlabeled_set, load_dataset_info
from util.data.layout import (
    EDGE_DIR,
    IMAGE_DIR,
    LABEL_DIR,
    SINGLE_8BIT,
    DatasetError,
    describe_mode,
    edge_size,
    read_split,
    split_path,
)
from util.data.mfnet import EDGE_STRIDE, STANDARD_SPLITS
from util.files import atomic_write, cache_dir
from util.options import ArgumentParser, integer, split_name

PathLike = Union[str, os.PathLike]


def cache_path(data_dir: PathLike) -> Path:
    """JSON file remembering the files of ``data_dir`` that passed the check.

    It lives in :func:`cache_dir` (never inside the data folder), one file per data folder, named from
    a hash of its absolute path.
    """
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:20]
    return cache_dir() / f"check-{digest}.json"


class _CheckCache:
    """Facts of files that passed the check, keyed by path relative to the data folder and valid
    while the file's (size, mtime_ns) is unchanged. A cache that cannot be read or written is ignored."""

    VERSION = 1

    def __init__(self, data_dir: Path, enabled: bool) -> None:
        self.data_dir = str(data_dir.resolve())
        self.path = cache_path(data_dir) if enabled else None
        self.files: dict[str, dict] = self._load() if enabled else {}
        self.dirty = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        try:
            doc = json.loads(self.path.read_text())
            if doc["version"] == self.VERSION and doc["data_dir"] == self.data_dir and isinstance(doc["files"], dict):
                return doc["files"]
        except Exception:  # absent, unreadable or malformed: start afresh
            pass
        return {}

    def get(self, rel: str, stat: os.stat_result, keys: Sequence[str]) -> Optional[dict]:
        """The entry of an unchanged file holding lists of ints under ``keys``, else None."""
        entry = self.files.get(rel)
        if not (isinstance(entry, dict) and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns):
            return None
        ok = all(isinstance(entry.get(k), list) and all(type(v) is int for v in entry[k]) for k in keys)
        return entry if ok else None

    def put(self, rel: str, stat: os.stat_result, facts: dict) -> None:
        if self.path is not None:
            with self._lock:
                self.files[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **facts}
                self.dirty = True

    def save(self) -> None:
        """Write atomically (temporary file, then os.replace), only when something new was learnt."""
        if self.path is None or not self.dirty:
            return
        doc = {"version": self.VERSION, "data_dir": self.data_dir, "files": self.files}
        with contextlib.suppress(Exception):  # a cache that cannot be written is ignored
            atomic_write(self.path, lambda f: json.dump(doc, f, separators=(",", ":")))


def _inspect_image(path: Path, decode: bool) -> dict:
    """{"hw": [h, w]} of a 4-channel uint8 image; DatasetError naming the file otherwise.

    The header's mode must be RGBA (cv2 would turn grey+alpha or palette PNGs into 4 channels);
    ``decode`` then decodes the pixels with the training loader's decoder, which catches
    truncated data and 16-bit images (PIL reports those as RGBA too).
    """
    expected = "a 4-channel uint8 image (R, G, B, thermal)"
    try:
        with Image.open(path) as im:
            mode, hw = im.mode, [im.height, im.width]
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable or corrupt PNG ({exc})") from None
    if mode != "RGBA":
        raise DatasetError(f"{path}: expected {expected}, got {describe_mode(mode)}")
    if decode:
        image = layout.load_image_file(path)
        hw = list(image.shape[:2])
    return {"hw": hw}


def _inspect_label(path: Path) -> dict:
    """{"hw": [h, w], "ids": the class ids present}; kept per file so any n_class can be judged from the cache."""
    label = layout.load_label_file(path)
    return {"hw": list(label.shape), "ids": np.flatnonzero(np.bincount(label.ravel(), minlength=256)).tolist()}


def _inspect_edge(path: Path, decode: bool) -> dict:
    """{"hw": [h, w]} of a single-channel 8-bit edge map (pixels decoded when ``decode``)."""
    if decode:
        return {"hw": list(layout.load_single_channel(path, "edge map").shape)}
    try:
        with Image.open(path) as im:
            mode, hw = im.mode, [im.height, im.width]
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable or corrupt PNG ({exc})") from None
    if mode not in SINGLE_8BIT:
        raise DatasetError(f"{path}: expected a single-channel 8-bit edge map, got {describe_mode(mode)}")
    return {"hw": hw}


def _facts(data_dir: Path, rel: str, inspect: Callable[[Path], dict], decoded: bool, cache: _CheckCache,
           problems: list[str]) -> tuple[bool, Optional[dict]]:
    """(exists, facts) of ``data_dir/rel``: from the cache when the file is unchanged, else from ``inspect``
    (cached only when ``decoded``, i.e. its pixels were checked). A problem is appended and facts is None
    when the file is bad."""
    path = data_dir / rel
    try:
        stat = path.stat()
    except OSError:
        return False, None
    if not S_ISREG(stat.st_mode):
        return False, None
    facts = cache.get(rel, stat, ("hw", "ids") if rel.startswith(LABEL_DIR + "/") else ("hw",))
    if facts is None:
        try:
            facts = inspect(path)
        except DatasetError as exc:
            problems.append(str(exc))
            return True, None
        if decoded:
            cache.put(rel, stat, facts)
    return True, facts


def _check_frame(data_dir: Path, name: str, n_class: int, need_edges: bool, decode_images: bool,
                 cache: _CheckCache) -> list[str]:
    """Problems of one frame, each naming the file."""
    problems: list[str] = []
    image_rel, label_rel, edge_rel = (f"{sub}/{name}.png" for sub in (IMAGE_DIR, LABEL_DIR, EDGE_DIR))
    image_path, label_path, edge_path = (data_dir / rel for rel in (image_rel, label_rel, edge_rel))

    found, image = _facts(data_dir, image_rel, lambda p: _inspect_image(p, decode_images), decode_images,
                          cache, problems)
    if not found:
        problems.append(f"{image_path}: image file not found")
    found, label = _facts(data_dir, label_rel, _inspect_label, True, cache, problems)
    if not found:
        problems.append(f"{label_path}: label file not found")
    if label and max(label["ids"], default=0) >= n_class:
        bad = [i for i in label["ids"] if i >= n_class]
        problems.append(f"{label_path}: label ids {bad} outside 0..{n_class - 1}")

    label_hw = tuple(label["hw"]) if label else None
    if image and label and tuple(image["hw"]) != label_hw:
        ih, iw = image["hw"]
        problems.append(f"{image_path}: image size {ih}x{iw} differs from "
                        f"label size {label_hw[0]}x{label_hw[1]} ({label_path})")

    found, edge = _facts(data_dir, edge_rel, lambda p: _inspect_edge(p, decode_images), decode_images,
                         cache, problems)
    if edge and label_hw and tuple(edge["hw"]) not in (edge_size(label_hw), label_hw):
        (h, w), (eh, ew) = edge["hw"], edge_size(label_hw)
        problems.append(f"{edge_path}: edge map size {h}x{w}, expected {eh}x{ew} "
                        f"(label size / {EDGE_STRIDE}, rounded up) or {label_hw[0]}x{label_hw[1]}")
    elif not found and need_edges:
        problems.append(f"{edge_path}: edge map not found (edges are required)")
    return problems


def _split_frames(data_dir: Path, splits: Sequence[str], problems: list[str]) -> list[str]:
    """Frame names of all ``splits``, each once, in order; split-file problems appended."""
    names: dict[str, None] = {}
    for split in splits:
        try:
            split_names = read_split(data_dir, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if not split_names:
            problems.append(f"{split_path(data_dir, split)}: split file lists no frames")
        seen: set[str] = set()
        for name in split_names:
            if name in seen:
                problems.append(f"{split_path(data_dir, split)}: frame {name} listed more than once")
            seen.add(name)
            names[name] = None
    return list(names)


def check_dataset(data_dir: PathLike, splits: Optional[Sequence[str]], n_class: int,
                  need_edges: bool = False, decode_images: bool = True, workers: Optional[int] = None,
                  progress: bool = True, use_cache: bool = True, edge_record: bool = False) -> list[str]:
    """Every problem of ``data_dir`` at once (empty list when the folder is usable), each naming the file.

    ``splits``: None for the five standard splits; each frame is checked once. Images must be
    4-channel uint8, labels and edge maps single-channel 8-bit, labels the size of their image with
    ids < ``n_class``, edge maps 1/4 of the label size (rounded up) or the label size. Existing edge
    maps are always checked; missing ones count only when ``need_edges``. By default every pixel is
    decoded; ``decode_images=False`` reads only image and edge headers (labels are still decoded).
    ``progress`` shows a progress bar on stderr. ``use_cache``: files that passed a decoding check
    before and have not changed since (same size and mtime) are not decoded again (see :func:`cache_path`).
    ``edge_record``: also read ``edge_4x/edges.json`` when the folder has ``edge_4x/`` (the radius of its edge
    maps, which a loader with an ignored class needs: layout.read_edge_radius); a malformed one is one problem.
    The command does; MFDataset asks for it only when it uses the radius.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return [f"{data_dir}: data folder not found"]
    problems: list[str] = []
    names = _split_frames(data_dir, STANDARD_SPLITS if splits is None else splits, problems)
    if edge_record and (data_dir / EDGE_DIR).is_dir():
        try:
            layout.read_edge_radius(data_dir)
        except DatasetError as exc:
            problems.append(str(exc))
    for sub in (IMAGE_DIR, LABEL_DIR):
        if names and not (data_dir / sub).is_dir():
            problems.append(f"{data_dir / sub}: folder not found")
    if need_edges and names and not (data_dir / EDGE_DIR).is_dir():
        problems.append(f"{data_dir / EDGE_DIR}: folder not found (edges are required)")
        need_edges = False  # one line for the folder rather than one per frame

    cache = _CheckCache(data_dir, use_cache)
    workers = workers or min(8, os.cpu_count() or 1)  # decoding (zlib) releases the GIL
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(names), desc=f"checking {data_dir}", unit="frame",
                                                    file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        for frame_problems in pool.map(
                lambda n: _check_frame(data_dir, n, n_class, need_edges, decode_images, cache), names):
            problems.extend(frame_problems)
            bar.update()
    cache.save()
    return problems


def verify_dataset(data_dir: PathLike, splits: Optional[Sequence[str]], n_class: int,
                   need_edges: bool = False, decode_images: bool = True, progress: bool = True,
                   use_cache: bool = True, edge_record: bool = False) -> None:
    """Raise DatasetError listing every problem found by :func:`check_dataset`; return None when all is well."""
    problems = check_dataset(data_dir, splits, n_class, need_edges, decode_images, progress=progress,
                             use_cache=use_cache, edge_record=edge_record)
    if problems:
        raise DatasetError(f"dataset check failed for {data_dir}: {len(problems)} problem(s)\n"
                           + "\n".join(problems))


def check_unlabeled(data_dir: PathLike, sizes: Optional[set[tuple[int, int]]] = None, reference: str = "",
                    progress: bool = True, use_cache: bool = True) -> list[str]:
    """Every problem of an unlabeled set ``data_dir`` (``images/NAME.png`` for the names in ``train.txt``;
    a labelled folder works too: its train split's images are checked, its labels never opened).

    Every image is decoded once (then remembered in the check cache like the labelled frames) and must be
    4-channel uint8. ``sizes``: the sizes allowed (those of the labelled frames, named ``reference``);
    frames of another size give one line. A folder without frames gives one line.
    """
    data_dir = Path(data_dir)
    layout = "an unlabeled set holds images/NAME.png (4-channel R, G, B, thermal) and train.txt listing the NAMEs"
    if not data_dir.is_dir():
        return [f"{data_dir}: folder not found ({layout})"]
    has_images, has_list = (data_dir / IMAGE_DIR).is_dir(), split_path(data_dir, "train").is_file()
    if not has_images and not has_list:
        return [f"{data_dir}: holds no frames ({layout})"]
    if not has_images:
        return [f"{data_dir / IMAGE_DIR}: folder not found ({layout})"]
    problems: list[str] = []
    names = _split_frames(data_dir, ["train"], problems)
    if problems or not names:
        return problems or [f"{split_path(data_dir, 'train')}: split file lists no frames"]
    cache = _CheckCache(data_dir, use_cache)
    other: dict[tuple[int, int], list[str]] = {}

    def one(name: str) -> list[str]:
        found_problems: list[str] = []
        rel = f"{IMAGE_DIR}/{name}.png"
        found, facts = _facts(data_dir, rel, lambda p: _inspect_image(p, True), True, cache, found_problems)
        if not found:
            found_problems.append(f"{data_dir / rel}: image file not found")
        elif facts and sizes and tuple(facts["hw"]) not in sizes:
            other.setdefault(tuple(facts["hw"]), []).append(rel)
        return found_problems

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(names), desc=f"checking {data_dir}", unit="frame",
                                                    file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        for frame_problems in pool.map(one, names):
            problems.extend(frame_problems)
            bar.update()
    cache.save()
    if other:  # one line, however many frames; it names the first in name order (threads finish in any order)
        n = sum(map(len, other.values()))
        (h, w), rels = next(iter(sorted(other.items())))
        want = ", ".join(f"{a}x{b}" for a, b in sorted(sizes))
        problems.append(f"{data_dir / min(rels)}: {n} frame(s) of {data_dir} are not the size of the labelled "
                        f"frames{' of ' + reference if reference else ''} ({want}), e.g. this one is {h}x{w}")
    return problems


def verify_unlabeled(data_dir: PathLike, sizes: Optional[set[tuple[int, int]]] = None, reference: str = "",
                     progress: bool = True, use_cache: bool = True) -> None:
    """Raise DatasetError listing every problem found by :func:`check_unlabeled`."""
    problems = check_unlabeled(data_dir, sizes, reference, progress, use_cache)
    if problems:
        raise DatasetError(f"unlabeled set check failed for {data_dir}: " + problems[0] if len(problems) == 1 else
                           f"unlabeled set check failed for {data_dir}: {len(problems)} problem(s)\n"
                           + "\n".join(problems))


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m util.check_dataset", description="Check an MFNet-format data folder; prints OK or every problem.")
    parser.add_argument("--data-dir", required=True, help="folder holding images/, labels/, [edge_4x/] and <split>.txt")
    parser.add_argument("--splits", nargs="+", default=None, type=split_name(),
                        help="splits to check (default: train, val and those of test, test_day, test_night present)")
    parser.add_argument("--n-class", type=integer(2, 256), default=None,
                        help="number of classes (label ids 0..n-1; default: the folder's dataset.json, else MFNet's 9)")
    parser.add_argument("--need-edges", action="store_true", help="require edge_4x/NAME.png for every frame")
    parser.add_argument("--quick", action="store_true", help="read only image/edge headers (labels are still decoded)")
    parser.add_argument("--no-cache", action="store_true",
                        help=f"decode every file again, ignoring what earlier checks remembered ({cache_path(Path('.')).parent})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(None if argv is None else list(argv))

    if is_unlabeled_set(args.data_dir):
        problems = check_unlabeled(args.data_dir, progress=not args.no_progress, use_cache=not args.no_cache)
        if problems:
            print(f"unlabeled set check failed for {args.data_dir}: {len(problems)} problem(s)")
            print("\n".join(problems))
            return 1
        print(f"OK: {args.data_dir}: unlabeled set, train {len(read_split(args.data_dir, 'train'))} frames")
        return 0
    if args.n_class is None:
        try:
            args.n_class = load_dataset_info(args.data_dir).n_class
        except DatasetError as exc:
            print(f"dataset check failed for {args.data_dir}: 1 problem(s)\n{exc}")
            return 1
    if args.splits is None and Path(args.data_dir).is_dir():  # as the trainers: train, val and the tests present
        args.splits = ["train", "val"] + [s for s in STANDARD_SPLITS[2:] if split_path(args.data_dir, s).is_file()]

    problems = check_dataset(args.data_dir, args.splits, args.n_class, args.need_edges, not args.quick,
                             progress=not args.no_progress, use_cache=not args.no_cache, edge_record=True)
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
