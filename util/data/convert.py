"""Convert RGB-thermal segmentation datasets into our layout (MFNet format plus ``dataset.json``).

    python -m util.convert pst900  SRC DST [--thermal 8bit|raw16] [--raw-range LOW HIGH] [--val-fraction 0.1] [--seed 0]
    python -m util.convert fmb     SRC DST [--val-fraction 0.1] [--seed 0]
    python -m util.convert folders SRC DST (--classes a,b,c [--palette "0,0,0;255,0,0;..."] | --classes-json FILE)
                                   [--name N] [--ignore-index K] [--map 255=0 ...] [--val-fraction 0.1] [--test-fraction 0.1]
    python -m util.convert folders SRC DST [--name N]    # SRC without labels/: an unlabeled set
    (all: [--overwrite] [--edge-radius 2] [--workers N] [--no-progress])
    python -m util.convert rosbag  BAG DST --rgb-topic T --thermal-topic T ...  (an unlabeled set: util/data/bag_convert.py)

DST receives ``images/NAME.png`` (4-channel uint8: R, G, B, thermal), ``labels/NAME.png`` (class ids),
``edge_4x/NAME.png`` (util.data.edges.edge_label) with ``edge_4x/edges.json`` (the --edge-radius used),
``train.txt``/``val.txt``/``test.txt``, ``dataset.json`` (util.data.info) and ``convert.json`` (the manifest of
util/data/owned.py: this converter's record, i.e. source, options, split rule, and every file's sha256).
A ``folders`` source without ``labels/`` becomes an *unlabeled set* (for ``trainStudent.py
--unlabeled``): ``images/``, every frame in ``train.txt``, and a ``dataset.json`` saying
``"unlabeled": true`` (util.data.info.write_unlabeled_info); no labels, edge maps or val/test lists.
Frames keep their source stems; when a stem occurs in both source splits, every name is
prefixed with its source split (``train_``/``test_``). Images are written at their native size.

Safety: SRC is only read. Every frame is decoded and checked first (missing modality, sizes that
differ between modalities, label ids outside the class list, unreadable files, mixed 8/16-bit
thermal); if anything is wrong, every problem is listed, each with its file, and nothing is
written. DST is written whole and swapped in at the end (util/data/owned.py), so an interrupted run
leaves no half-written DST; a non-empty DST is replaced only when it holds nothing but a previous
output of this converter, unchanged, and ``--overwrite`` is given.

Source formats, split rules and the readers: util/data/sources.py; 16-bit thermal: util/data/thermal.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from util import options
from util.data import bag_convert
from util.data.edges import edge_label, write_edge_file
from util.data.info import INFO_FILE, DatasetInfo, default_palette, write_dataset_info, write_unlabeled_info
from util.data.layout import EDGE_DIR, IMAGE_DIR, LABEL_DIR, write_edge_record, write_image_file, write_png, write_split
from util.data.mfnet import EDGE_RADIUS
from util.data.owned import ConvertError, check_conversion, os_error_line, write_converted
from util.data.sources import (
    MODALITIES,
    FrameFiles,
    FrameProblem,
    Plan,
    plan_fmb,
    plan_folders,
    plan_pst900,
    plan_unlabeled_folders,
    read_label,
    read_rgb,
    read_thermal_values,
)
from util.data.thermal import percentile_range, scale_raw_thermal
from util.options import ArgumentParser

PathLike = Union[str, os.PathLike]



@dataclass
class ConvertResult:
    """What was written."""

    dst: Path
    info: Optional[DatasetInfo]  # None for an unlabeled set
    split_sizes: dict[str, int]
    raw_range: Optional[tuple[float, float]]
    notes: list[str]


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


def _size_problems(frame: FrameFiles, *arrays: Optional[np.ndarray]) -> list[str]:
    """One line per file whose size differs from the first readable modality's."""
    files = (frame.rgb, frame.thermal, frame.label)
    readable = [(m, f, a.shape[:2]) for m, f, a in zip(MODALITIES, files, arrays) if a is not None]
    if not readable:
        return []
    ref_m, ref_f, (rh, rw) = readable[0]
    return [f"{f}: {m} size {h}x{w} differs from {ref_m} size {rh}x{rw} ({ref_f})"
            for m, f, (h, w) in readable[1:] if (h, w) != (rh, rw)]


