"""A small procedural stand-in for MFNet: RGB-thermal urban driving frames in the same folder format.

The frames are drawn by util/data/scene.py (road scenes with all nine MFNet classes, day and night); this
module writes whole folders of them: MFNet's splits, edge maps, dataset.json and, on request, an unlabeled
pool. Output is deterministic in the seed (byte-identical PNGs for the same arguments). Folders are written
whole and replaced only when they hold nothing but an earlier output (util/data/owned.py; the manifest is
``synthetic.json``, which also records the arguments).

    python -m util.synthetic --out dataset/synthetic [--frames 240] [--height 96] [--width 128] [--seed 0] [--overwrite]
                             [--unlabeled-frames N]    # plus N unlabeled frames in dataset/synthetic/unlabeled
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import cv2
import numpy as np

from util.data.edges import edge_label, write_edge_file
from util.data.info import MFNET, DatasetInfo, write_dataset_info, write_unlabeled_info
from util.data.layout import (
    EDGE_DIR,
    IMAGE_DIR,
    LABEL_DIR,
    DatasetError,
    split_path,
    write_edge_record,
    write_image_file,
    write_png,
    write_split,
)
from util.data.mfnet import EDGE_RADIUS, N_CLASS, STANDARD_SPLITS
from util.data.owned import SYNTHETIC, write_owned
from util.data.scene import render
from util.options import ArgumentParser, integer, multiple_of

DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH = 240, 96, 128
DAY_FRACTION = 820 / 1569  # as in MFNet
META_FILE = SYNTHETIC.manifest
UNLABELED_DIR = "unlabeled"  # the optional unlabeled pool (--unlabeled-frames), an unlabeled set of its own
PNG = (cv2.IMWRITE_PNG_COMPRESSION, 3)


def _splits(names: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Half of the day and half of the night frames in train, a quarter each in val and test."""
    out: dict[str, list[str]] = {k: [] for k in STANDARD_SPLITS}
    for kind, test_key in (("D", "test_day"), ("N", "test_night")):
        group = [n for n in names if n.endswith(kind)]
        group = [group[i] for i in rng.permutation(len(group))]
        n_train, n_val = len(group) // 2, len(group) // 4
        out["train"] += group[:n_train]
        out["val"] += group[n_train:n_train + n_val]
        out["test"] += group[n_train + n_val:]
        out[test_key] += group[n_train + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def _write_frames(root: Path, n_frames: int, height: int, width: int, seed: int, radius: float,
                  n_day: int) -> None:
    """Render and write every frame, the edge record, the split files and dataset.json into ``root``."""
    for sub in (IMAGE_DIR, LABEL_DIR, EDGE_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng([seed, 0])
    is_day = np.zeros(n_frames, bool)
    is_day[master.permutation(n_frames)[:n_day]] = True
    names = [f"{i + 1:05d}{'D' if d else 'N'}" for i, d in enumerate(is_day)]
    for i, name in enumerate(names):
        image, label = render(np.random.default_rng([seed, 1, i]), height, width, bool(is_day[i]),
                              force=1 + i % (N_CLASS - 1))
        write_image_file(root / IMAGE_DIR / f"{name}.png", image, PNG)
        write_png(root / LABEL_DIR / f"{name}.png", label, PNG)
        write_edge_file(root / EDGE_DIR / f"{name}.png", edge_label(label, radius))
    write_edge_record(root, radius)
    for split, split_names in _splits(names, master).items():
        write_split(root, split, split_names)
    write_dataset_info(DatasetInfo("synthetic MFNet", MFNET.class_names, MFNET.palette), root)  # MFNet's classes


def _write_unlabeled(pool: Path, n_frames: int, height: int, width: int, seed: int, day_fraction: float) -> None:
    """An unlabeled set in ``pool`` (images/, train.txt, dataset.json), drawn from the same scene model as the
    labelled frames (its own random streams, so the labelled frames of the same seed do not change and
    none is repeated)."""
    (pool / IMAGE_DIR).mkdir(parents=True)
    master = np.random.default_rng([seed, 2])
    is_day = np.zeros(n_frames, bool)
    is_day[master.permutation(n_frames)[:int(round(n_frames * day_fraction))]] = True
    names = [f"u{i + 1:05d}{'D' if d else 'N'}" for i, d in enumerate(is_day)]
    for i, name in enumerate(names):
        image, _ = render(np.random.default_rng([seed, 3, i]), height, width, bool(is_day[i]),
                          force=1 + i % (N_CLASS - 1))
        write_image_file(pool / IMAGE_DIR / f"{name}.png", image, PNG)
    write_split(pool, "train", names)
    write_unlabeled_info(pool, "synthetic MFNet, unlabeled pool")


def generate_unlabeled_pool(out_dir: Union[str, os.PathLike], n_frames: int, height: int = DEFAULT_HEIGHT,
                            width: int = DEFAULT_WIDTH, seed: int = 0, day_fraction: float = DAY_FRACTION) -> Path:
    """Write an unlabeled set of ``n_frames`` synthetic frames on its own (the pool ``generate_dataset(...,
    unlabeled_frames=n_frames)`` puts in its ``unlabeled/``, the same pixels for the same arguments), e.g. beside
    a synthetic set made earlier without one. Refuses a non-empty ``out_dir`` (DestinationError); written whole
    (util.data.owned.write_owned)."""
    if n_frames < 1:
        raise ValueError(f"synthetic: the unlabeled pool needs at least 1 frame, got {n_frames}")

    def fill(work: Path) -> dict:
        _write_unlabeled(work, n_frames, height, width, seed, day_fraction)
        return {"unlabeled_frames": n_frames, "height": height, "width": width, "seed": seed,
                "day_fraction": day_fraction}

    write_owned(Path(out_dir), SYNTHETIC, False, fill, hint="choose another output folder")  # no overwrite here
    return Path(out_dir)


def generate_dataset(out_dir: Union[str, os.PathLike], n_frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT,
                     width: int = DEFAULT_WIDTH, seed: int = 0, overwrite: bool = False, radius: float = EDGE_RADIUS,
                     day_fraction: float = DAY_FRACTION, unlabeled_frames: int = 0) -> Path:
    """Write a complete MFNet-format folder (images/, labels/, edge_4x/, the five split files) and return it.

    ``unlabeled_frames`` > 0 adds an unlabeled pool of that many frames from the same scene model in
    ``out_dir/unlabeled`` (for ``trainStudent.py --unlabeled``); the labelled frames stay the same.

    Refuses (DestinationError, a FileExistsError; nothing written) a non-empty ``out_dir`` unless ``overwrite``,
    and even then unless that folder holds exactly what an earlier run wrote (listed, with checksums, in
    synthetic.json). Written whole, so an interrupted run never leaves a half-written ``out_dir`` (see
    util/data/owned.py).
    """
    if height % 32 or width % 32 or height < 32 or width < 32:
        raise ValueError(f"synthetic: height and width must be positive multiples of 32 (the networks' stride), "
                         f"got {height}x{width}")
    n_day = int(round(n_frames * day_fraction))
    if n_frames < 8 or min(n_day, n_frames - n_day) < 4:
        raise ValueError(f"synthetic: need at least 4 day and 4 night frames, got {n_frames} frames "
                         f"with day fraction {day_fraction}")
    if unlabeled_frames < 0:
        raise ValueError(f"synthetic: unlabeled_frames must be >= 0, got {unlabeled_frames}")

    def fill(work: Path) -> dict:
        _write_frames(work, n_frames, height, width, seed, radius, n_day)
        if unlabeled_frames:
            _write_unlabeled(work / UNLABELED_DIR, unlabeled_frames, height, width, seed, day_fraction)
        return {"n_frames": n_frames, "height": height, "width": width, "seed": seed, "radius": radius,
                "day_fraction": day_fraction, **({"unlabeled_frames": unlabeled_frames} if unlabeled_frames else {})}

    write_owned(Path(out_dir), SYNTHETIC, overwrite, fill)
    return Path(out_dir)


def ensure_synthetic(out_dir: Union[str, os.PathLike] = "dataset/synthetic", **kw) -> Path:
    """Generate the synthetic set into ``out_dir`` only when that folder is absent or empty; return its path.

    Generation is all-or-nothing (see :func:`generate_dataset`); when a concurrent run finishes
    first, its folder is used. An existing folder is used as is (a warning is given when it was
    generated with other arguments).
    """
    out = Path(out_dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        try:
            generate_dataset(out, **kw)
        except FileExistsError:
            if not (out.is_dir() and any(out.iterdir())):
                raise
    missing = [split_path(out, s) for s in STANDARD_SPLITS if not split_path(out, s).is_file()]
    if missing:
        raise DatasetError(f"{out}: exists but lacks {', '.join(m.name for m in missing)}; "
                           f"regenerate with: python -m util.synthetic --out {out} --overwrite")
    meta_path = out / META_FILE
    if kw and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        differ = {k: (meta.get(k), v) for k, v in kw.items() if k in meta and meta[k] != v}
        if differ:
            warnings.warn(f"{out}: existing synthetic set differs from the requested arguments "
                          f"(stored, requested): {differ}; using it as is")
    return out


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m util.synthetic", description="Write a procedural RGB-thermal dataset in MFNet format.")
    parser.add_argument("--out", default="dataset/synthetic", help="output folder (default dataset/synthetic)")
    parser.add_argument("--frames", type=integer(8), default=DEFAULT_FRAMES, help=f"number of frames (default {DEFAULT_FRAMES})")
    parser.add_argument("--height", type=multiple_of(32, 32), default=DEFAULT_HEIGHT, help=f"multiple of 32 (default {DEFAULT_HEIGHT})")
    parser.add_argument("--width", type=multiple_of(32, 32), default=DEFAULT_WIDTH, help=f"multiple of 32 (default {DEFAULT_WIDTH})")
    parser.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    parser.add_argument("--unlabeled-frames", type=integer(0), default=0, metavar="N",
                        help=f"also write an unlabeled pool of N frames into OUT/{UNLABELED_DIR} (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a folder generated earlier (refused if it holds anything else)")
    args = parser.parse_args(None if argv is None else list(argv))
    start = time.perf_counter()
    try:
        out = generate_dataset(args.out, args.frames, args.height, args.width, args.seed, args.overwrite,
                               unlabeled_frames=args.unlabeled_frames)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pool = f" and {args.unlabeled_frames} unlabeled ones to {Path(out) / UNLABELED_DIR}" if args.unlabeled_frames else ""
    print(f"wrote {args.frames} frames of {args.height}x{args.width} to {out}{pool} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
