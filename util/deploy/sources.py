"""Where frames come from: one `Source` per kind of `--input` (and of util.export's `--calib-data`).

    ImageFiles   an image file or a folder of them (PNG/TIFF/JPEG, 8/16-bit, float, MFNet 4-channel)
    VideoFile    a video file (whatever OpenCV reads)
    BagTopic     a thermal image topic of a ROS 1 .bag or ROS 2 bag folder
    LiveCapture  a camera index or a stream URL

Each says what it is (`describe`), how many frames it has if it knows (`count`), its frame rate, which of the
source options apply to it (`options`), and gives its frames (`frames`), a few for timing the backends
(`samples`) and some spread over it (`spread`, for int8 calibration). The pixels are read and scaled by
util/data (frames.py, rosbag.py); `open_source` picks the kind, and `refuse_options` is the one rule for
options that do not apply to it.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from ..data.frames import (
    Frame,
    Scaling,
    capture_fps,
    is_live,
    is_video,
    iter_images,
    iter_live,
    iter_video,
    list_frames,
    open_live,
    video_info,
)
from ..data.rosbag import BagSource, frame_rate, is_bag, iter_bag, pick_topic

# the options of one kind of source or another (demo option names), in the order refusals list them
SOURCE_OPTIONS = ("topic", "confidence", "topic_prefix", "max_frames")


def spread(items: Sequence, n: int) -> list:
    """Up to `n` items evenly spread over `items` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


class Source:
    """Frames of one input. `kind` names it ("files", "video", "bag", "live"), `a` says it in a sentence
    ("a ROS bag"), `options` holds the source options (SOURCE_OPTIONS) that apply to it, `stem` names its
    outputs, `overlay_suffix` is the overlay video's file type."""
    kind, a = "", ""
    options: frozenset[str] = frozenset({"max_frames"})  # every source can be cut short
    overlay_suffix = ".mp4"

    def __init__(self, text: str):
        self.text = text
        self.stem = Path(text.rstrip("/")).stem

    def describe(self) -> str:
        raise NotImplementedError

    def count(self) -> Optional[int]:
        """Its number of frames, None when it does not know."""
        return None

    def frame_rate(self) -> float:
        """Frames per second, 0 when unknown."""
        return 0.0

    def frame_size(self) -> Optional[tuple[int, int]]:
        """(height, width) of its frames when it says so before the first frame."""
        return None

    def frames(self, scaling: Scaling = None) -> Iterator[Frame]:
        raise NotImplementedError

    def samples(self, n: int, scaling: Scaling = None) -> Iterable[Frame]:
        """Frames to time the backends on (the caller takes the first `n` usable ones); none from a source
        that cannot be read twice."""
        return self.frames(scaling)

    def spread(self, n: int, scaling: Scaling = None) -> Iterator[Frame]:
        """Up to `n` frames spread evenly over the source (its first `n` when its length is unknown)."""
        total = self.count()
        if not total:
            return itertools.islice(self.frames(scaling), n)
        keep = set(spread(range(total), n))
        return (f for i, f in enumerate(self.frames(scaling)) if i in keep)

    def report(self) -> dict[str, dict]:
        """What summary.json records about the source, by section ("video", "bag")."""
        return {}

    def warnings(self, frames_read: int) -> list[str]:
        """Lines for stderr once reading has ended (a damaged recording)."""
        return []

    def close(self) -> None:
        pass


class ImageFiles(Source):
    kind, a = "files", "image files"

    def __init__(self, text: str, what: str = "--input", need_frames: bool = True):
        super().__init__(text)
        self.paths = list_frames(text, what)
        if need_frames and not self.paths:
            raise FileNotFoundError(f"{what} {text}: no .png/.tif/.tiff/.jpg/.jpeg frames found")

    def describe(self) -> str:
        return f"{len(self.paths)} frame(s)"

    def count(self) -> int:
        return len(self.paths)

    def frames(self, scaling: Scaling = None) -> Iterator[Frame]:
        return iter_images(self.paths, scaling)

    def samples(self, n: int, scaling: Scaling = None) -> Iterable[Frame]:
        return iter_images(self.paths[:2 * n], scaling)

    def spread(self, n: int, scaling: Scaling = None) -> Iterator[Frame]:
        return iter_images(spread(self.paths, n), scaling)


