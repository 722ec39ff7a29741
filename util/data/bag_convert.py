"""An unlabeled RGB-thermal set from a ROS bag, the input of distillation from unlabeled recordings:

    python -m util.convert rosbag BAG DST --rgb-topic T --thermal-topic T [--max-dt-ms 20]
                                  [--homography FILE] [--raw-range LOW HIGH] [--name N] [--overwrite]

BAG: a ROS 1 .bag or ROS 2 bag folder (rosbag.py reads it: sensor_msgs/Image or PNG/JPEG
CompressedImage; thermal mono8/mono16/8UC1/16UC1/32FC1, RGB rgb8/bgr8/rgba8/bgra8/mono8).

Pairing: each thermal frame is paired with the RGB frame whose header stamp is nearest to its own;
a thermal frame without an RGB frame within ``--max-dt-ms`` (default 20 ms) is dropped and counted.
Frames are read one at a time (RgbFrames: the RGB topic is read again from its start when an earlier
message is wanted, i.e. when stamps are out of recording order).
RGB frames are warped onto the thermal frame with ``--homography FILE`` (3x3, RGB pixel -> thermal
pixel; a text file of 9 numbers or a JSON list of 3 rows), else resized to the thermal size.

DST (the unlabeled layout every trainer's --unlabeled reads): ``images/NAME.png`` (4-channel uint8:
R, G, B, thermal), ``train.txt`` (all NAMEs, NAME = BAG stem and thermal message index),
``dataset.json`` ``{"name", "unlabeled": true[, "thermal_range"]}``, and ``convert.json`` (util.data.convert's
manifest: this run's record, i.e. counts, drops, skips with why, options, and every file's sha256). Thermal:
8-bit copied; 16-bit and float mapped to 0..255 by util/data/thermal.py's rule (``--raw-range`` or the
1st/99th percentiles of the non-zero 16-bit values of all readable thermal frames; float frames need
``--raw-range``); the range is ``thermal_range``. Written whole and swapped in at the end, as every
conversion (util/data/owned.py).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

from util.data.bag_pixels import colour_pixels, message_pixels
from util.data.bag_records import BagError
from util.data.info import write_unlabeled_info
from util.data.layout import IMAGE_DIR, write_image_file, write_split
from util.data.owned import ConvertError, check_conversion, os_error_line, write_converted
from util.data.rosbag import BagSource, Topic, pick_topic
from util.data.thermal import percentile_range, scale_raw_thermal
from util.options import ArgumentParser, LowHigh, number

DESCRIPTION = "An unlabeled RGB-thermal set from a ROS bag (see util/data/bag_convert.py)."


def read_homography(path: str) -> np.ndarray:
    """A 3x3 float matrix from a text file (9 numbers) or a JSON list of 3 rows; ValueError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--homography {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        is_json = text.lstrip().startswith("[")
        values = json.loads(text) if is_json else [float(v) for v in text.replace(",", " ").split()]
        matrix = np.asarray(values, dtype=np.float64).reshape(3, 3)
    except (ValueError, TypeError):
        raise ValueError(f"--homography {path}: expected 9 numbers (a 3x3 matrix, RGB pixel -> thermal pixel)"
                         ) from None
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError(f"--homography {path}: the matrix must be finite and invertible")
    return matrix


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


@dataclass
class Stream:
    """One topic's messages: their stamps (ns) in recording order, and those that could not be read."""
    topic: Topic
    stamps: list[Optional[int]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def read_stamps(source: BagSource, topic: Topic, thermal: bool, hist: Optional[np.ndarray] = None) -> Stream:
    """Pass 1: every message's stamp (None for unusable ones, listed with why); 16-bit thermal
    values are counted into `hist`."""
    stream = Stream(topic)
    for index, (_, raw) in enumerate(source.messages(topic.name)):
        where = f"{source.path} {topic.name} message {index}"
        try:
            msg = source.deserialize(raw, topic.msgtype)
            pixels = message_pixels(msg, topic.msgtype, where) if thermal else colour_pixels(msg)
        except Exception as exc:  # a malformed message of an untrusted bag: skipped, reported
            stream.stamps.append(None)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            stream.skipped.append({"message": where, "reason": reason})
            continue
        stream.stamps.append(_stamp_ns(msg))
        if hist is not None and pixels.dtype == np.uint16:
            hist += np.bincount(pixels.ravel(), minlength=65536)
    return stream


def pair_by_stamp(thermal: Sequence[Optional[int]], rgb: Sequence[Optional[int]], max_dt_ns: float
                  ) -> tuple[dict[int, int], int]:
    """{thermal index: index of the RGB message with the nearest stamp} for the pairs within
    max_dt_ns, and how many usable thermal frames had none."""
    usable = [(s, j) for j, s in enumerate(rgb) if s is not None]
    if not usable:
        return {}, sum(s is not None for s in thermal)
    usable.sort()
    stamps = np.array([s for s, _ in usable], dtype=np.int64)
    pairs, dropped = {}, 0
    for i, t in enumerate(thermal):
        if t is None:
            continue
        k = int(np.searchsorted(stamps, t))
        best = min((c for c in (k - 1, k) if 0 <= c < len(stamps)), key=lambda c: abs(int(stamps[c]) - t))
        if abs(int(stamps[best]) - t) <= max_dt_ns:
            pairs[i] = usable[best][1]
        else:
            dropped += 1
    return pairs, dropped


class RgbFrames:
    """The RGB pixels of a topic's messages by index, read in a forward pass that starts over when
    an earlier message is wanted (stamps out of recording order): one frame is held at a time."""

    def __init__(self, source: BagSource, topic: Topic):
        self.source, self.topic = source, topic
        self.messages: Optional[Iterator[tuple[int, bytes]]] = None
        self.index, self.pixels = -1, None  # the last message read, and its pixels once decoded

    def __getitem__(self, wanted: int) -> np.ndarray:
        if wanted < self.index or self.messages is None:
            self.messages, self.index = iter(self.source.messages(self.topic.name)), -1
        if wanted > self.index:
            for self.index, (_, raw) in enumerate(self.messages, self.index + 1):
                if self.index == wanted:
                    break
            else:
                raise ConvertError(f"{self.source.path} {self.topic.name} message {wanted}: missing when read "
                                   f"again; nothing was written")
            self.pixels = colour_pixels(self.source.deserialize(raw, self.topic.msgtype))
        return self.pixels


def to_8bit(pixels: np.ndarray, raw_range: Optional[tuple[float, float]]) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return scale_raw_thermal(np.nan_to_num(pixels, nan=raw_range[0], posinf=raw_range[1], neginf=raw_range[0]),
                             *raw_range)


def align(rgb: np.ndarray, shape: tuple[int, int], homography: Optional[np.ndarray]) -> np.ndarray:
    """RGB on the thermal frame: warped by the homography, or resized."""
    size = (shape[1], shape[0])
    if homography is not None:
        return cv2.warpPerspective(rgb, homography, size, flags=cv2.INTER_LINEAR)
    return rgb if rgb.shape[:2] == shape else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def convert_rosbag(bag: str, dst: str, rgb_topic: str, thermal_topic: str, max_dt: float = 20.0,
                   homography: Optional[np.ndarray] = None, raw_range: Optional[tuple[float, float]] = None,
                   name: Optional[str] = None, overwrite: bool = False, options: Optional[dict] = None) -> dict:
    """Write the unlabeled set; returns convert.json's content. ConvertError (nothing written) when refused."""
    source = BagSource.open(bag, what="BAG")
    dst_path = Path(dst)
    check_conversion(source.path, dst_path, overwrite)
    rgb_t = pick_topic(source, rgb_topic, "--rgb-topic")
    th_t = pick_topic(source, thermal_topic, "--thermal-topic")
    hist = np.zeros(65536, np.int64)
    thermal = read_stamps(source, th_t, True, hist)
    rgb = read_stamps(source, rgb_t, False)
    pairs, dropped = pair_by_stamp(thermal.stamps, rgb.stamps, max_dt * 1e6)
    if not pairs:
        raise ConvertError(f"{bag}: no thermal frame of {th_t.name} has an RGB frame of {rgb_t.name} within "
                           f"{max_dt:g} ms ({dropped} dropped, {len(thermal.skipped)} unreadable); nothing was written")
    # frame names go into a one-name-per-line split list and file names: keep the bag name's safe characters
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", source.path.name if source.ros2 else source.path.stem).lstrip(".") or "bag"
    used_range = raw_range

    def fill(work: Path) -> dict:
        nonlocal used_range
        names: list[str] = []
        (work / IMAGE_DIR).mkdir()
        rgb_frames = RgbFrames(source, rgb_t)
        for index, (_, raw) in enumerate(source.messages(th_t.name)):
            if index not in pairs:
                continue
            where = f"{source.path} {th_t.name} message {index}"
            pixels = message_pixels(source.deserialize(raw, th_t.msgtype), th_t.msgtype, where)
            if pixels.dtype != np.uint8 and used_range is None:
                if pixels.dtype != np.uint16:
                    raise ConvertError(f"{where}: {pixels.dtype} thermal; give --raw-range LOW HIGH to map it "
                                       f"to 0..255; nothing was written")
                used_range = percentile_range(hist)
            colour = align(rgb_frames[pairs[index]], pixels.shape, homography)
            frame = f"{stem}_{index:06d}"
            write_image_file(work / IMAGE_DIR / f"{frame}.png", np.dstack([colour, to_8bit(pixels, used_range)]))
            names.append(frame)
        write_split(work, "train", names)
        write_unlabeled_info(work, name or stem, used_range)
        return {"format": "rosbag", "source": str(source.path.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": options or {},
                "rgb_topic": rgb_t.name, "thermal_topic": th_t.name, "thermal_messages": len(thermal.stamps),
                "rgb_messages": len(rgb.stamps), "written": len(names), "dropped_outside_max_dt": dropped,
                "skipped": thermal.skipped + rgb.skipped, "damage": source.damage,
                "thermal_range": None if used_range is None else [float(v) for v in used_range]}

    return write_converted(dst_path, overwrite, fill)


@dataclass(frozen=True)
class BagConvertOptions:
    """`python -m util.convert rosbag`'s options as plain values (add_arguments')."""
    bag: str
    dst: str
    rgb_topic: str
    thermal_topic: str
    max_dt_ms: float = 20.0
    homography: Optional[str] = None
    raw_range: Optional[Sequence[float]] = None
    name: Optional[str] = None
    overwrite: bool = False


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `python -m util.convert rosbag` (util.data.convert's sub-command)."""
    p.add_argument("bag", metavar="BAG", help="ROS 1 .bag file or ROS 2 bag folder (only read)")
    p.add_argument("dst", metavar="DST", help="output folder (new, empty, or a previous output with --overwrite)")
    p.add_argument("--rgb-topic", required=True, help="the RGB image topic")
    p.add_argument("--thermal-topic", required=True, help="the thermal image topic")
    p.add_argument("--max-dt-ms", type=number(0), default=20.0,
                   help="largest stamp difference of a pair in ms (default 20); others are dropped and counted")
    p.add_argument("--homography", default=None, help="3x3 RGB-to-thermal pixel homography (text or JSON)")
    p.add_argument("--raw-range", type=number(), action=LowHigh, default=None,
                   help="16-bit/float thermal range mapped to 0..255 (default for 16-bit: 1st/99th percentile)")
    p.add_argument("--name", default=None, help="set name in dataset.json (default: the bag's name)")
    p.add_argument("--overwrite", action="store_true", help="replace DST when it holds a previous conversion")
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(ArgumentParser(prog="python -m util.convert rosbag", description=DESCRIPTION))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """0 on success; 1 with one `error:` line when refused (2: bad arguments, from argparse)."""
    return command(BagConvertOptions(**vars(build_parser().parse_args(None if argv is None else list(argv)))))


def command(opts: BagConvertOptions) -> int:
    """The conversion `opts` ask for; 0 on success, 1 with one `error:` line."""
    try:
        homography = read_homography(opts.homography) if opts.homography else None
        record = convert_rosbag(opts.bag, opts.dst, opts.rgb_topic, opts.thermal_topic, opts.max_dt_ms, homography,
                                tuple(opts.raw_range) if opts.raw_range else None, opts.name, opts.overwrite,
                                {k: v for k, v in asdict(opts).items() if k not in ("bag", "dst")})
    except (ConvertError, BagError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_error_line(exc, opts.dst)}", file=sys.stderr)
        return 1
    print(f"rosbag -> {opts.dst}: {record['written']} RGB-thermal pairs written; {record['dropped_outside_max_dt']} "
          f"thermal frame(s) without an RGB frame within {opts.max_dt_ms:g} ms dropped; "
          f"{len(record['skipped'])} message(s) unreadable" + (f"; {record['damage']}" if record["damage"] else ""))
    return 0
