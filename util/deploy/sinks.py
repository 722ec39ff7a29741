"""Where segmented frames go: one `Sink` per output of `run_demo_student.py --input`.

    FramePictures  NAME_mask.png and NAME_overlay.png of each image file
    LabelPictures  class ids as single-channel PNGs (NAME_label.png of image files; labels/NAME.png of the
                   frames of a video, bag or live source with --save-labels)
    OverlayVideo   NAME_overlay.mp4 (.avi for an .avi input) of a video, bag or live source
    BagWriter      a new bag of the input's kind: PREFIX/labels, PREFIX/overlay, optionally PREFIX/confidence

Each takes one frame at a time (`put`: the frame and its `Output`, None for a frame that was skipped), and is
closed (`close`: complete) or aborted (`abort`: a failed run; a half-written bag is removed); `summary` gives
its sections of summary.json. `sinks_for` says which a source gets.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..data.bag_pixels import IMAGE
from ..data.frames import Frame
from ..data.layout import cv2_from_rgb, write_png
from ..data.rosbag import BagSource, typestore
from ..engine.pictures import colorize, overlay, save_rgb, thermal_to_rgb
from .predictor import Prediction
from .sources import BagTopic, Source

DEFAULT_FPS = 25.0  # for videos and recordings that do not say
DEFAULT_PREFIX = "/cekd"


class Output:
    """A segmented frame's pictures, each made once for every sink that wants it."""

    def __init__(self, frame: Frame, prediction: Prediction, palette: Sequence[Sequence[int]]):
        self.frame, self.labels, self.confidence, self.palette = frame, prediction.labels, prediction.confidence, palette

    @cached_property
    def mask(self) -> np.ndarray:
        return colorize(self.labels, self.palette)

    @cached_property
    def overlay(self) -> np.ndarray:
        return overlay(thermal_to_rgb(self.frame.thermal), self.mask, 0.5)


