"""The one loop of `run_demo_student.py --input`: frames of a `Source` (sources.py) through a `Predictor`
(predictor.py) into `Sink`s (sinks.py), in batches, with the summary it returns.

A frame that cannot be used is reported and skipped (every sink hears of it: the overlay video writes a
black frame in its place, so that frame i of the output is frame i of the input). Reading stops at the
source's end, after `max_frames` frames, or at Ctrl-C: `StopOnCtrlC` turns the first SIGINT into a request
honoured before the next frame is read, so the frames already read are segmented and every output is closed
and complete; a second Ctrl-C interrupts at once (and, as any error, aborts the sinks).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from ..data.frames import Frame, Scaling
from .predictor import Prediction, Predictor
from .sinks import Output, Sink
from .sources import Source

T = TypeVar("T")


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
        return {"segmented": self.segmented, "skipped": self.skipped, "nonfinite_pixels": self.nonfinite,
                "frames_read": len(self.segmented) + len(self.skipped)}


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
    """Why a source stopped being read: "end", "max-frames" or "interrupted" (Ctrl-C)."""

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


def _batches(frames: Iterable[Frame], predict: Callable[[list[np.ndarray]], list[Prediction]],
             emit: Callable[[Frame, Optional[Prediction]], None], batch_size: int, total: Optional[int],
             show: bool) -> Throughput:
    """Segment `frames` in batches of `batch_size` usable frames and pass each frame, in input order, to
    `emit` with its prediction (None for a frame that is skipped, reported by its error)."""
    pending: list[Frame] = []
    speed = Throughput()
    bar = tqdm(total=total or None, desc="segmenting", unit="frame", disable=not show, dynamic_ncols=True)

    def flush() -> None:
        ready = [f.thermal for f in pending if f.thermal is not None]
        t0 = time.perf_counter()
        predictions = iter(predict(ready) if ready else [])
        speed.add(len(ready), time.perf_counter() - t0)
        for f in pending:
            if f.thermal is None:
                tqdm.write(f"skipped: {f.error}")
            emit(f, next(predictions) if f.thermal is not None else None)
        bar.update(len(pending))
        pending.clear()

    with bar:
        for frame in frames:
            pending.append(frame)
            if sum(f.thermal is not None for f in pending) == batch_size:
                flush()
        flush()
    return speed


def segment(source: Source, predictor: Predictor, sinks: Sequence[Sink], scaling: Scaling = None,
            batch_size: int = 1, max_frames: Optional[int] = None, show: bool = True) -> dict:
    """Every frame of `source` (up to `max_frames`, or Ctrl-C) segmented by `predictor` into `sinks`; the
    summary: frames segmented and skipped, speed, why reading ended, and the source's and sinks' sections.
    The source is closed, and the sinks closed (or aborted on an error or a second Ctrl-C)."""
    records = Records(predictor.n_class)

    def emit(frame: Frame, prediction: Optional[Prediction]) -> None:
        out = Output(frame, prediction, predictor.palette) if records.add(frame, prediction and prediction.labels) else None
        for sink in sinks:
            sink.put(frame, out)

    ending = Ending()
    try:
        with StopOnCtrlC() as stop:
            frames = bounded(source.frames(scaling), max_frames, stop, ending)
            speed = _batches(frames, predictor, emit, batch_size, source.count(), show)
    except BaseException:  # an error or a second Ctrl-C: no half-written bag is left in the run folder
        for sink in sinks:
            sink.abort()
        raise
    finally:
        source.close()
    for sink in sinks:
        sink.close()
    summary = {**records.summary(), "backend": predictor.name, "batch_size": batch_size, **speed.summary(),
               "ended": ending.reason, "temporal_smoothing": predictor.smoothing}
    for part in [source.report()] + [sink.summary() for sink in sinks]:
        for section, fields in part.items():
            summary.setdefault(section, {}).update(fields)
    for line in source.warnings(summary["frames_read"]):
        print(line, file=sys.stderr, flush=True)
    return summary


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
