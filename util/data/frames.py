"""Thermal frames as a robot records them: image files, folders of them, videos, cameras and streams
(ROS bags: rosbag.py), as one `Frame` each, and the pixel rules every reader follows.

Images: single-channel 8/16-bit PNG/TIFF (also float TIFF), JPEG (single-channel, or grey stored
as 3 channels) and MFNet-style 4-channel PNGs (channel 4 = thermal). What counts as grey is one rule
(`grey`, which util.convert follows too): 3 equal channels, or channels within GREY_ROUNDING levels at
every pixel; JPEG and video are lossy, so their 3-channel frames also count as grey when the channels
differ by at most GREY_TOLERANCE levels on average (then their luma is used); a colour frame (e.g. a
palette-coloured thermal picture) is refused with one line naming it.
Videos: whatever cv2.VideoCapture reads (mp4, avi, mkv, mov, ...), 8 bits per pixel.
Live sources: a camera index (``0``) or a stream URL OpenCV opens (``http://host:port/stream.mjpg``,
``rtsp://...``), read until the stream ends.

Scaling to [0, 1]:
- 8-bit: value / 255, as MFNet's thermal channel.
- 16-bit and float: per-frame min-max (the coldest pixel -> 0, the hottest -> 1) by default, or a
  fixed range `thermal_range=(low, high)` (values clipped), which keeps a fixed
  temperature-to-intensity mapping across frames of a radiometric camera; `TrainedRange`: the range
  the student's training data were converted with, for these frames only (the demo's default when the
  weights carry one).
- NaN and infinite pixels of a float frame are left out of the min-max scaling and set to 0
  (with a fixed range too); their count is returned with the frame and reported in the summary.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from ..options import check_low_high
from .layout import THERMAL, luma_from_cv2
from .media import quiet_media_logs

FRAME_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")
GREY_TOLERANCE = 4.0  # mean channel spread (8-bit levels) still taken as grey in lossy frames
GREY_ROUNDING = 2  # largest channel difference (levels) of a lossless grey picture saved in colour
MAX_BAD_IN_A_ROW = 50  # a video giving this many unreadable frames in a row is abandoned
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
OPEN_TIMEOUT_MS = 10000


@dataclass
class Frame:
    """One input frame: `thermal` (H, W) float32 in [0, 1], or None with `error` saying why; a bag's frame
    also carries its message's header (stamp, frame_id) and its receive time in ns."""
    name: str
    source: str
    thermal: Optional[np.ndarray] = None
    nonfinite: int = 0
    error: Optional[str] = None
    header: Any = None
    time_ns: int = 0


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_frames(path: str | os.PathLike, what: str = "--input") -> list[Path]:
    """The image files to segment: `path` itself, or the frames directly inside a folder; `what`: the
    argument that named it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
    raise FileNotFoundError(f"{what} {path}: no such file or folder")


def check_thermal_range(thermal_range: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
    """(low, high) as floats, or None; ValueError unless both are finite and low < high (options.check_low_high)."""
    if thermal_range is None:
        return None
    low, high = map(float, thermal_range)
    return check_low_high("--thermal-range", low, high)


def grey(colour: np.ndarray, lossy: bool = False) -> Optional[np.ndarray]:
    """The grey rule, the one place that says when a 3-channel picture (cv2 order) holds a grey thermal
    image: its channels are equal (the first is taken), differ by at most GREY_ROUNDING levels at every pixel
    (a grey picture rounded when saved in colour), or, in an 8-bit lossy picture (JPEG, video), by at most
    GREY_TOLERANCE levels on average (compression noise in the chroma); in the last two cases its luma is
    taken. None for a colour picture."""
    if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2]):
        return np.ascontiguousarray(colour[:, :, 0])
    if colour.dtype not in (np.uint8, np.uint16):
        return None
    spread = colour.max(2).astype(np.int32) - colour.min(2)
    if int(spread.max()) <= GREY_ROUNDING:
        return luma_from_cv2(colour)
    if lossy and colour.dtype == np.uint8 and float(np.mean(spread)) <= GREY_TOLERANCE:
        return luma_from_cv2(colour)
    return None


def single_channel(raw: np.ndarray, source: str, lossy: bool = False) -> np.ndarray:
    """The thermal channel of a decoded frame (cv2 channel order); ValueError for colour frames."""
    if raw.ndim == 2:
        return raw
    if raw.shape[2] == 4:
        return raw[:, :, THERMAL]  # an MFNet frame: its 4th channel is the thermal one
    if raw.shape[2] == 3:
        thermal = grey(raw, lossy)
        if thermal is None:
            raise ValueError(f"{source}: expected a single-channel thermal image or a 4-channel MFNet PNG, "
                             f"got 3 channels that differ (a colour picture)")
        return thermal
    raise ValueError(f"{source}: expected a single-channel thermal image or a 4-channel MFNet PNG, "
                     f"got {raw.shape[2]} channels")


@dataclass(frozen=True)
class TrainedRange:
    """The raw range the student's training frames were converted with (`thermal_range` of their dataset.json,
    which the weights carry), used when no --thermal-range is given: 16-bit and float frames of the same
    radiometric camera are then scaled as the training frames were, not per frame; 8-bit frames are taken as
    scaled already (value / 255)."""
    low: float
    high: float

    def for_frame(self, raw: np.ndarray) -> Optional[tuple[float, float]]:
        return None if raw.dtype == np.uint8 else (self.low, self.high)


# how frames are scaled (scale_thermal): a (low, high) range, the training data's, or None (per-frame min-max)
Scaling = Union[Sequence[float], TrainedRange, None]


def frame_scaling(given: Optional[Sequence[float]], trained: Optional[Sequence[float]]
                  ) -> Scaling:
    """How own frames are scaled: the range given (--thermal-range), else the training data's (`trained`,
    the weights' DatasetInfo.thermal_range) as a TrainedRange, else None (per-frame min-max)."""
    if given is not None:
        return given
    return TrainedRange(*trained) if trained is not None else None