def check_frame(frame: FrameFiles, plan: Plan, want_hist: bool) -> _FrameCheck:
    """Decode one frame's three files and list its problems (each naming a file)."""
    problems: list[str] = []
    rgb = _attempt(problems, read_rgb, frame.rgb)
    thermal = _attempt(problems, read_thermal_values, frame.thermal)
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

# ----------------------------------------------------------------------------- writing

def write_frame(frame: FrameFiles, plan: Plan, out: Path, raw_range: Optional[tuple[float, float]],
                edge_radius: float) -> None:
    """Write images/, labels/ and edge_4x/ files of one (already checked) frame into ``out``."""
    rgb = read_rgb(frame.rgb)
    thermal = read_thermal_values(frame.thermal)
    label = None if frame.label is None else read_label(frame.label, plan.info, plan.label_map)
    if thermal.dtype == np.uint16:
        thermal = scale_raw_thermal(thermal, *raw_range)
    write_image_file(out / IMAGE_DIR / f"{frame.name}.png", np.dstack([rgb, thermal]))
    if frame.label is None:  # an unlabeled set: images only
        return
    write_png(out / LABEL_DIR / f"{frame.name}.png", label)
    write_edge_file(out / EDGE_DIR / f"{frame.name}.png", edge_label(label, edge_radius))


def _write_lists(plan: Plan, out: Path, info: Optional[DatasetInfo], raw_range) -> None:
    for split, names in plan.splits.items():
        write_split(out, split, names)
    if info is None:
        write_unlabeled_info(out, plan.options["name"], raw_range)
    else:
        write_dataset_info(info, out)


