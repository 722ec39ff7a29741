"""`run_demo_student.py --input` on recordings and live sources: a ROS bag (rosbag.py) or a camera
index / stream URL (live.py), segmented frame by frame like a video (inference.py).

Outputs in the run folder: NAME_overlay.mp4 (a black frame stands for each skipped frame; a frame
of another size than the first is resized to the video's, and counted: inference.OverlayVideo), for a
bag also a new bag of the same kind (rosbag.BagWriter: PREFIX/labels, PREFIX/overlay, optionally
PREFIX/confidence, each with its input frame's header and receive time), and summary.json with
the frames read, segmented, skipped (with why), the messages written per topic, why reading
ended ("end", "max-frames", "interrupted") and, for a damaged bag, the damage.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..engine.pictures import colorize, overlay, thermal_to_rgb
from ..options import integer
from .backends import Segmenter
from .frames import Frame
from .inference import DEFAULT_FPS, OverlayVideo, Records, segment_stream, write_label
from .live import Ending, StopOnCtrlC, bounded, is_live, iter_live, open_live
from .rosbag import BagSource, BagWriter, frame_rate, is_bag, iter_bag, pick_topic
from .smoothing import ProbabilityPredictor

TOPIC_NAME = re.compile(r"^/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def topic_prefix(text: str) -> str:
    """argparse type of --topic-prefix: a ROS name such as /cekd or /robot/cekd."""
    if not TOPIC_NAME.match(text):
        raise argparse.ArgumentTypeError(f"expected a ROS topic name such as /cekd, got {text!r}")
    return "/" + text.strip("/")


def add_recording_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", default=None,
                   help="with a bag --input: the thermal image topic (default: the only single-channel one)")
    p.add_argument("--topic-prefix", type=topic_prefix, default="/cekd",
                   help="with a bag --input: topics of the output bag (PREFIX/labels, PREFIX/overlay, ...)")
    p.add_argument("--confidence", action="store_true",
                   help="with a bag --input: also write PREFIX/confidence (mono8, max softmax probability x 255)")
    p.add_argument("--max-frames", type=integer(1), default=None,
                   help="with a bag, camera or stream --input: stop after N frames (Ctrl-C also stops cleanly)")


class Recording:
    """A bag or live source, checked before any weights are loaded or anything is written."""
    kind = ""

    def describe(self) -> str:
        raise NotImplementedError

    def frames(self, thermal_range: Optional[Sequence[float]]) -> Iterable[Frame]:
        raise NotImplementedError

    def frame_rate(self) -> float:
        return 0.0

    def total(self) -> Optional[int]:
        return None

    def writer(self, out_dir: Path, args: argparse.Namespace) -> Optional[BagWriter]:
        return None

    def close(self) -> None:
        pass

    def report(self) -> dict:
        return {}


class BagRecording(Recording):
    kind = "bag"

    def __init__(self, path: str, topic: Optional[str]):
        self.source = BagSource.open(path)
        self.topic = pick_topic(self.source, topic)

    def describe(self) -> str:
        storage = f" ({self.source.storage})" if self.source.ros2 else ""
        count = f"{self.topic.count} messages" if self.topic.count else "messages"
        return f"ROS {2 if self.source.ros2 else 1} bag{storage}, {self.topic.name}: {count}"

    def frames(self, thermal_range: Optional[Sequence[float]]) -> Iterable[Frame]:
        return iter_bag(self.source, self.topic, thermal_range)

    def frame_rate(self) -> float:
        return frame_rate(self.source, self.topic)

    def total(self) -> Optional[int]:
        return self.topic.count or None

    def writer(self, out_dir: Path, args: argparse.Namespace) -> BagWriter:
        return BagWriter(self.source, out_dir, args.topic_prefix, args.confidence)

    def report(self) -> dict:
        return {"topic": self.topic.name, "message_type": self.topic.msgtype,
                "ros_version": 2 if self.source.ros2 else 1, "storage": self.source.storage,
                "damage": None if self.source.damage is None else f"{self.source.path}: {self.source.damage}"}


class LiveRecording(Recording):
    kind = "live"

    def __init__(self, text: str):
        self.text, self.cap = text, open_live(text)

    def describe(self) -> str:
        return f"live {'camera' if self.text.isdigit() else 'stream'}"

    def frames(self, thermal_range: Optional[Sequence[float]]) -> Iterable[Frame]:
        return iter_live(self.cap, self.text, thermal_range)

    def frame_rate(self) -> float:
        import cv2
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        return fps if np.isfinite(fps) and fps > 0 else 0.0

    def close(self) -> None:
        self.cap.release()


def open_recording(args: argparse.Namespace) -> Optional[Recording]:
    """The bag or live source --input names, or None for files, folders and videos (then the
    bag- and stream-only options must be at their defaults)."""
    if is_bag(args.input):
        return BagRecording(args.input, args.topic)
    only_bags = [o for o, on in (("--topic", args.topic is not None), ("--confidence", args.confidence),
                                 ("--topic-prefix", args.topic_prefix != "/cekd")) if on]
    live = is_live(args.input)
    if not live and args.max_frames is not None:
        only_bags.append("--max-frames")
    if only_bags:
        raise ValueError(f"{', '.join(only_bags)}: only with a ROS bag"
                         f"{'' if live else ' or live'} --input (got {args.input})")
    return LiveRecording(args.input) if live else None


def segment_recording(segmenter: Segmenter, recording: Recording, out_dir: Path, args: argparse.Namespace,
                      thermal_range: Optional[Sequence[float]], show: bool = True) -> dict:
    """Segment a bag or live source into the overlay video (and output bag); the summary's content."""
    alpha = getattr(args, "temporal_smoothing", 0.0) or 0.0
    confidence = recording.kind == "bag" and args.confidence
    predict = ProbabilityPredictor(segmenter, alpha, confidence) if (alpha or confidence) else None
    video = OverlayVideo(out_dir / f"{_stem(args.input)}_overlay.mp4", recording.frame_rate() or DEFAULT_FPS, None)
    records = Records(segmenter.n_class)
    writer = recording.writer(out_dir, args)

    def emit(frame: Frame, pred) -> None:
        labels, conf = pred if isinstance(pred, tuple) else (pred, None)
        if not records.add(frame, labels):
            return video.write(None)
        rgb = overlay(thermal_to_rgb(frame.thermal), colorize(labels, segmenter.info.palette), 0.5)
        video.write(rgb)
        if writer is not None:
            writer.write(frame, labels, rgb, conf)
        if args.save_labels:
            write_label(out_dir / "labels" / f"{frame.name}.png", labels)

    ending = Ending()
    try:
        with StopOnCtrlC() as stop:
            frames = bounded(recording.frames(thermal_range), args.max_frames, stop, ending)
            speed = segment_stream(segmenter, frames, emit, args.batch_size, recording.total(), show, predict)
    except BaseException:  # an error or a second Ctrl-C: no half-written bag is left in the run folder
        if writer is not None:
            writer.abort()
        raise
    finally:
        video.close()
        recording.close()
    if writer is not None:
        writer.close()
    summary = {**records.summary(), **speed, "frames_read": len(records.segmented) + len(records.skipped),
               "ended": ending.reason, "temporal_smoothing": alpha,
               "video": video.summary()}
    if recording.kind == "bag":
        summary["bag"] = {**recording.report(), "output": str(writer.path), "written": writer.written}
        if summary["bag"]["damage"]:
            print(f"warning: {summary['bag']['damage']}; the {summary['frames_read']} frame(s) before it "
                  f"were read", file=sys.stderr, flush=True)
    return summary


def _stem(text: str) -> str:
    return Path(text.rstrip("/")).stem if not is_live(text) else "live"
