"""The student on a user's own thermal frames (not in MFNet layout): image files, folders, videos.

Reading and scaling of frames: frames.py (8-bit: value / 255; 16-bit and float: per-frame
min-max or a fixed `thermal_range`; NaN and infinite pixels of float frames are left out of the
scaling, set to 0 and counted in the summary). Frames are resized to the model size (bilinear),
segmented in batches by any backend of backends.py, and the prediction is resized back to
the frame size (nearest).

Outputs: for image files NAME_mask.png, NAME_overlay.png and NAME_label.png (class ids); for a
video NAME_overlay.mp4 (.avi for an .avi input) with the input's frame count and frame rate, and
with `save_labels` labels/NAME_000123.png. A frame that cannot be used is reported and skipped;
in the overlay video a black frame takes its place, so that frame i of the output is frame i of
the input. The video has one size: a frame of another size is resized to it and counted
(OverlayVideo, the one output-size rule).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.layout import cv2_from_rgb, write_png
from ..engine.pictures import colorize, overlay, save_rgb, thermal_to_rgb
from .backends import Segmenter
from .frames import Frame, iter_images, iter_video, video_info

DEFAULT_FPS = 25.0  # for videos whose container does not say


def to_model_input(thermal: np.ndarray, height: int, width: int) -> np.ndarray:
    """(1, height, width) float32 in [0, 1]: the frame resized bilinearly (as the demo always did)."""
    t = torch.from_numpy(np.ascontiguousarray(thermal, dtype=np.float32))[None, None]
    if t.shape[-2:] != (height, width):
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t[0].clamp(0, 1).numpy()


def predict_batch(segmenter: Segmenter, thermals: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Class ids (H, W) uint8 for each frame, at each frame's own size."""
    x = np.stack([to_model_input(t, segmenter.height, segmenter.width) for t in thermals])
    labels = torch.from_numpy(segmenter.labels(x))
    out = []
    for lab, t in zip(labels, thermals):
        if lab.shape != t.shape:
            lab = F.interpolate(lab[None, None], size=t.shape, mode="nearest")[0, 0]
        out.append(lab.numpy())
    return out


class Throughput:
    """Frames per second, end to end and of the model alone, after the first batch (warm-up)."""

    def __init__(self):
        self.start = self.warm = time.perf_counter()
        self.frames = self.warm_frames = 0
        self.model_s = self.warm_model_s = 0.0

    def add(self, frames: int, model_s: float) -> None:
        self.frames += frames
        self.model_s += model_s
        if self.warm_frames == 0 and frames:
            self.warm, self.warm_frames, self.warm_model_s = time.perf_counter(), frames, self.model_s

    def summary(self) -> dict:
        end = time.perf_counter()
        timed, warmup = self.frames - self.warm_frames, self.warm_frames
        if timed > 0:
            wall, model = end - self.warm, self.model_s - self.warm_model_s
        else:  # a single batch: nothing after the warm-up, so count it
            timed, warmup, wall, model = self.frames, 0, end - self.start, self.model_s
        return {"seconds": end - self.start, "timed_frames": timed, "warmup_frames": warmup,
                "frames_per_second": timed / wall if timed and wall > 0 else float("nan"),
                "model_frames_per_second": timed / model if timed and model > 0 else float("nan")}


def segment_stream(segmenter: Segmenter, frames: Iterable[Frame],
                   emit: Callable[[Frame, Optional[np.ndarray]], None], batch_size: int = 1,
                   total: Optional[int] = None, show: bool = True,
                   predict: Optional[Callable[[list[np.ndarray]], list]] = None) -> dict:
    """Segment `frames` in batches of `batch_size` usable frames and pass each frame, in input
    order, to `emit` with its class ids (None for a frame that is skipped, reported by its error).
    `predict` (default: predict_batch) maps a batch of thermal frames to what `emit` receives."""
    pending: list[Frame] = []
    speed = Throughput()
    bar = tqdm(total=total or None, desc="segmenting", unit="frame", disable=not show, dynamic_ncols=True)

    def flush() -> None:
        ready = [f.thermal for f in pending if f.thermal is not None]
        t0 = time.perf_counter()
        labels = iter((predict or (lambda t: predict_batch(segmenter, t)))(ready) if ready else [])
        speed.add(len(ready), time.perf_counter() - t0)
        for f in pending:
            if f.thermal is None:
                tqdm.write(f"skipped: {f.error}")
            emit(f, next(labels) if f.thermal is not None else None)
        bar.update(len(pending))
        pending.clear()

    with bar:
        for frame in frames:
            pending.append(frame)
            if sum(f.thermal is not None for f in pending) == batch_size:
                flush()
        flush()
    return {"backend": segmenter.name, "batch_size": batch_size, **speed.summary()}


class Records:
    """What the summary lists: segmented and skipped frames, and the non-finite pixels met."""

    def __init__(self, n_class: int):
        self.n_class, self.segmented, self.skipped, self.nonfinite = n_class, [], [], 0

    def add(self, frame: Frame, pred: Optional[np.ndarray]) -> bool:
        if pred is None:
            self.skipped.append({"file": frame.source, "reason": frame.error})
            return False
        self.nonfinite += frame.nonfinite
        self.segmented.append({"file": frame.source, "output": frame.name, "height": int(pred.shape[0]),
                               "width": int(pred.shape[1]), "nonfinite_pixels": frame.nonfinite,
                               "class_pixels": np.bincount(pred.ravel(), minlength=self.n_class).tolist()})
        return True

    def summary(self) -> dict:
        return {"segmented": self.segmented, "skipped": self.skipped, "nonfinite_pixels": self.nonfinite}