class VideoFile(Source):
    kind, a = "video", "a video"

    def __init__(self, text: str):
        super().__init__(text)
        self.path = Path(text)
        self.info = video_info(self.path)  # an unreadable video stops here
        self.overlay_suffix = ".avi" if self.path.suffix.lower() == ".avi" else ".mp4"

    def describe(self) -> str:
        return f"a video of {self.info.frames or 'unknown'} frames"

    def count(self) -> int:
        return self.info.frames

    def frame_rate(self) -> float:
        return self.info.fps

    def frame_size(self) -> Optional[tuple[int, int]]:
        return (self.info.height, self.info.width) if self.info.height and self.info.width else None

    def frames(self, scaling: Scaling = None) -> Iterator[Frame]:
        return iter_video(self.path, scaling)


class BagTopic(Source):
    kind, a = "bag", "a ROS bag"
    options = frozenset({"topic", "confidence", "topic_prefix", "max_frames"})

    def __init__(self, text: str, topic: Optional[str] = None, what: str = "--input", topic_option: str = "--topic"):
        super().__init__(text)
        self.bag = BagSource.open(text, what)
        self.topic = pick_topic(self.bag, topic, topic_option)

    def describe(self) -> str:
        storage = f" ({self.bag.storage})" if self.bag.ros2 else ""
        count = f"{self.topic.count} messages" if self.topic.count else "messages"
        return f"ROS {2 if self.bag.ros2 else 1} bag{storage}, {self.topic.name}: {count}"

    def count(self) -> Optional[int]:
        return self.topic.count or None

    def frame_rate(self) -> float:
        return frame_rate(self.bag, self.topic)

    def frames(self, scaling: Scaling = None) -> Iterator[Frame]:
        return iter_bag(self.bag, self.topic, scaling)

    def report(self) -> dict[str, dict]:
        damage = None if self.bag.damage is None else f"{self.bag.path}: {self.bag.damage}"
        return {"bag": {"topic": self.topic.name, "message_type": self.topic.msgtype,
                        "ros_version": 2 if self.bag.ros2 else 1, "storage": self.bag.storage, "damage": damage}}

    def warnings(self, frames_read: int) -> list[str]:
        damage = self.report()["bag"]["damage"]
        return [f"warning: {damage}; the {frames_read} frame(s) before it were read"] if damage else []


class LiveCapture(Source):
    kind, a = "live", "live"

    def __init__(self, text: str, what: str = "--input"):
        super().__init__(text)
        self.stem = "live"
        self.cap = open_live(text, what)

    def describe(self) -> str:
        return f"live {'camera' if self.text.isdigit() else 'stream'}"

    def frame_rate(self) -> float:
        return capture_fps(self.cap)

    def frames(self, scaling: Scaling = None) -> Iterator[Frame]:
        return iter_live(self.cap, self.text, scaling)

    def samples(self, n: int, scaling: Scaling = None) -> Iterable[Frame]:
        return ()  # a live source is not read twice: random frames time the backends

    def close(self) -> None:
        self.cap.release()


KINDS = (BagTopic, LiveCapture, VideoFile, ImageFiles)  # in the order `source_kind` asks


def source_kind(text: str) -> type[Source]:
    """The kind of source `text` names (from its name and what exists there; nothing is opened)."""
    if is_bag(text):
        return BagTopic
    if is_live(text):
        return LiveCapture
    if is_video(text) and Path(text).is_file():
        return VideoFile
    return ImageFiles


def refuse_options(kind: type[Source], given: Iterable[str], text: str) -> None:
    """ValueError (one line) when options of other kinds of source are given (`given`: SOURCE_OPTIONS names)."""
    given = set(given)
    stray = [o for o in SOURCE_OPTIONS if o in given and o not in kind.options]
    if stray:
        takers = [k.a for k in KINDS if k.options & set(stray)]
        raise ValueError(f"{', '.join('--' + o.replace('_', '-') for o in stray)}: only with "
                         f"{' or '.join(takers)} --input (got {text})")


def open_source(text: str, topic: Optional[str] = None, what: str = "--input", need_frames: bool = True,
                topic_option: str = "--topic") -> Source:
    """The source `text` names, opened and checked (a bag's topic picked, a stream connected); `what`: the
    argument that gave it, `topic_option` the one that gives a bag's topic; `need_frames`: refuse a folder
    without frames."""
    kind = source_kind(text)
    if kind is BagTopic:
        return BagTopic(text, topic, what, topic_option)
    if kind is LiveCapture:
        return LiveCapture(text, what)
    if kind is VideoFile:
        return VideoFile(text)
    return ImageFiles(text, what, need_frames)