def convert(plan: Plan, dst: PathLike, raw_range: Optional[tuple[float, float]] = None, overwrite: bool = False,
            edge_radius: float = EDGE_RADIUS, workers: Optional[int] = None, progress: bool = True) -> ConvertResult:
    """Check every frame, then write DST atomically; ConvertError lists every problem and nothing is written."""
    dst = Path(dst)
    check_conversion(plan.source, dst, overwrite)
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
    frames = list(plan.frames.values())

    def fill(work: Path) -> dict:
        for sub in (IMAGE_DIR,) if info is None else (IMAGE_DIR, LABEL_DIR, EDGE_DIR):
            (work / sub).mkdir()
        for _ in _pool_map(lambda f: write_frame(f, plan, work, used_range, edge_radius), frames, workers,
                           "write", progress):
            pass
        if info is not None:
            write_edge_record(work, edge_radius)
        _write_lists(plan, work, info, used_range)
        return {"format": plan.format, "source": str(plan.source.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": plan.options,
                "thermal_range": None if used_range is None else list(used_range), "split_sizes": sizes,
                "notes": plan.notes}

    write_converted(dst, overwrite, fill)
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


@dataclass(frozen=True)
class ConvertOptions:
    """A pst900, fmb or folders conversion's command-line options as plain values (build_parser's)."""
    format: str
    src: str
    dst: str
    val_fraction: float = 0.1
    seed: int = 0
    raw_range: Optional[Sequence[float]] = None
    overwrite: bool = False
    edge_radius: float = EDGE_RADIUS
    workers: Optional[int] = None
    no_progress: bool = False
    thermal: str = "8bit"  # pst900
    classes: Optional[str] = None  # folders from here on
    classes_json: Optional[str] = None
    palette: Optional[Sequence] = None
    name: Optional[str] = None
    ignore_index: Optional[int] = None
    map: Sequence = ()
    test_fraction: float = 0.1


def folders_info(opts: ConvertOptions) -> DatasetInfo:
    """DatasetInfo from --classes/--palette or --classes-json, with --name/--ignore-index overriding."""
    where = opts.classes_json or "--classes/--palette"
    data = _classes_json(opts.classes_json) if opts.classes_json else {
        "class_names": [c.strip() for c in opts.classes.split(",")]}
    if opts.palette:
        data["palette"] = opts.palette
    names = data.get("class_names")
    if "palette" not in data and isinstance(names, list):
        data["palette"] = default_palette(len(names))
    if opts.name:
        data["name"] = opts.name
    data.setdefault("name", Path(opts.src).resolve().name)
    if opts.ignore_index is not None:
        data["ignore_index"] = opts.ignore_index
    try:
        return DatasetInfo.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m util.convert`` argument parser (one sub-command per source format)."""
    parser = ArgumentParser(prog="python -m util.convert",
                            description="Convert an RGB-thermal dataset into our layout (see module doc).")
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
        p.add_argument("--raw-range", type=options.number(0, 65535), action=options.LowHigh,
                       help="16-bit thermal range mapped to 0..255 (default: 1st/99th percentile of the train frames)")
        p.add_argument("--overwrite", action="store_true", help="replace DST when it holds a previous conversion")
        p.add_argument("--edge-radius", type=options.number(0, 64), default=EDGE_RADIUS,
                       help=f"edge label radius in pixels (default {EDGE_RADIUS}; recorded in edge_4x/edges.json)")
        p.add_argument("--workers", type=options.integer(1), default=None, help="threads (default: CPU count, at most 8)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(subparser=p)  # errors print the sub-command's usage
    bag = sub.add_parser("rosbag", help="an unlabeled RGB-thermal set from a ROS bag (util/data/bag_convert.py)",
                         description=bag_convert.DESCRIPTION)
    bag_convert.add_arguments(bag).set_defaults(subparser=bag)
    return parser


def plan_from_options(opts: ConvertOptions) -> Plan:
    """The plan the options of a pst900, fmb or folders conversion describe; ValueError for options that clash."""
    if opts.format == "pst900":
        return plan_pst900(opts.src, opts.thermal, opts.val_fraction, opts.seed)
    if opts.format == "fmb":
        return plan_fmb(opts.src, opts.val_fraction, opts.seed)
    if not (Path(opts.src) / "labels").is_dir() and not (opts.classes or opts.classes_json):
        given = [f for f, v in (("--palette", opts.palette), ("--ignore-index", opts.ignore_index),
                                ("--map", opts.map)) if v]
        if given:
            raise ValueError(f"{', '.join(given)}: {opts.src} has no labels/, so it becomes an unlabeled set, "
                             f"which has no classes")
        return plan_unlabeled_folders(opts.src, opts.name)
    if not (opts.classes or opts.classes_json):
        raise ValueError(f"--classes or --classes-json is required: {Path(opts.src) / 'labels'} holds labels "
                         f"(a source without labels/ becomes an unlabeled set)")
    info = folders_info(opts)
    label_map = dict(opts.map)
    for src_id, cid in label_map.items():
        if cid >= info.n_class:
            raise ValueError(f"--map {src_id}={cid}: class id {cid} outside 0..{info.n_class - 1}")
    return plan_folders(opts.src, info, opts.val_fraction, opts.test_fraction, opts.seed, label_map)


def main(argv: Optional[Iterable[str]] = None) -> int:
    """Command line entry point; returns 0 on success, 1 when the conversion is refused (2: bad arguments)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    given = {k: v for k, v in vars(args).items() if k not in ("format", "subparser")}
    if args.format == "rosbag":
        return bag_convert.command(bag_convert.BagConvertOptions(**given))
    parser, opts = args.subparser, ConvertOptions(args.format, **given)
    try:
        plan = plan_from_options(opts)
    except ValueError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    try:
        result = convert(plan, opts.dst, tuple(opts.raw_range) if opts.raw_range else None, opts.overwrite,
                         opts.edge_radius, opts.workers, not opts.no_progress)
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a read-only parent of DST or a full disk: the work folder is already removed
        print(f"error: {os_error_line(exc, opts.dst)}", file=sys.stderr)
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
