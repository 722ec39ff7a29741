"""Thermal frames from ROS bags, without a ROS installation (`rosbags`); the output bag of the
demo's segmentations is written by util/deploy/sinks.py (BagWriter).

Bags: a ROS 1 ``.bag`` file, or a ROS 2 bag folder (``metadata.yaml`` with sqlite3 ``.db3`` or
``.mcap`` storage). Bags are untrusted input: only ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` messages are deserialized, with the standard definitions of our
own type store (a topic whose recorded definition hash differs is refused), and pixels are
decoded with NumPy (raw images) or OpenCV (PNG and JPEG only, recognised by their signature).

Pixels: bag_pixels.py (raw mono8/8UC1, mono16/16UC1, 32FC1 in either byte order with row padding;
PNG/JPEG); they then follow the scaling rules of frames.py (8-bit: value / 255; 16-bit and float:
per-frame min-max or ``--thermal-range``).

A ROS 1 bag or an MCAP file whose index is missing or damaged (a recording cut short, a truncated
copy) is read record by record from the start instead, up to the damage (bag_records.py); storage
that fails while being read keeps the messages read before the error. Either way the damage is
reported in one line and the frames before it are kept; an sqlite3 file that cannot be opened
stops with one line.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .bag_pixels import COMPRESSED, IMAGE, MONO_ENCODINGS, compressed_pixels, message_pixels
from .bag_records import MAX_CHUNK_BYTES, BagError, Scan, first_words, scan_mcap, scan_ros1
from .frames import Frame, scale_thermal

IMAGE_TYPES = (IMAGE, COMPRESSED)


def is_bag(path: str | os.PathLike) -> bool:
    """A ROS 1 .bag file or a ROS 2 bag folder (holding metadata.yaml)."""
    p = Path(path)
    return (p.suffix.lower() == ".bag" and p.is_file()) or (p.is_dir() and (p / "metadata.yaml").is_file())


def typestore(ros2: bool):
    """rosbags' type store of the standard message definitions of ROS 2 (Humble) or ROS 1 (Noetic)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE if ros2 else Stores.ROS1_NOETIC)


@dataclass
class Topic:
    name: str
    msgtype: str
    count: int
    digest_ok: bool


@dataclass
class BagSource:
    """An opened bag: its kind, its image topics, and its messages (read once per call to `messages`)."""
    path: Path
    ros2: bool
    storage: Optional[str]  # "sqlite3" or "mcap" for ROS 2
    topics: dict[str, Topic] = field(default_factory=dict)
    damage: Optional[str] = None  # set when the bag could not be read to its end
    salvage: bool = False  # ROS 1 or MCAP without a usable index: read record by record
    index_problem: str = ""
    what: str = "--input"

    @classmethod
    def open(cls, path: str | os.PathLike, what: str = "--input") -> "BagSource":
        """The bag at `path`; BagError naming it (as `what`, the argument that gave it) when unusable."""
        path = Path(path)
        if not is_bag(path):
            raise BagError(f"{what} {path}: not a ROS 1 .bag file or a ROS 2 bag folder with metadata.yaml")
        ros2 = path.is_dir()
        storage = None
        if ros2:
            suffixes = {p.suffix.lower() for p in path.iterdir()}
            storage = "mcap" if ".mcap" in suffixes else "sqlite3" if ".db3" in suffixes else None
            if storage is None:
                raise BagError(f"{what} {path}: a ROS 2 bag folder without .db3 or .mcap storage")
        source = cls(path, ros2, storage, what=what)
        source.topics = source._read_topics()
        return source

    def _reader(self):
        if self.ros2:
            from rosbags.rosbag2 import Reader
        else:
            from rosbags.rosbag1 import Reader
        return Reader(self.path)

    def _read_topics(self) -> dict[str, Topic]:
        store = typestore(self.ros2)
        try:
            with self._reader() as reader:
                conns = [(c.topic, c.msgtype, c.digest, c.msgcount) for c in reader.connections]
                _check_chunks(reader)
        except Exception as exc:  # whatever a damaged bag makes rosbags raise (struct.error among others)
            if self.ros2 and self.storage != "mcap":
                raise BagError(f"{self.what} {self.path}: cannot read the bag ({first_words(exc)})") from None
            self.salvage = True  # e.g. "Bag index looks damaged" after a truncation
            self.index_problem = f"index unreadable ({first_words(exc)})"
            self.damage = self.index_problem
            scan = Scan()
            for _ in self._scan(scan, None):  # no topic: reads the connections only
                pass
            conns = [(c["topic"], c["msgtype"], c["digest"], 0) for c in scan.connections.values()]
        topics: dict[str, Topic] = {}
        for name, msgtype, digest, count in conns:
            ok = msgtype in IMAGE_TYPES and _digest_ok(store, msgtype, digest, self.ros2)
            old = topics.get(name)
            ok = ok and (old is None or old.digest_ok)
            topics[name] = Topic(name, msgtype, count + (old.count if old else 0), ok)
        return topics

    def messages(self, topic: str) -> Iterator[tuple[int, bytes]]:
        """(receive time ns, serialized message) of `topic` in recording order; stops at damage (see `damage`)."""
        if self.salvage:
            scan = Scan()
            yield from self._scan(scan, topic)
            self.damage = self.index_problem + (f"; {scan.damage}" if scan.damage else "")
            return
        try:
            with self._reader() as reader:
                conns = [c for c in reader.connections if c.topic == topic]
                for _, time, raw in reader.messages(connections=conns):
                    yield time, bytes(raw)
        except Exception as exc:  # any storage error of an untrusted bag: keep what came before it
            self.damage = f"storage unreadable after some messages ({first_words(exc)})"

    def _scan(self, scan: Scan, topic: Optional[str]) -> Iterator[tuple[int, bytes]]:
        if not self.ros2:
            return scan_ros1(self.path, scan, topic, self.what)
        files = sorted(self.path.glob("*.mcap"))
        return scan_mcap(files[0], scan, topic, self.what)

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        store = typestore(self.ros2)
        return store.deserialize_cdr(raw, msgtype) if self.ros2 else store.deserialize_ros1(raw, msgtype)

    def image_topics(self) -> list[Topic]:
        return [t for t in self.topics.values() if t.msgtype in IMAGE_TYPES]