def scale_thermal(raw: np.ndarray, thermal_range: Optional[Sequence[float] | TrainedRange] = None
                  ) -> tuple[np.ndarray, int]:
    """(float32 (H, W) in [0, 1], number of non-finite pixels set to 0) for a single-channel frame."""
    if isinstance(thermal_range, TrainedRange):
        thermal_range = thermal_range.for_frame(raw)
    bad = ~np.isfinite(raw) if np.issubdtype(raw.dtype, np.floating) else None
    n_bad = int(bad.sum()) if bad is not None else 0
    if thermal_range is not None:
        low, high = check_thermal_range(thermal_range)
        out = np.clip((raw.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    elif raw.dtype == np.uint8:
        out = raw.astype(np.float32) / 255.0
    else:
        x = raw.astype(np.float32)
        finite = x[~bad] if n_bad else x
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        out = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if n_bad:
        out[bad] = 0.0
    return out, n_bad


def read_frame_file(path: str | os.PathLike, thermal_range: Optional[Sequence[float]] = None
                    ) -> tuple[np.ndarray, int]:
    """One image file scaled to [0, 1], with its count of non-finite pixels; ValueError naming the file."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: cannot read the image (missing, corrupt or not an image)")
    raw = single_channel(raw, str(path), lossy=Path(path).suffix.lower() in LOSSY_EXTENSIONS)
    return scale_thermal(raw, thermal_range)


def read_thermal(path: str | os.PathLike, thermal_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """One thermal frame as float32 (H, W) in [0, 1]; ValueError naming the file when unusable."""
    return read_frame_file(path, thermal_range)[0]


def iter_images(paths: Sequence[Path], thermal_range: Optional[Sequence[float]] = None) -> Iterator[Frame]:
    """The frames of image files in order; unreadable ones come with their error."""
    stems = [p.stem for p in paths]
    for p in paths:
        name = p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix[1:]}"
        try:
            thermal, n_bad = read_frame_file(p, thermal_range)
        except ValueError as exc:
            yield Frame(name, str(p), error=str(exc))
            continue
        yield Frame(name, str(p), thermal, n_bad)


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # as the container reports it (0 when unknown)
    fps: float  # 0 when unknown
    height: int
    width: int


def open_video(path: str | os.PathLike) -> cv2.VideoCapture:
    """An opened cv2.VideoCapture; ValueError naming the file when it cannot be opened."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    quiet_media_logs()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"--input {path}: cannot open the video (corrupt, or a format OpenCV cannot read)")
    return cap


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and frame size as the container reports them."""
    cap = open_video(path)
    try:
        count, fps, height, width = (_prop(cap, p) for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FPS,
                                                             cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_WIDTH))
        return VideoInfo(int(count), fps, int(height), int(width))
    finally:
        cap.release()


def _prop(cap: cv2.VideoCapture, prop: int) -> float:
    """A capture property, 0 when the backend does not know it (it answers -1, 0 or NaN)."""
    value = cap.get(prop)
    return value if math.isfinite(value) and value > 0 else 0.0


def fill_from_capture(frame: Frame, bgr: np.ndarray, thermal_range: Optional[Sequence[float]] = None) -> Frame:
    """Set the frame's thermal from a cv2 capture's (lossy) picture, or its error when it is not grey."""
    try:
        frame.thermal, frame.nonfinite = scale_thermal(single_channel(bgr, frame.source, lossy=True), thermal_range)
    except ValueError as exc:
        frame.error = str(exc)
    return frame


def iter_video(path: str | os.PathLike, thermal_range: Optional[Sequence[float]] = None) -> Iterator[Frame]:
    """Every frame of a video in order. A frame that cannot be decoded before the reported frame
    count is reached, or whose size differs from the video's, comes with its error and the rest
    goes on (until MAX_BAD_IN_A_ROW unreadable frames in a row)."""
    info = video_info(path)
    cap = open_video(path)
    stem, size = Path(path).stem, (info.height, info.width) if info.height > 0 else None
    index, bad_in_a_row = 0, 0
    try:
        while True:
            ok, bgr = cap.read()
            frame = Frame(f"{stem}_{index:06d}", f"{path} frame {index}")
            if not ok or bgr is None:
                if index >= info.frames:
                    return  # the end
                bad_in_a_row += 1
                frame.error = f"{path}: frame {index} of {info.frames} could not be decoded"
                if bad_in_a_row >= MAX_BAD_IN_A_ROW:
                    yield Frame(frame.name, frame.source, error=f"{frame.error}; giving up after "
                                f"{MAX_BAD_IN_A_ROW} unreadable frames in a row")
                    return
            else:
                bad_in_a_row = 0
                size = size or bgr.shape[:2]
                if bgr.shape[:2] != size:
                    frame.error = (f"{path}: frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                   f"the video is {size[1]}x{size[0]}")
                else:
                    fill_from_capture(frame, bgr, thermal_range)
            yield frame
            index += 1
    finally:
        cap.release()


def is_live(text: str) -> bool:
    """A camera index (digits) or a URL, and not an existing file or folder of that name."""
    return not Path(text).exists() and (text.isdigit() or bool(URL.match(text)))


def open_live(text: str, what: str = "--input") -> cv2.VideoCapture:
    """An opened capture of a camera index or stream URL; ValueError naming it otherwise."""
    quiet_media_logs()  # OpenCV's and FFmpeg's lines around ours: off
    if text.isdigit():
        cap = cv2.VideoCapture(int(text))
    else:
        cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
    if not cap.isOpened():
        kind = "camera" if text.isdigit() else "stream"
        raise ValueError(f"{what} {text}: cannot open the {kind} (OpenCV could not connect or decode it)")
    return cap


def capture_fps(cap: cv2.VideoCapture) -> float:
    """The frame rate a capture reports, 0 when it does not know."""
    return _prop(cap, cv2.CAP_PROP_FPS)


def iter_live(cap: cv2.VideoCapture, text: str, thermal_range: Optional[Sequence[float]] = None) -> Iterator[Frame]:
    """Frames of an opened capture until a read fails (the stream ended or the camera went away)."""
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return
        yield fill_from_capture(Frame(f"live_{index:06d}", f"{text} frame {index}"), bgr, thermal_range)
        index += 1