def write_label(path: Path, pred: np.ndarray) -> None:
    """One frame's class ids as a single-channel PNG (in the run's own new folder, written directly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, pred)


def segment_images(segmenter: Segmenter, paths: Sequence[Path], out_dir: Path,
                   thermal_range: Optional[Sequence[float]] = None, batch_size: int = 1, show: bool = True,
                   predict: Optional[Callable[[list[np.ndarray]], list]] = None) -> dict:
    """Segment image files; write NAME_mask.png, NAME_overlay.png and NAME_label.png (class ids)."""
    records = Records(segmenter.n_class)

    def emit(frame: Frame, pred: Optional[np.ndarray]) -> None:
        if records.add(frame, pred):
            mask = colorize(pred, segmenter.info.palette)
            save_rgb(out_dir / f"{frame.name}_mask.png", mask)
            save_rgb(out_dir / f"{frame.name}_overlay.png", overlay(thermal_to_rgb(frame.thermal), mask, 0.5))
            write_label(out_dir / f"{frame.name}_label.png", pred)

    speed = segment_stream(segmenter, iter_images(paths, thermal_range), emit, batch_size, len(paths), show, predict)
    return {**records.summary(), **speed}


class OverlayVideo:
    """cv2.VideoWriter of RGB frames (mp4v in .mp4, MJPG in .avi), opened at the first frame.

    The output-size rule: every other output keeps each frame at its own size (PNGs, labels, a bag's
    messages); a video has one size, the input video's or else its first frame's, so a frame of another
    size is resized to it (bilinear) and counted in `resized` (summary.json: video.resized_to_video).
    Only a skipped frame becomes a black placeholder."""

    def __init__(self, path: Path, fps: float, size: Optional[tuple[int, int]]):
        self.path, self.fps, self.size = path, fps, size
        self.writer, self.frames, self.placeholders, self.resized = None, 0, 0, 0

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

    def summary(self) -> dict:
        """summary.json's "video": what was written, at which size, and how many frames were filled or resized."""
        height, width = self.size or (None, None)
        return {"output": str(self.path), "frames_written": self.frames, "height": height, "width": width,
                "black_placeholders": self.placeholders, "resized_to_video": self.resized, "fps": self.fps}


def segment_video(segmenter: Segmenter, path: Path, out_dir: Path, thermal_range: Optional[Sequence[float]] = None,
                  batch_size: int = 1, save_labels: bool = False, show: bool = True,
                  predict: Optional[Callable[[list[np.ndarray]], list]] = None) -> dict:
    """Segment every frame of a video; write the overlay video and, with `save_labels`, labels/NAME_i.png."""
    info = video_info(path)
    suffix = ".avi" if path.suffix.lower() == ".avi" else ".mp4"
    video = OverlayVideo(out_dir / f"{path.stem}_overlay{suffix}", info.fps or DEFAULT_FPS,
                         (info.height, info.width) if info.height and info.width else None)
    records = Records(segmenter.n_class)

    def emit(frame: Frame, pred: Optional[np.ndarray]) -> None:
        if not records.add(frame, pred):
            return video.write(None)
        video.write(overlay(thermal_to_rgb(frame.thermal), colorize(pred, segmenter.info.palette), 0.5))
        if save_labels:
            write_label(out_dir / "labels" / f"{frame.name}.png", pred)

    try:
        speed = segment_stream(segmenter, iter_video(path, thermal_range), emit, batch_size, info.frames, show,
                               predict)
    finally:
        video.close()
    return {**records.summary(), **speed,
            "video": {**video.summary(), "reported_frames": info.frames, "fps_assumed": not info.fps}}


def report_lines(summary: dict, out_dir: Path) -> list[str]:
    """What was done, and the sustained speed with the backend named."""
    bad = summary["nonfinite_pixels"]
    lines = [f"segmented {len(summary['segmented'])}, skipped {len(summary['skipped'])}"
             + (f"; {bad} NaN/infinite pixel(s) set to 0" if bad else "") + f"; outputs in {out_dir}"]
    video = summary.get("video") or {}
    if video.get("resized_to_video"):
        lines.append(f"{video['resized_to_video']} frame(s) of another size resized to the overlay video's "
                     f"{video['height']}x{video['width']} (every other output keeps each frame's own size)")
    if summary["segmented"]:
        warm = f" after {summary['warmup_frames']} warm-up frame(s)" if summary["warmup_frames"] else ""
        lines.append(f"{summary['frames_per_second']:.1f} frames/s sustained (reading, inference, writing; model "
                     f"alone {summary['model_frames_per_second']:.1f} frames/s, "
                     f"{1000 / summary['model_frames_per_second']:.1f} ms/frame) over {summary['timed_frames']} "
                     f"frame(s){warm} on {summary['backend']}, batch {summary['batch_size']}")
    return lines