def _check_chunks(reader: Any) -> None:
    """ValueError when the index of an opened ROS 1 or MCAP bag lists a chunk that lies beyond the
    end of its file or declares more than MAX_CHUNK_BYTES uncompressed: rosbags sizes its reads from
    these fields, so such a bag is read record by record instead (bag_records.py)."""
    files = getattr(getattr(reader, "storage", None), "storages", None) or [reader]  # ROS 2: one per file
    for file in files:
        chunks = getattr(file, "chunks", None) or {}
        for chunk in (chunks.values() if isinstance(chunks, dict) else chunks):
            if hasattr(chunk, "datapos"):  # ROS 1
                start, length, inflated = chunk.datapos, chunk.datasize, 0
            else:  # MCAP
                start, length, inflated = chunk.chunk_start_offset, chunk.chunk_length, chunk.uncompressed_size
            if start + length > Path(file.path).stat().st_size or inflated > MAX_CHUNK_BYTES:
                raise ValueError(f"the index lists a chunk of {length} bytes at byte {start} "
                                 f"({inflated or length} uncompressed) that does not fit the file")


def _digest_ok(store, msgtype: str, digest: str, ros2: bool) -> bool:
    """The recorded definition is the standard one (older ROS 2 bags record no hash)."""
    if ros2:
        return not digest.startswith("RIHS01_") or digest == store.hash_rihs01(msgtype)
    return digest == store.generate_msgdef(msgtype)[1]


# --- topic choice and frames ---------------------------------------------------------------------

def _first_is_single_channel(source: BagSource, topic: Topic) -> bool:
    for _, raw in source.messages(topic.name):
        try:
            msg = source.deserialize(raw, topic.msgtype)
            if topic.msgtype == IMAGE:
                return str(msg.encoding) in MONO_ENCODINGS
            compressed_pixels(msg, topic.name)
            return True
        except Exception:  # an undecodable first message: not a candidate
            return False
    return False


def pick_topic(source: BagSource, topic: Optional[str], option: str = "--topic") -> Topic:
    """`topic`, or the only image topic whose first message is single-channel; BagError listing the choices."""
    images = source.image_topics()
    listing = ", ".join(f"{t.name} ({t.msgtype.split('/')[-1]})" for t in images) or "none"
    if topic is not None:
        found = source.topics.get(topic)
        if found is None or found.msgtype not in IMAGE_TYPES:
            raise BagError(f"{option} {topic}: not an image topic of {source.path}; image topics: {listing}")
        if not found.digest_ok:
            raise BagError(f"{option} {topic}: its recorded {found.msgtype} definition is not the standard one")
        return found
    usable = [t for t in images if t.digest_ok and _first_is_single_channel(source, t)]
    if len(usable) == 1:
        return usable[0]
    if not usable:
        raise BagError(f"{source.what} {source.path}: no single-channel image topic (image topics: {listing}); "
                       f"pass {option}")
    raise BagError(f"{source.what} {source.path}: several single-channel image topics: "
                   f"{', '.join(t.name for t in usable)}; pass {option}")


def iter_bag(source: BagSource, topic: Topic, thermal_range: Optional[Sequence[float]] = None
             ) -> Iterator[Frame]:
    """The frames of `topic` in recording order; a message that cannot be used comes with its error."""
    stem = source.path.stem if not source.ros2 else source.path.name
    for index, (time_ns, raw) in enumerate(source.messages(topic.name)):
        where = f"{source.path} {topic.name} message {index}"
        frame = Frame(f"{stem}_{index:06d}", where, time_ns=time_ns)
        try:
            msg = source.deserialize(raw, topic.msgtype)
        except Exception as exc:  # whatever a malformed message makes the deserializer raise
            frame.error = f"{where}: cannot deserialize ({first_words(exc)})"
            yield frame
            continue
        frame.header = msg.header
        try:
            frame.thermal, frame.nonfinite = scale_thermal(message_pixels(msg, topic.msgtype, where), thermal_range)
        except ValueError as exc:
            frame.error = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        yield frame


def frame_rate(source: BagSource, topic: Topic, sample: int = 50) -> float:
    """Messages per second of `topic` from the receive times of its first `sample` messages
    (0 when fewer than two)."""
    times = [t for t, _ in itertools.islice(source.messages(topic.name), sample)]
    return (len(times) - 1) * 1e9 / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
