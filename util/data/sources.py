"""The source datasets util.data.convert reads: where their files are (plans) and how their pixels are read.

A :class:`Plan` says, before any pixel is read, which frames a conversion will write (each with its
source files), into which splits, and what is already wrong (missing modalities, names a split list
cannot store, ...). The readers decode one source file each and raise :class:`FrameProblem` naming it.
Writing and the command line: util/data/convert.py.

Rules:

- Validation split (PST900 and FMB publish only train and test; ``folders`` without split lists):
  sort the candidate names, draw ``numpy.random.default_rng(seed).permutation(n)``; the first
  ``n_val = max(1, floor(val_fraction * n + 0.5))`` permuted names are val, the next ``n_test``
  (same formula, folders only) are test, the rest train; each list is written sorted.
- Thermal: 8- or 16-bit values (16-bit ones are scaled to 8 bits by util/data/thermal.py when written).
  Colour-stored grey thermal is read as grey by the one grey rule (util/data/frames.py `grey`).
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

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from util.data.frames import LOSSY_EXTENSIONS, grey
from util.data.info import FMB, PST900, DatasetInfo
from util.data.layout import outside_names, rgb_from_cv2, split_path

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MODALITIES = ("rgb", "thermal", "label")


class FrameProblem(ValueError):
    """One problem of one source file (the message starts with the file)."""


@dataclass(frozen=True)
class FrameFiles:
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
    frames: dict[str, FrameFiles]
    splits: dict[str, list[str]]
    label_map: dict[int, int] = field(default_factory=dict)
    thermal_bits: Optional[int] = None  # 8 or 16 when the format fixes it
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading source files

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
    return rgb_from_cv2(img[:, :, :3])


def read_thermal_values(path: PathLike) -> np.ndarray:
    """(H, W) uint8 or uint16 thermal values, unscaled; a colour file (an alpha channel is dropped) must hold
    grey by util/data/frames.py's grey rule, as for `run_demo_student.py --input`."""
    img = _decode(Path(path))
    if img.dtype not in (np.uint8, np.uint16):
        raise FrameProblem(f"{path}: expected 8- or 16-bit thermal values, got {img.dtype}")
    if img.ndim == 2:
        return img
    if img.shape[2] < 3:
        return np.ascontiguousarray(img[:, :, 0])
    thermal = grey(img[:, :, :3], lossy=Path(path).suffix.lower() in LOSSY_EXTENSIONS)
    if thermal is None:
        spread = int(np.abs(img[:, :, :3].astype(np.int32) - img[:, :, :1]).max())
        raise FrameProblem(f"{path}: expected a grey thermal image, got colour channels that differ by up to "
                           f"{spread} (a false-colour rendering?)")
    return thermal


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


def _frame(name: str, files: Mapping[str, Path]) -> FrameFiles:
    return FrameFiles(name, files["rgb"], files["thermal"], files.get("label"))


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
        plan.problems.append(f"{split_path(src, 'train')}: not found (split lists {', '.join(lists)} given without train)")
        return {}
    for split, names in lists.items():
        for name in names:
            if name not in stems:
                plan.problems.append(f"{split_path(src, split)}: frame {name}: no rgb/thermal/labels file with this name")
        if split != "train":
            for name in sorted(set(names) & set(lists["train"])):
                plan.problems.append(f"{split_path(src, split)}: frame {name} is also in train.txt")
    splits = {s: [n for n in names if n in frames] for s, names in lists.items()}
    for split_name in (s for s, names in lists.items() if not names):
        plan.problems.append(f"{split_path(src, split_name)}: lists no frames")
    if "val" not in lists and splits["train"]:
        try:
            drawn = seeded_split(splits["train"], val_fraction, 0.0, seed)
        except ValueError as exc:
            plan.problems.append(f"{split_path(src, 'train')}: {exc}")
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
