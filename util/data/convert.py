"""Convert RGB-thermal segmentation datasets into our layout (MFNet format plus ``dataset.json``).

    python -m util.convert pst900  SRC DST [--thermal 8bit|raw16] [--raw-range LOW HIGH] [--val-fraction 0.1] [--seed 0]
    python -m util.convert fmb     SRC DST [--val-fraction 0.1] [--seed 0]
    python -m util.convert folders SRC DST (--classes a,b,c [--palette "0,0,0;255,0,0;..."] | --classes-json FILE)
                                   [--name N] [--ignore-index K] [--map 255=0 ...] [--val-fraction 0.1] [--test-fraction 0.1]
    python -m util.convert folders SRC DST [--name N]    # SRC without labels/: an unlabeled set
    (all: [--overwrite] [--edge-radius 2] [--workers N] [--no-progress])
    python -m util.convert rosbag  BAG DST --rgb-topic T --thermal-topic T ...  (an unlabeled set: util/data/rosbag_set.py)

DST receives ``images/NAME.png`` (4-channel uint8: R, G, B, thermal), ``labels/NAME.png`` (class ids),
``edge_4x/NAME.png`` (util.data.edges.edge_label), ``train.txt``/``val.txt``/``test.txt``, ``dataset.json``
(util.data.info) and ``convert.json`` (this converter's record: source, options, split rule, files).
A ``folders`` source without ``labels/`` becomes an *unlabeled set* (for ``trainStudent.py
--unlabeled``): ``images/``, every frame in ``train.txt``, and a ``dataset.json`` saying
``"unlabeled": true`` (util.data.info.write_unlabeled_info); no labels, edge maps or val/test lists.
Frames keep their source stems; when a stem occurs in both source splits, every name is
prefixed with its source split (``train_``/``test_``). Images are written at their native size.

Safety: SRC is only read. Every frame is decoded and checked first (missing modality, sizes that
differ between modalities, label ids outside the class list, unreadable files, mixed 8/16-bit
thermal); if anything is wrong, every problem is listed, each with its file, and nothing is
written. Output goes to a hidden sibling folder ``.DST.converting-*`` that is renamed to DST at the
end, so an interrupted run leaves no half-written DST (a run killed outright may leave that hidden
folder, which the next conversion into the same parent removes). A non-empty DST is replaced only when it holds nothing but a
previous output of this converter (checked against its ``convert.json``) and ``--overwrite`` is given.

Rules:

- Validation split (PST900 and FMB publish only train and test; ``folders`` without split lists):
  sort the candidate names, draw ``numpy.random.default_rng(seed).permutation(n)``; the first
  ``n_val = max(1, floor(val_fraction * n + 0.5))`` permuted names are val, the next ``n_test``
  (same formula, folders only) are test, the rest train; each list is written sorted.
- 16-bit thermal: ``t8 = clip(floor((raw - LOW) * 255 / (HIGH - LOW) + 0.5), 0, 255)`` with
  ``[LOW, HIGH]`` from ``--raw-range`` or, by default, the 1st and 99th percentiles (nearest rank)
  of the non-zero thermal pixels of the written train split (zero marks no data, e.g. PST900's
  projection holes); the range is stored as ``thermal_range`` in dataset.json. 8-bit thermal is
  copied unchanged. Colour-stored grey thermal (equal channels) is read as grey.
- Labels: single-channel files (8/16-bit, or palette-mode PNG indices) hold class ids. Colour
  (RGB) files are mapped through the dataset's palette; a colour file whose colours are not all in
  the palette but whose channels are equal is read as grey ids. ``--map SRC=ID`` rewrites source ids.

Sources (facts from the public repositories named; checked through their code, not real data):

- PST900 (Shivakumar et al., ICRA 2020), github ShreyasSkandanS/pst900_thermal_rgb:
  README.md: ``train/`` and ``test/``, each with ``rgb/``, ``thermal/`` (FLIR AGC 8-bit),
  ``thermal_raw/`` (16-bit), ``depth/``, ``labels/`` (uint8 ids 0..4), same file names, 1280x720,
  894 pairs (its comments swap the two folders' names and counts). Class order from
  pstnet/code/pst_inference.py: background, fire extinguisher, backpack, hand drill, "rescue randy"
  (survivor); colours from toolkit/utilities.py ``init_colormap`` (BGR for cv2.imshow; RGB in
  util.data.info.PST900). Zero thermal pixels are projection holes (toolkit ``fill_thermal``);
  they are kept as 0. No ignore id: background is a scored class.
- FMB (Liu et al., ICCV 2023), github JinyuanLiu-CV/SegMiF (README links the data; its code holds
  no FMB class list): ``train/`` (1220) and ``test/`` (280) with ``Visible/``, ``Infrared/``,
  ``Label/`` (and ``color/``), 800x600. ``Label/`` ids: 0 = unlabeled, 1..14 = road, sidewalk,
  building, traffic light, traffic sign, vegetation, sky, person, car, truck, bus, motorcycle,
  bicycle, pole (CSIPlab/MMSFormer semseg/datasets/fmb.py, which also sets 255 to 0 and then
  ignores 0, scoring 14 classes). Colours of ``color/`` from LiJiahang617/Road-Former
  mmseg_custom/datasets/transforms/loading.py (LoadFMBAnnotations). We keep the ids, map 255 to 0,
  and set ``ignore_index`` 0 ("unlabeled"), so mIoU over the other 14 classes matches the peers.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from util import options
from util.data.edges import edge_label, write_edge_file
from util.data.info import (
    FMB,
    INFO_FILE,
    PST900,
    DatasetInfo,
    default_palette,
    write_dataset_info,
    write_unlabeled_info,
)
from util.data.layout import EDGE_DIR, IMAGE_DIR, LABEL_DIR, outside_names, write_image_file
from util.data.workdirs import remove_stale_work_dirs, work_dir
from util.options import ArgumentParser

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MANIFEST = "convert.json"
TOOL = "util.data.convert"
PERCENTILES = (1.0, 99.0)
MODALITIES = ("rgb", "thermal", "label")


class ConvertError(ValueError):
    """The conversion was refused; ``problems`` lists every reason, each naming a file or argument."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message if not problems else message + "\n" + "\n".join(problems))
        self.problems = list(problems) or [message]