class Sink:
    def put(self, frame: Frame, out: Optional[Output]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.close()

    def summary(self) -> dict[str, dict]:
        return {}


def write_label(path: Path, pred: np.ndarray) -> None:
    """One frame's class ids as a single-channel PNG (in the run's own new folder, written directly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, pred)


class FramePictures(Sink):
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def put(self, frame: Frame, out: Optional[Output]) -> None:
        if out is not None:
            save_rgb(self.out_dir / f"{frame.name}_mask.png", out.mask)
            save_rgb(self.out_dir / f"{frame.name}_overlay.png", out.overlay)


class LabelPictures(Sink):
    """Class ids of each segmented frame as `folder`/NAME`suffix`.png."""

    def __init__(self, folder: Path, suffix: str = ""):
        self.folder, self.suffix = folder, suffix

    def put(self, frame: Frame, out: Optional[Output]) -> None:
        if out is not None:
            write_label(self.folder / f"{frame.name}{self.suffix}.png", out.labels)


class OverlayVideo(Sink):
    """cv2.VideoWriter of RGB frames (mp4v in .mp4, MJPG in .avi), opened at the first frame.

    The output-size rule: every other output keeps each frame at its own size (PNGs, labels, a bag's
    messages); a video has one size, the input video's or else its first frame's, so a frame of another
    size is resized to it (bilinear) and counted in `resized` (summary.json: video.resized_to_video).
    Only a skipped frame becomes a black placeholder."""

    def __init__(self, path: Path, fps: float, size: Optional[tuple[int, int]], fps_assumed: bool = False,
                 reported_frames: Optional[int] = None):
        self.path, self.fps, self.size, self.fps_assumed = path, fps, size, fps_assumed
        self.reported_frames = reported_frames  # the frame count its input said it has (None: unknown)
        self.writer, self.frames, self.placeholders, self.resized = None, 0, 0, 0

    def put(self, frame: Frame, out: Optional[Output]) -> None:
        self.write(None if out is None else out.overlay)

    def write(self, rgb: Optional[np.ndarray]) -> None:
        """Write a frame (resized to the video's size when it has another); None writes a black frame of the
        video's size (a skipped frame)."""
        if self.writer is None and (rgb is not None or self.size):
            self._open(self.size or rgb.shape[:2])
        if rgb is None:
            self.placeholders += 1
            if self.writer is None:
                return  # size not known yet: counted, written on opening
            rgb = np.zeros(self.size + (3,), np.uint8)
        elif rgb.shape[:2] != self.size:
            rgb = cv2.resize(rgb, self.size[::-1], interpolation=cv2.INTER_LINEAR)
            self.resized += 1
        self.writer.write(cv2_from_rgb(rgb))
        self.frames += 1

    def _open(self, size: tuple[int, int]) -> None:
        self.size = tuple(size)
        fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size[::-1])
        if not self.writer.isOpened():
            raise OSError(f"{self.path}: cannot write a {fourcc} video here")
        for _ in range(self.placeholders):
            self.writer.write(np.zeros(self.size + (3,), np.uint8))
            self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()

    def summary(self) -> dict[str, dict]:
        """summary.json's "video": what was written, at which size, and how many frames were filled or resized."""
        height, width = self.size or (None, None)
        return {"video": {"output": str(self.path), "frames_written": self.frames, "height": height, "width": width,
                          "black_placeholders": self.placeholders, "resized_to_video": self.resized,
                          "fps": self.fps, "fps_assumed": self.fps_assumed,
                          "reported_frames": self.reported_frames}}


class BagWriter(Sink):
    """A new bag of the input's kind (ROS 1 file, ROS 2 folder with the same storage) holding
    PREFIX/labels (mono8 class ids), PREFIX/overlay (rgb8) and optionally PREFIX/confidence (mono8,
    max softmax probability x 255), each message with its input frame's header, at its receive time.
    Written under a hidden folder and moved into place on `close`."""

    def __init__(self, source: BagSource, out_dir: Path, prefix: str = DEFAULT_PREFIX, confidence: bool = False):
        stem = source.path.name if source.ros2 else source.path.stem
        self.path = out_dir / (f"{stem}_cekd" if source.ros2 else f"{stem}_cekd.bag")
        self.tmp_dir = out_dir / f".{self.path.name}.writing"
        self.tmp_dir.mkdir()
        tmp = self.tmp_dir / self.path.name
        self.ros2, self.store = source.ros2, typestore(source.ros2)
        if source.ros2:
            from rosbags.rosbag2 import StoragePlugin, Writer
            plugin = StoragePlugin.MCAP if source.storage == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer(tmp, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        else:
            from rosbags.rosbag1 import Writer
            self.writer = Writer(tmp)
        self.writer.open()
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        names = ["labels", "overlay"] + (["confidence"] if confidence else [])
        self.topics = {n: f"{prefix}/{n}" for n in names}
        self.conns = {n: self.writer.add_connection(t, IMAGE, typestore=self.store) for n, t in self.topics.items()}
        self.written = {t: 0 for t in self.topics.values()}

    def _image(self, header, pixels: np.ndarray, encoding: str):
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        height, width = data.shape[:2]
        return self.store.types[IMAGE](header=header, height=height, width=width, encoding=encoding,
                                       is_bigendian=0, step=data.size // height, data=data.ravel())

    def put(self, frame: Frame, out: Optional[Output]) -> None:
        if out is not None:
            self.write(frame, out.labels, out.overlay, out.confidence)

    def write(self, frame: Frame, labels: np.ndarray, overlay_rgb: np.ndarray,
              confidence: Optional[np.ndarray] = None) -> None:
        images = {"labels": (labels, "mono8"), "overlay": (overlay_rgb, "rgb8")}
        if "confidence" in self.conns and confidence is not None:
            images["confidence"] = (confidence, "mono8")
        for name, (pixels, encoding) in images.items():
            msg = self._image(frame.header, pixels, encoding)
            raw = self.store.serialize_cdr(msg, IMAGE) if self.ros2 else self.store.serialize_ros1(msg, IMAGE)
            self.writer.write(self.conns[name], frame.time_ns, raw)
            self.written[self.topics[name]] += 1

    def close(self) -> None:
        """Finish the bag and move it into place."""
        self.writer.close()
        os.replace(self.tmp_dir / self.path.name, self.path)
        shutil.rmtree(self.tmp_dir)

    def abort(self) -> None:
        """Drop the unfinished bag (a run that failed): nothing half-written is left behind."""
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            self.writer.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def summary(self) -> dict[str, dict]:
        return {"bag": {"output": str(self.path), "written": self.written}}


def sinks_for(source: Source, out_dir: Path, save_labels: bool = False, topic_prefix: str = DEFAULT_PREFIX,
              confidence: bool = False) -> list[Sink]:
    """The outputs of a source: pictures and label maps of image files; the overlay video of the others,
    with an output bag for a bag and, with `save_labels`, labels/NAME.png."""
    if source.kind == "files":
        return [FramePictures(out_dir), LabelPictures(out_dir, "_label")]
    rate = source.frame_rate()
    sinks: list[Sink] = [OverlayVideo(out_dir / f"{source.stem}_overlay{source.overlay_suffix}",
                                      rate or DEFAULT_FPS, source.frame_size(), fps_assumed=not rate,
                                      reported_frames=source.count())]
    if isinstance(source, BagTopic):
        sinks.append(BagWriter(source.bag, out_dir, topic_prefix, confidence))
    if save_labels:
        sinks.append(LabelPictures(out_dir / "labels"))
    return sinks
