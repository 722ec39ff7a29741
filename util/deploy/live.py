"""Live thermal sources: a camera index (``--input 0``) or a stream URL OpenCV opens
(``http://host:port/stream.mjpg``, ``rtsp://...``), read until the stream ends, ``--max-frames``
frames have been read, or Ctrl-C.

Ctrl-C during a live run (or a bag run) does not abort it: `StopOnCtrlC` turns the first SIGINT
into a request that the frame source honours before reading the next frame, so the frames already
read are segmented and every output is closed and complete. A second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, TypeVar

import cv2

from ..data.media import quiet_media_logs
from .frames import Frame, fill_from_capture

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
OPEN_TIMEOUT_MS = 10000
T = TypeVar("T")


def is_live(text: str) -> bool:
    """A camera index (digits) or a URL, and not an existing file or folder of that name."""
    return not Path(text).exists() and (text.isdigit() or bool(URL.match(text)))


def open_live(text: str) -> cv2.VideoCapture:
    """An opened capture of a camera index or stream URL; ValueError naming it otherwise."""
    quiet_media_logs()  # OpenCV's and FFmpeg's lines around ours: off
    if text.isdigit():
        cap = cv2.VideoCapture(int(text))
    else:
        cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
    if not cap.isOpened():
        what = "camera" if text.isdigit() else "stream"
        raise ValueError(f"--input {text}: cannot open the {what} (OpenCV could not connect or decode it)")
    return cap


class StopOnCtrlC:
    """Within `with`: the first Ctrl-C sets `requested` (the run stops before the next frame);
    a second one raises KeyboardInterrupt. Outside the main thread nothing is changed."""

    def __init__(self):
        self.requested, self._old = False, None

    def _handler(self, signum, stack) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Ending:
    """Why a recording or stream stopped being read: "end", "max-frames" or "interrupted" (Ctrl-C)."""

    def __init__(self):
        self.reason = "end"


def bounded(frames: Iterable[T], max_frames: Optional[int], stop: StopOnCtrlC, ending: Ending) -> Iterator[T]:
    """`frames` until `max_frames` have been given or Ctrl-C was pressed (checked before each frame)."""
    count = 0
    for frame in frames:
        if stop.requested:
            ending.reason = "interrupted"
            return
        yield frame
        count += 1
        if max_frames is not None and count >= max_frames:
            ending.reason = "max-frames"
            return
    if stop.requested:
        ending.reason = "interrupted"


def iter_live(cap: cv2.VideoCapture, text: str, thermal_range: Optional[Sequence[float]] = None) -> Iterator[Frame]:
    """Frames of an opened capture until a read fails (the stream ended or the camera went away)."""
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return
        yield fill_from_capture(Frame(f"live_{index:06d}", f"{text} frame {index}"), bgr, thermal_range)
        index += 1