class FrameProblem(ValueError):
    """One problem of one source file (the message starts with the file)."""


@dataclass(frozen=True)
class Frame:
    """One output frame: its name in DST and its three source files."""

    name: str
    rgb: Path
    thermal: Path
    label: Optional[Path]  # None in an unlabeled set


@dataclass
class Plan:
    """What a conversion will do, before any pixel is read."""

    format: str
    source: Path
    info: Optional[DatasetInfo]  # None: an unlabeled set (no classes; see plan_unlabeled_folders)
    frames: dict[str, Frame]
    splits: dict[str, list[str]]
    label_map: dict[int, int] = field(default_factory=dict)
    thermal_bits: Optional[int] = None  # 8 or 16 when the format fixes it
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class ConvertResult:
    """What was written."""

    dst: Path
    info: Optional[DatasetInfo]  # None for an unlabeled set
    split_sizes: dict[str, int]
    raw_range: Optional[tuple[float, float]]
    notes: list[str]


# ----------------------------------------------------------------------------- reading files

def _describe(img: np.ndarray) -> str:
    channels = 1 if img.ndim == 2 else img.shape[2]
    return f"{channels} channel(s) of {img.dtype}"


def _decode(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise FrameProblem(f"{path}: unreadable ({exc.strerror or exc})") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise FrameProblem(f"{path}: unreadable or corrupt image")
    return img


def read_rgb(path: PathLike) -> np.ndarray:
    """(H, W, 3) uint8 in R, G, B order from an 8-bit colour PNG/JPEG/TIFF (an alpha channel is dropped)."""
    img = _decode(Path(path))
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise FrameProblem(f"{path}: expected an 8-bit colour image (3 or 4 channels), got {_describe(img)}")
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)


def read_thermal(path: PathLike) -> np.ndarray:
    """(H, W) uint8 or uint16 thermal values; a colour file must be grey (channels within 2 levels)."""
    img = _decode(Path(path))
    if img.dtype not in (np.uint8, np.uint16):
        raise FrameProblem(f"{path}: expected 8- or 16-bit thermal values, got {img.dtype}")
    if img.ndim == 2:
        return img
    if img.shape[2] < 3:
        return np.ascontiguousarray(img[:, :, 0])
    colour = img[:, :, :3]
    spread = int(np.abs(colour.astype(np.int32) - colour[:, :, :1]).max())
    if spread > 2:
        raise FrameProblem(f"{path}: expected a grey thermal image, got colour channels that differ by up to "
                           f"{spread} (a false-colour rendering?)")
    return np.ascontiguousarray(colour[:, :, 0]) if spread == 0 else cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)


