"""The paper's Edge Labels Generation (ELG) module: semantic-edge labels from label maps.

A pixel is a semantic edge when any pixel within a disc of radius ``radius``
(Euclidean distance <= radius, pixels outside the image ignored) has a different
class id. This is the rule of the DFF MATLAB code used for the released
``edge_4x`` maps, so edges are about 2 * radius px wide and lie on both sides of
every class boundary.

Stored format written here: ``edge_4x/NAME.png``, single-channel uint8 with
values 0/1 (1 = edge), at 1/4 of the label size (ceil(H/4) x ceil(W/4)),
downsampled with a 4x4 max-pool so thin edges survive. 0/1 is what the released
loader feeds straight into its BCE loss; the files look black in image viewers.
The radius is recorded in ``edge_4x/edges.json`` (util.data.layout.write_edge_record),
where the loader reads it back. In a folder written by util.convert or util.synthetic, the files
written here are listed in its manifest (util.data.owned.record_files), so that tool can still
replace the folder with --overwrite.

    python -m util.edges --data-dir dataset/synthetic [--radius 2] [--overwrite] [--splits train val]
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from util.data.layout import (
    EDGE_DIR,
    EDGE_RECORD,
    LABEL_DIR,
    DatasetError,
    load_label_file,
    outside_names,
    read_edge_radius,
    read_split,
    write_edge_record,
    write_png,
)
from util.data.mfnet import EDGE_RADIUS, EDGE_STRIDE
from util.data.owned import record_files
from util.options import ArgumentParser, integer, number, split_name


def disc_kernel(radius: float) -> np.ndarray:
    """uint8 structuring element of the pixels at Euclidean distance <= radius from the centre."""
    r = max(int(np.ceil(radius)), 0)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def semantic_edges(label: np.ndarray, radius: float = EDGE_RADIUS) -> np.ndarray:
    """(H, W) uint8 0/1 edge map of a (H, W) class-id map.

    Over the disc around a pixel (the pixel included), some label differs from the centre's
    exactly when the disc's maximum and minimum labels differ, so the edge map is
    dilate(label) != erode(label) with a disc kernel. cv2's default border for both
    operations leaves out-of-image pixels out of the max/min, as DFF's code does.
    """
    if label.ndim != 2:
        raise ValueError(f"semantic_edges: expected a (H, W) label map, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 65535):
        raise ValueError("semantic_edges: label ids must lie in 0..65535")
    lab = label.astype(np.uint8 if label.size == 0 or label.max() <= 255 else np.uint16, copy=False)
    kernel = disc_kernel(radius)
    return (cv2.dilate(lab, kernel) != cv2.erode(lab, kernel)).astype(np.uint8)


def downsample_edges(edge: np.ndarray, stride: int = EDGE_STRIDE) -> np.ndarray:
    """Max-pool a (H, W) binary edge map over stride x stride blocks to (ceil(H/stride), ceil(W/stride)) uint8 0/1.

    A block is an edge when any of its pixels is, so 1-px edges are kept. When H or W is not a
    multiple of ``stride`` the last row/column of blocks covers the remaining (fewer) pixels.
    """
    h, w = edge.shape
    hb, wb = -(-h // stride), -(-w // stride)
    padded = np.zeros((hb * stride, wb * stride), dtype=np.uint8)
    padded[:h, :w] = edge > 0
    return padded.reshape(hb, stride, wb, stride).max(axis=(1, 3))


def edge_label(label: np.ndarray, radius: float = EDGE_RADIUS, stride: int = EDGE_STRIDE) -> np.ndarray:
    """The stored edge label of a class-id map: ``downsample_edges(semantic_edges(label, radius), stride)``."""
    return downsample_edges(semantic_edges(label, radius), stride)


def write_edge_file(path: os.PathLike | str, edge: np.ndarray) -> None:
    """Write a 0/1 edge map as a single-channel uint8 PNG (its folder's radius: layout.write_edge_record)."""
    write_png(path, edge.astype(np.uint8))


def generate_edges(data_dir: os.PathLike | str, radius: float = EDGE_RADIUS, overwrite: bool = False,
                   splits: Optional[Sequence[str]] = None, workers: Optional[int] = None,
                   progress: bool = True) -> tuple[int, int]:
    """Write ``edge_4x/NAME.png`` for every label in ``labels/`` (or every frame of ``splits``).

    Existing edge files are kept unless ``overwrite``. Returns (written, skipped). The radius is recorded
    in ``edge_4x/edges.json``; kept files made with another radius (that record's, or the release's when
    there is none) are refused with DatasetError, since one folder has one radius. When ``data_dir`` is the
    output of one of our writers (a valid convert.json or synthetic.json), the files written are listed in
    that manifest once all are written (util.data.owned.record_files); run again after a failure.
    """
    data_dir = Path(data_dir)
    label_dir, edge_dir = data_dir / LABEL_DIR, data_dir / EDGE_DIR
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: data folder not found")
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: label folder not found (expected labels/NAME.png files)")
    if splits:
        names = list(dict.fromkeys(n for s in splits for n in read_split(data_dir, s)))
    else:
        names = sorted(p.stem for p in label_dir.glob("*.png"))
        outside = outside_names(data_dir, names)
        if outside:
            raise DatasetError("\n".join(outside))
    if not names:
        raise DatasetError(f"{label_dir}: no label maps to convert")
    edge_dir.mkdir(exist_ok=True)
    todo = names if overwrite else [n for n in names if not (edge_dir / f"{n}.png").exists()]
    kept = {p.stem for p in edge_dir.glob("*.png")} - set(todo)
    if kept and read_edge_radius(data_dir) != radius:
        raise DatasetError(f"{edge_dir}: holds {len(kept)} edge map(s) of radius {read_edge_radius(data_dir):g} "
                           f"({EDGE_RECORD}, or the release's {EDGE_RADIUS:g} without one) that would be kept "
                           f"beside new ones of radius {radius:g}; use --overwrite to rewrite them all")

    def work(name: str) -> None:
        write_edge_file(edge_dir / f"{name}.png", edge_label(load_label_file(label_dir / f"{name}.png"), radius))

    # cv2 and PIL release the GIL while decoding, filtering and encoding, so threads scale.
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(work, todo), total=len(todo), desc="edge_4x", unit="frame", disable=not progress):
            pass
    write_edge_record(data_dir, radius)
    record_files(data_dir, [f"{EDGE_DIR}/{n}.png" for n in todo] + [f"{EDGE_DIR}/{EDGE_RECORD}"])
    return len(todo), len(names) - len(todo)


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m util.edges", description="Write edge_4x/NAME.png semantic-edge labels (ELG module).")
    parser.add_argument("--data-dir", required=True, help="folder holding labels/NAME.png")
    parser.add_argument("--radius", type=number(low=0, high=64), default=EDGE_RADIUS,
                        help=f"disc radius in pixels at label resolution (default {EDGE_RADIUS})")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing edge files")
    parser.add_argument("--splits", nargs="+", default=None, type=split_name(), help="only the frames of these splits (default: every label)")
    parser.add_argument("--workers", type=integer(1), default=None, help="threads (default: CPU count)")
    args = parser.parse_args(None if argv is None else list(argv))
    start = time.perf_counter()
    try:
        written, skipped = generate_edges(args.data_dir, args.radius, args.overwrite, args.splits, args.workers)
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {written} edge maps to {Path(args.data_dir) / EDGE_DIR} in {time.perf_counter() - start:.1f} s"
          + (f"; kept {skipped} existing (use --overwrite to rewrite)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
