"""OpenCV's and FFmpeg's own logging turned off: the one place for it, used wherever we open media.

Their lines (``[tcp @ 0x...] Connection to tcp://... failed``, ``[ WARN:0@1.3] global cap.cpp:212 ...``,
``can't open camera by index``, imread's warnings on a broken file) would surround our own one-line error,
which already names the input and what went wrong. layout.py calls :func:`quiet_media_logs` when it is
imported (every module that decodes images imports it), and the capture openers (frames.open_video,
frames.open_live) call it before they open, since OpenCV reads FFmpeg's level at its first capture.

To see those lines again, set ``OPENCV_LOG_LEVEL`` (e.g. ``INFO``) and ``OPENCV_FFMPEG_LOGLEVEL`` (e.g. ``32``)
in the environment: a value given there is left as it is.
"""
from __future__ import annotations

import os

import cv2

AV_LOG_QUIET = -8  # FFmpeg's level that prints nothing
_quiet = False


def quiet_media_logs() -> None:
    """Silence OpenCV's log and FFmpeg's (through OpenCV), unless the environment sets their levels."""
    global _quiet
    if _quiet:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(AV_LOG_QUIET))
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    _quiet = True