def _colour_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _ids_from_colour(path: Path, rgb: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, bool]:
    """(ids, from_palette): palette indices when every colour is in the palette, else grey values."""
    lookup: dict[int, int] = {}
    for cid, (r, g, b) in enumerate(palette):
        lookup.setdefault((r << 16) | (g << 8) | b, cid)
    keys, inverse = np.unique(_colour_key(rgb), return_inverse=True)
    unknown = [int(k) for k in keys if int(k) not in lookup]
    if not unknown:
        return np.array([lookup[int(k)] for k in keys], np.int64)[inverse].reshape(rgb.shape[:2]), True
    if (rgb[..., :1] == rgb).all():
        return rgb[..., 0], False
    shown = ", ".join(f"({k >> 16}, {(k >> 8) & 255}, {k & 255})" for k in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise FrameProblem(f"{path}: colours not in the palette: {shown}{more} (expected class ids in a "
                       f"single-channel image, or the dataset's palette colours)")


def _label_values(path: Path, palette: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, bool]:
    """(values, from_palette) of a label file, before any --map."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, arr = im.mode, np.array(im)
    except Exception as exc:  # PIL reports bad files with many exception types
        raise FrameProblem(f"{path}: unreadable or corrupt image ({exc})") from None
    if mode in ("L", "P", "1") or mode.startswith("I"):
        return arr.astype(np.int64), False
    if mode in ("LA", "PA"):
        return arr[..., 0].astype(np.int64), False
    if mode in ("RGB", "RGBA"):
        return _ids_from_colour(path, arr[..., :3], palette)
    raise FrameProblem(f"{path}: expected a label image of class ids or palette colours, got PIL mode {mode}")


def read_label(path: PathLike, info: DatasetInfo, label_map: Optional[Mapping[int, int]] = None) -> np.ndarray:
    """(H, W) uint8 class ids 0..n_class-1 (after ``label_map`` for id files); FrameProblem lists stray ids."""
    path = Path(path)
    values, from_palette = _label_values(path, info.palette)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise FrameProblem(f"{path}: label values outside 0..65535")
    if label_map and not from_palette:
        lut = np.arange(65536, dtype=np.int64)
        for src, dst in label_map.items():
            lut[src] = dst
        values = lut[values]
    bad = np.unique(values[values >= info.n_class]) if values.size else []
    if len(bad):
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise FrameProblem(f"{path}: label ids [{shown}] outside the classes 0..{info.n_class - 1}")
    return values.astype(np.uint8)


# ----------------------------------------------------------------------------- thermal scaling

def scale_raw_thermal(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 ``clip(floor((raw - low) * 255 / (high - low) + 0.5), 0, 255)`` of 16-bit thermal values."""
    if not high > low:
        raise ValueError(f"raw range: expected LOW < HIGH, got [{low}, {high}]")
    scaled = np.floor((raw.astype(np.float64) - low) * (255.0 / (high - low)) + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def percentile_range(hist: np.ndarray, low_pct: float = PERCENTILES[0],
                     high_pct: float = PERCENTILES[1]) -> tuple[int, int]:
    """Nearest-rank percentiles of the non-zero values counted in a 65536-bin histogram.

    The p-th percentile is the smallest value v whose cumulative count (zeros left out) reaches
    p% of all counted pixels. ValueError when no non-zero pixel is counted or the two coincide.
    """
    counts = np.asarray(hist, dtype=np.int64).copy()
    counts[0] = 0
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no non-zero 16-bit thermal pixels in the train split")
    cum = np.cumsum(counts)
    low = int(np.searchsorted(cum, low_pct / 100 * total))
    high = int(np.searchsorted(cum, high_pct / 100 * total))
    if high <= low:
        raise ValueError(f"the train thermal pixels span only [{low}, {high}]; give --raw-range LOW HIGH")
    return low, high


# ----------------------------------------------------------------------------- listing sources

def list_images(folder: Path, problems: list[str]) -> dict[str, Path]:
    """stem -> image file in ``folder`` (extensions IMAGE_EXTS, any case; hidden files skipped)."""
    found: dict[str, Path] = {}
    unstorable = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_EXTS:
            continue
        if not path.stem.isprintable():  # a line break (or tab, ...) cannot be one line of a split list
            unstorable.append(path.name)
        elif path.stem != path.stem.strip() or not path.stem:
            problems.append(f"{path}: file name starts or ends with white space; rename it")
        elif path.stem in found:
            problems.append(f"{path}: a second file for frame {path.stem} (also {found[path.stem].name}); keep one")
        else:
            found[path.stem] = path
    if unstorable:
        problems.append(f"{folder}: {len(unstorable)} file name(s) hold a line break or another control character, "
                        f"which a one-name-per-line split list cannot store: "
                        f"{', '.join(map(repr, unstorable))}; rename them")
    return found


def pair_modalities(dirs: Mapping[str, Path], problems: list[str]) -> tuple[dict[str, dict[str, Path]], set[str]]:
    """(stem -> {modality: file} for stems found in every folder, all stems seen); gaps go to ``problems``."""
    missing_dirs = [d for d in dirs.values() if not d.is_dir()]
    for d in missing_dirs:
        problems.append(f"{d}: folder not found")
    if missing_dirs:
        return {}, set()
    listed = {m: list_images(d, problems) for m, d in dirs.items()}
    empty = [dirs[m] for m, files in listed.items() if not files]
    for d in empty:
        problems.append(f"{d}: no images ({', '.join(IMAGE_EXTS)})")
    if empty:  # one line per empty folder rather than one per frame of the others
        return {}, set()
    stems = set().union(*listed.values())
    complete: dict[str, dict[str, Path]] = {}
    for stem in sorted(stems):
        absent = [m for m in dirs if stem not in listed[m]]
        if absent:
            have = next(listed[m][stem] for m in dirs if stem in listed[m])
            where = ", ".join(f"{dirs[m]}/{stem}.*" for m in absent)
            problems.append(f"{have}: no matching {' or '.join(absent)} file ({where} not found)")
        else:
            complete[stem] = {m: listed[m][stem] for m in dirs}
    return complete, stems


def split_count(n: int, fraction: float) -> int:
    """Frames a fraction of n takes: 0 for 0, else max(1, floor(fraction * n + 0.5))."""
    return 0 if fraction <= 0 else max(1, math.floor(fraction * n + 0.5))


def seeded_split(names: Iterable[str], val_fraction: float, test_fraction: float = 0.0,
                 seed: int = 0) -> dict[str, list[str]]:
    """Split names into train/val(/test) by the documented seeded rule (module docstring); lists sorted.

    ``test`` is present only when ``test_fraction > 0``. ValueError when train would be empty.
    """
    ordered = sorted(names)
    n = len(ordered)
    n_val, n_test = split_count(n, val_fraction), split_count(n, test_fraction)
    if n_val + n_test >= n:
        raise ValueError(f"{n} frame(s) are too few for val fraction {val_fraction} and test fraction "
                         f"{test_fraction} (train would be empty)")
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(ordered[i] for i in perm[:n_val])
    test = sorted(ordered[i] for i in perm[n_val:n_val + n_test])
    taken = set(val) | set(test)
    out = {"train": [s for s in ordered if s not in taken], "val": val}
    if test_fraction > 0:
        out["test"] = test
    return out


def _frame(name: str, files: Mapping[str, Path]) -> Frame:
    return Frame(name, files["rgb"], files["thermal"], files.get("label"))


def _plan_train_test(fmt: str, src: Path, info: DatasetInfo, folders: Mapping[str, str],
                     val_fraction: float, seed: int) -> Plan:
    """Plan for a source with ``train/`` and ``test/`` folders (PST900, FMB): val drawn from train."""
    plan = Plan(fmt, src, info, {}, {}, options={"val_fraction": val_fraction, "seed": seed})
    if not src.is_dir():
        plan.problems.append(f"{src}: source folder not found")
        return plan
    found = {s: pair_modalities({m: src / s / d for m, d in folders.items()}, plan.problems)[0]
             for s in ("train", "test")}
    clash = set(found["train"]) & set(found["test"])
    prefix = {s: f"{s}_" if clash else "" for s in found}
    if clash:
        plan.notes.append(f"{len(clash)} frame name(s) occur in both train/ and test/: every name is prefixed "
                          f"with its source split (train_/test_)")
    names = {s: {prefix[s] + stem: files for stem, files in found[s].items()} for s in found}
    plan.frames = {n: _frame(n, f) for s in names for n, f in names[s].items()}
    if names["train"]:
        try:
            plan.splits = seeded_split(names["train"], val_fraction, 0.0, seed)
        except ValueError as exc:
            plan.problems.append(f"{src / 'train'}: {exc}")
    plan.splits["test"] = sorted(names["test"])
    if plan.splits.get("val"):
        plan.notes.append(f"val: {len(plan.splits['val'])} of the {len(names['train'])} frames of {src / 'train'}, "
                          f"drawn by the seeded rule (--val-fraction {val_fraction}, --seed {seed}); "
                          f"train keeps the other {len(plan.splits['train'])}")
    return plan


def plan_pst900(src: PathLike, thermal: str = "8bit", val_fraction: float = 0.1, seed: int = 0) -> Plan:
    """Plan a PST900 conversion; ``thermal`` "8bit" reads thermal/ (FLIR AGC), "raw16" thermal_raw/."""
    if thermal not in ("8bit", "raw16"):
        raise ValueError(f"thermal: expected '8bit' or 'raw16', got {thermal!r}")
    folders = {"rgb": "rgb", "thermal": "thermal" if thermal == "8bit" else "thermal_raw", "label": "labels"}
    plan = _plan_train_test("pst900", Path(src), PST900, folders, val_fraction, seed)
    plan.thermal_bits = 8 if thermal == "8bit" else 16
    plan.options["thermal"] = thermal
    return plan


def plan_fmb(src: PathLike, val_fraction: float = 0.1, seed: int = 0) -> Plan:
    """Plan an FMB conversion (Visible/, Infrared/, Label/ ids; 255 mapped to 0 = unlabeled, the ignored class)."""
    plan = _plan_train_test("fmb", Path(src), FMB, {"rgb": "Visible", "thermal": "Infrared", "label": "Label"},
                            val_fraction, seed)
    plan.label_map = {255: 0}
    return plan


def read_split_lists(src: Path, problems: list[str]) -> dict[str, list[str]]:
    """Every ``src/NAME.txt`` (one frame stem per line) as a split; duplicates go to ``problems``."""
    lists: dict[str, list[str]] = {}
    for path in sorted(src.glob("*.txt")):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", path.stem):
            continue
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: unreadable split list ({exc})")
            continue
        for name in sorted(n for n, k in Counter(names).items() if k > 1):
            problems.append(f"{path}: frame {name} listed more than once")
        outside = outside_names(src, names, path)  # e.g. ../../elsewhere: refused by name, never looked for
        problems.extend(outside)
        lists[path.stem] = [n for n in dict.fromkeys(names) if not outside or not outside_names(src, [n])]
    return lists


def _splits_from_lists(src: Path, lists: dict[str, list[str]], frames: Mapping, stems: set[str],
                       val_fraction: float, seed: int, plan: Plan) -> dict[str, list[str]]:
    if "train" not in lists:
        plan.problems.append(f"{src / 'train.txt'}: not found (split lists {', '.join(lists)} given without train)")
        return {}
    for split, names in lists.items():
        for name in names:
            if name not in stems:
                plan.problems.append(f"{src / (split + '.txt')}: frame {name}: no rgb/thermal/labels file with this name")
        if split != "train":
            for name in sorted(set(names) & set(lists["train"])):
                plan.problems.append(f"{src / (split + '.txt')}: frame {name} is also in train.txt")
    splits = {s: [n for n in names if n in frames] for s, names in lists.items()}
    for split_name in (s for s, names in lists.items() if not names):
        plan.problems.append(f"{src / (split_name + '.txt')}: lists no frames")
    if "val" not in lists and splits["train"]:
        try:
            drawn = seeded_split(splits["train"], val_fraction, 0.0, seed)
        except ValueError as exc:
            plan.problems.append(f"{src / 'train.txt'}: {exc}")
            return splits
        splits["train"], splits["val"] = drawn["train"], drawn["val"]
        plan.notes.append(f"val: {len(drawn['val'])} frames of train.txt drawn by the seeded rule "
                          f"(--val-fraction {val_fraction}, --seed {seed}); no val.txt was given")
    return splits


def plan_folders(src: PathLike, info: DatasetInfo, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0, label_map: Optional[Mapping[int, int]] = None) -> Plan:
    """Plan a conversion of SRC/rgb, SRC/thermal, SRC/labels (same stems) with optional SRC/*.txt split lists."""
    src = Path(src)
    plan = Plan("folders", src, info, {}, {}, label_map=dict(label_map or {}),
                options={"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed})
    if not src.is_dir():
        plan.problems.append(f"{src}: source folder not found")
        return plan
    found, stems = pair_modalities({"rgb": src / "rgb", "thermal": src / "thermal", "label": src / "labels"},
                                   plan.problems)
    lists = read_split_lists(src, plan.problems)
    if lists:
        plan.splits = _splits_from_lists(src, lists, found, stems, val_fraction, seed, plan)
        listed = {n for names in plan.splits.values() for n in names}
        if len(listed) < len(found):
            plan.notes.append(f"{len(found) - len(listed)} frame(s) in no split list were left out")
    elif found:
        try:
            plan.splits = seeded_split(found, val_fraction, test_fraction, seed)
            plan.notes.append(f"splits drawn by the seeded rule from all {len(found)} frames (--val-fraction "
                              f"{val_fraction}, --test-fraction {test_fraction}, --seed {seed})")
        except ValueError as exc:
            plan.problems.append(f"{src}: {exc}")
    listed = {n for names in plan.splits.values() for n in names}
    plan.frames = {n: _frame(n, found[n]) for n in sorted(listed)}
    return plan


def plan_unlabeled_folders(src: PathLike, name: Optional[str] = None) -> Plan:
    """Plan an unlabeled set from SRC/rgb and SRC/thermal (same stems; no SRC/labels): every frame goes
    to train.txt (trainStudent.py --unlabeled reads it), no val/test, no labels or edge maps."""
    src = Path(src)
    plan = Plan("folders", src, None, {}, {}, options={"unlabeled": True, "name": name or src.resolve().name})
    if not src.is_dir():
        plan.problems.append(f"{src}: source folder not found")
        return plan
    found, _ = pair_modalities({"rgb": src / "rgb", "thermal": src / "thermal"}, plan.problems)
    if sorted(src.glob("*.txt")):
        plan.notes.append("split lists in SRC are not used: every frame of an unlabeled set goes to train.txt")
    plan.splits = {"train": sorted(found)}
    plan.frames = {n: _frame(n, found[n]) for n in plan.splits["train"]}
    plan.notes.append(f"unlabeled set: {len(found)} frames (no labels/ in SRC), for trainStudent.py --unlabeled")
    return plan


# ----------------------------------------------------------------------------- checking frames

@dataclass
class _FrameCheck:
    problems: list[str]
    bits: Optional[int] = None
    hist: Optional[np.ndarray] = None


def _attempt(problems: list[str], read: Callable, *args) -> Optional[np.ndarray]:
    try:
        return read(*args)
    except FrameProblem as exc:
        problems.append(str(exc))
        return None


def _size_problems(frame: Frame, *arrays: Optional[np.ndarray]) -> list[str]:
    """One line per file whose size differs from the first readable modality's."""
    files = (frame.rgb, frame.thermal, frame.label)
    readable = [(m, f, a.shape[:2]) for m, f, a in zip(MODALITIES, files, arrays) if a is not None]
    if not readable:
        return []
    ref_m, ref_f, (rh, rw) = readable[0]
    return [f"{f}: {m} size {h}x{w} differs from {ref_m} size {rh}x{rw} ({ref_f})"
            for m, f, (h, w) in readable[1:] if (h, w) != (rh, rw)]


def check_frame(frame: Frame, plan: Plan, want_hist: bool) -> _FrameCheck:
    """Decode one frame's three files and list its problems (each naming a file)."""
    problems: list[str] = []
    rgb = _attempt(problems, read_rgb, frame.rgb)
    thermal = _attempt(problems, read_thermal, frame.thermal)
    label = None if frame.label is None else _attempt(problems, read_label, frame.label, plan.info, plan.label_map)
    problems.extend(_size_problems(frame, rgb, thermal, label))
    result = _FrameCheck(problems)
    if thermal is not None:
        result.bits = 16 if thermal.dtype == np.uint16 else 8
        if plan.thermal_bits and result.bits != plan.thermal_bits:
            problems.append(f"{frame.thermal}: expected {plan.thermal_bits}-bit thermal, got {result.bits}-bit")
        elif want_hist and result.bits == 16:
            result.hist = np.bincount(thermal.ravel(), minlength=65536)
    return result


def _pool_map(fn: Callable, items: Sequence, workers: Optional[int], desc: str, progress: bool) -> Iterator:
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # cv2/PIL/zlib release the GIL while decoding and encoding
        yield from tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="frame", disable=not progress)


def check_frames(plan: Plan, raw_range: Optional[tuple[float, float]] = None, workers: Optional[int] = None,
                 progress: bool = True) -> tuple[list[str], Optional[tuple[float, float]]]:
    """(every problem of every frame, the 16-bit range to use or None for 8-bit thermal)."""
    train = set(plan.splits.get("train", []))
    frames = list(plan.frames.values())
    problems: list[str] = []
    hist = np.zeros(65536, np.int64)
    first_of: dict[int, Path] = {}
    for frame, res in zip(frames, _pool_map(lambda f: check_frame(f, plan, raw_range is None and f.name in train),
                                            frames, workers, "check", progress)):
        problems.extend(res.problems)
        if res.bits:
            first_of.setdefault(res.bits, frame.thermal)
        if res.hist is not None:
            hist += res.hist
    if len(first_of) > 1:
        problems.append(f"thermal images mix 8-bit ({first_of[8]}, ...) and 16-bit ({first_of[16]}, ...) files; "
                        f"convert them to one bit depth")
    if 16 not in first_of or problems:
        return problems, None
    if raw_range is not None:
        return problems, raw_range
    try:
        return problems, percentile_range(hist)
    except ValueError as exc:
        return problems + [f"{plan.source}: {exc}"], None


# ----------------------------------------------------------------------------- destination safety

def tree_files(root: Path) -> tuple[set[str], set[str]]:
    """(relative file paths, relative folder paths) under root, '/'-separated."""
    files, dirs = set(), set()
    for here, subdirs, names in os.walk(root):
        rel = Path(here).relative_to(root)
        dirs.update((rel / d).as_posix() for d in subdirs)
        files.update((rel / n).as_posix() for n in names)
    return files, dirs


def foreign_entries(dst: Path) -> Optional[list[str]]:
    """Entries of ``dst`` that its convert.json does not list; None when dst holds no valid convert.json."""
    try:
        manifest = json.loads((dst / MANIFEST).read_text(encoding="utf-8"))
        written = set(manifest["files"]) if manifest.get("tool") == TOOL else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if written is None:
        return None
    allowed_dirs = {p.as_posix() for f in written for p in Path(f).parents if p.as_posix() != "."}
    files, dirs = tree_files(dst)
    return sorted((files - written - {MANIFEST}) | (dirs - allowed_dirs))


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Raise ConvertError (one line) unless DST may be written: not inside/around SRC, empty or our own output."""
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise ConvertError(f"{dst}: destination lies inside the source {src}; the converter never writes into SRC")
    if d in s.parents:
        raise ConvertError(f"{dst}: destination contains the source {src}; choose a DST outside it")
    if not dst.exists():
        return
    if not dst.is_dir():
        raise ConvertError(f"{dst}: exists and is not a folder")
    if not any(dst.iterdir()):
        return
    foreign = foreign_entries(dst)
    if foreign is None:
        raise ConvertError(f"{dst}: not empty and not written by this converter (no valid {MANIFEST}); "
                           f"choose another DST")
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ConvertError(f"{dst}: holds a previous conversion plus entries it did not write "
                           f"({', '.join(foreign[:3])}{more}); refusing to replace it")
    if not overwrite:
        raise ConvertError(f"{dst}: holds a previous conversion; add --overwrite to replace it")


# ----------------------------------------------------------------------------- writing

def write_png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    data.tofile(path)


def write_frame(frame: Frame, plan: Plan, out: Path, raw_range: Optional[tuple[float, float]],
                edge_radius: float) -> None:
    """Write images/, labels/ and edge_4x/ files of one (already checked) frame into ``out``."""
    rgb = read_rgb(frame.rgb)
    thermal = read_thermal(frame.thermal)
    label = None if frame.label is None else read_label(frame.label, plan.info, plan.label_map)
    if thermal.dtype == np.uint16:
        thermal = scale_raw_thermal(thermal, *raw_range)
    write_image_file(out / IMAGE_DIR / f"{frame.name}.png", np.dstack([rgb, thermal]))
    if frame.label is None:  # an unlabeled set: images only
        return
    write_png(out / LABEL_DIR / f"{frame.name}.png", label)
    write_edge_file(out / EDGE_DIR / f"{frame.name}.png", edge_label(label, edge_radius))


def _write_record(plan: Plan, out: Path, info: DatasetInfo, raw_range, sizes: dict[str, int]) -> None:
    for split, names in plan.splits.items():
        (out / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    if info is None:
        write_unlabeled_info(out, plan.options["name"], raw_range)
    else:
        write_dataset_info(info, out)
    files, _ = tree_files(out)
    record = {"tool": TOOL, "format": plan.format, "source": str(plan.source.resolve()),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": plan.options,
              "thermal_range": None if raw_range is None else list(raw_range),
              "split_sizes": sizes, "notes": plan.notes, "files": sorted(files)}
    (out / MANIFEST).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def swap_in(tmp: Path, dst: Path) -> None:
    """Rename the finished temporary folder to DST, replacing an empty or previous-output DST."""
    if dst.exists() and not any(dst.iterdir()):
        dst.rmdir()
    if not dst.exists():
        os.rename(tmp, dst)
        return
    old = work_dir(dst, "old")
    os.rename(dst, old)
    os.rename(tmp, dst)
    shutil.rmtree(old)


def convert(plan: Plan, dst: PathLike, raw_range: Optional[tuple[float, float]] = None, overwrite: bool = False,
            edge_radius: float = 2, workers: Optional[int] = None, progress: bool = True) -> ConvertResult:
    """Check every frame, then write DST atomically; ConvertError lists every problem and nothing is written."""
    dst = Path(dst)
    check_destination(plan.source, dst, overwrite)
    if not plan.frames and not plan.problems:
        plan.problems.append(f"{plan.source}: no frames to convert")
    problems, used_range = check_frames(plan, raw_range, workers, progress)
    problems = plan.problems + problems
    if problems:
        raise ConvertError(f"{len(problems)} problem(s) in {plan.source}; nothing was written:", problems)
    info = None if plan.info is None else replace(plan.info, thermal_range=used_range)
    notes = plan.notes + [_thermal_note(used_range, raw_range is not None)]
    plan = replace(plan, info=info, notes=notes)
    sizes = {s: len(n) for s, n in plan.splits.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(dst, ("converting", "old"))  # left by conversions killed outright
    tmp = work_dir(dst, "converting")
    tmp.mkdir()
    try:
        for sub in (IMAGE_DIR,) if info is None else (IMAGE_DIR, LABEL_DIR, EDGE_DIR):
            (tmp / sub).mkdir()
        frames = list(plan.frames.values())
        for _ in _pool_map(lambda f: write_frame(f, plan, tmp, used_range, edge_radius), frames, workers,
                           "write", progress):
            pass
        _write_record(plan, tmp, info, used_range, sizes)
        check_destination(plan.source, dst, overwrite)  # DST may have changed during the run
        swap_in(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConvertResult(dst, info, sizes, used_range, notes)


def _thermal_note(used_range: Optional[tuple[float, float]], given: bool) -> str:
    if used_range is None:
        return "thermal: 8-bit values copied unchanged" + (" (--raw-range not used)" if given else "")
    how = "--raw-range" if given else "1st and 99th percentiles of the non-zero train thermal pixels"
    return (f"thermal: 16-bit values mapped to 0..255 from [{used_range[0]:g}, {used_range[1]:g}] ({how}); "
            f"stored as thermal_range in {INFO_FILE}")


# ----------------------------------------------------------------------------- command line

def _classes_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with class_names (and name, palette, ignore_index)")
    return data


def folders_info(args: argparse.Namespace) -> DatasetInfo:
    """DatasetInfo from --classes/--palette or --classes-json, with --name/--ignore-index overriding."""
    where = args.classes_json or "--classes/--palette"
    data = _classes_json(args.classes_json) if args.classes_json else {
        "class_names": [c.strip() for c in args.classes.split(",")]}
    if args.palette:
        data["palette"] = args.palette
    names = data.get("class_names")
    if "palette" not in data and isinstance(names, list):
        data["palette"] = default_palette(len(names))
    if args.name:
        data["name"] = args.name
    data.setdefault("name", Path(args.src).resolve().name)
    if args.ignore_index is not None:
        data["ignore_index"] = args.ignore_index
    try:
        return DatasetInfo.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m util.convert`` argument parser (one sub-command per source format)."""
    parser = ArgumentParser(prog="python -m util.convert",
                            description="Convert an RGB-thermal dataset into our layout (see module doc).",
                            epilog="python -m util.convert rosbag --help: an unlabeled set from a ROS bag")
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    pst = sub.add_parser("pst900", help="PST900: SRC/{train,test}/{rgb,thermal,thermal_raw,labels}")
    pst.add_argument("--thermal", choices=("8bit", "raw16"), default="8bit",
                     help="thermal/ (FLIR AGC 8-bit, default) or thermal_raw/ (16-bit, scaled to 8-bit)")
    fmb = sub.add_parser("fmb", help="FMB: SRC/{train,test}/{Visible,Infrared,Label}")
    fol = sub.add_parser("folders", help="SRC/{rgb,thermal,labels} with the same stems, optional SRC/*.txt splits; "
                                         "without labels/: an unlabeled set (for trainStudent.py --unlabeled)")
    group = fol.add_mutually_exclusive_group()
    group.add_argument("--classes", help="comma-separated class names in id order, e.g. background,person,car")
    group.add_argument("--classes-json", help="JSON file with class_names (and name, palette, ignore_index)")
    fol.add_argument("--palette", type=options.palette(), help='colours in id order, e.g. "0,0,0;255,0,0;0,0,255" (default: VOC colour map)')
    fol.add_argument("--name", help="dataset name (default: the SRC folder name)")
    fol.add_argument("--ignore-index", type=options.integer(0, 255), help="class id left out of loss and metrics (e.g. 0 = unlabeled)")
    fol.add_argument("--map", action="append", default=[], type=options.id_map(65535), metavar="SRC=ID",
                     help="rewrite label value SRC to class id ID (repeatable), e.g. --map 255=0")
    fol.add_argument("--test-fraction", type=options.fraction(), default=0.1,
                     help="test share of the seeded split when SRC has no split lists (default 0.1)")
    for p in (pst, fmb, fol):
        p.add_argument("src", metavar="SRC", help="source dataset folder (only read)")
        p.add_argument("dst", metavar="DST", help="output folder (new, empty, or a previous output with --overwrite)")
        p.add_argument("--val-fraction", type=options.fraction(zero=False), default=0.1, help="val share drawn from train (default 0.1)")
        p.add_argument("--seed", type=options.integer(0, 2**32 - 1), default=0, help="seed of the split permutation (default 0)")
        p.add_argument("--raw-range", type=options.number(0, 65535), nargs=2, metavar=("LOW", "HIGH"),
                       help="16-bit thermal range mapped to 0..255 (default: 1st/99th percentile of the train frames)")
        p.add_argument("--overwrite", action="store_true", help="replace DST when it holds a previous conversion")
        p.add_argument("--edge-radius", type=options.number(0, 64), default=2, help="edge label radius in pixels (default 2)")
        p.add_argument("--workers", type=options.integer(1), default=None, help="threads (default: CPU count, at most 8)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(subparser=p)  # errors print the sub-command's usage
    return parser


def _plan_from_args(args: argparse.Namespace) -> Plan:
    if args.format == "pst900":
        return plan_pst900(args.src, args.thermal, args.val_fraction, args.seed)
    if args.format == "fmb":
        return plan_fmb(args.src, args.val_fraction, args.seed)
    if not (Path(args.src) / "labels").is_dir() and not (args.classes or args.classes_json):
        given = [f for f, v in (("--palette", args.palette), ("--ignore-index", args.ignore_index),
                                ("--map", args.map)) if v]
        if given:
            raise ValueError(f"{', '.join(given)}: {args.src} has no labels/, so it becomes an unlabeled set, "
                             f"which has no classes")
        return plan_unlabeled_folders(args.src, args.name)
    if not (args.classes or args.classes_json):
        raise ValueError(f"--classes or --classes-json is required: {Path(args.src) / 'labels'} holds labels "
                         f"(a source without labels/ becomes an unlabeled set)")
    info = folders_info(args)
    label_map = dict(args.map)
    for src_id, cid in label_map.items():
        if cid >= info.n_class:
            raise ValueError(f"--map {src_id}={cid}: class id {cid} outside 0..{info.n_class - 1}")
    return plan_folders(args.src, info, args.val_fraction, args.test_fraction, args.seed, label_map)


def os_error_line(exc: OSError, dst: PathLike) -> str:
    """One line for a system error while converting into `dst` (nothing of the conversion is left)."""
    why = ("the disk is full (no space left on device)" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else exc.strerror or str(exc))
    return f"{exc.filename or dst}: {why}; nothing was written to {dst}"


def main(argv: Optional[Iterable[str]] = None) -> int:
    """Command line entry point; returns 0 on success, 1 when the conversion is refused (2: bad arguments)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    parser = args.subparser
    if args.raw_range and not args.raw_range[0] < args.raw_range[1]:
        parser.error("--raw-range: expected LOW < HIGH within 0..65535")
    try:
        plan = _plan_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    try:
        result = convert(plan, args.dst, tuple(args.raw_range) if args.raw_range else None, args.overwrite,
                         args.edge_radius, args.workers, not args.no_progress)
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a read-only parent of DST or a full disk: the work folder is already removed
        print(f"error: {os_error_line(exc, args.dst)}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{s} {n}" for s, n in result.split_sizes.items())
    what = ("unlabeled set" if result.info is None else f"{result.info.name}, {result.info.n_class} classes")
    print(f"{plan.format} -> {result.dst}: {what}; {sizes} frames "
          f"({time.perf_counter() - start:.1f} s)")
    for note in result.notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
