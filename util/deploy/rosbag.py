"""Thermal frames in and segmentations out of ROS bags, without a ROS installation (`rosbags`).

Bags: a ROS 1 ``.bag`` file, or a ROS 2 bag folder (``metadata.yaml`` with sqlite3 ``.db3`` or
``.mcap`` storage). Bags are untrusted input: only ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` messages are deserialized, with the standard definitions of our
own type store (a topic whose recorded definition hash differs is refused), and pixels are
decoded with NumPy (raw images) or OpenCV (PNG and JPEG only, recognised by their signature).

Raw images: ``mono8``/``8UC1``, ``mono16``/``16UC1`` and ``32FC1``, little- or big-endian
(``is_bigendian``), rows ``step`` bytes apart (padding skipped). The pixels then follow the
scaling rules of frames.py (8-bit: value / 255; 16-bit and float: per-frame min-max or
``--thermal-range``).

A ROS 1 bag or an MCAP file whose index is missing or damaged (a recording cut short, a truncated
copy) is read record by record from the start instead, up to the damage (scan_ros1, scan_mcap,
streamed); the damage is reported in one line and the frames before it are kept. Storage that fails while being read keeps the messages read before
the error, reported the same way; an sqlite3 file that cannot be opened stops with one line.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np

from .frames import Frame, scale_thermal, single_channel

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
MONO_ENCODINGS = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16,
                  "32FC1": np.float32}
COLOUR_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
                    "bgra8": (4, (2, 1, 0)), "mono8": (1, ())}
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
DEFAULT_PREFIX = "/cekd"
MAX_COMPRESSED_PIXELS = 1 << 26  # 8192 x 8192: far above any thermal or RGB camera


class BagError(ValueError):
    """A bag that cannot be used; the message names it (a ValueError: the CLI prints one line)."""


def is_bag(path: str | os.PathLike) -> bool:
    """A ROS 1 .bag file or a ROS 2 bag folder (holding metadata.yaml)."""
    p = Path(path)
    return (p.suffix.lower() == ".bag" and p.is_file()) or (p.is_dir() and (p / "metadata.yaml").is_file())


def _typestore(ros2: bool):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE if ros2 else Stores.ROS1_NOETIC)


@dataclass
class BagFrame(Frame):
    """A frame of a bag: the message's header (stamp, frame_id) and its receive time in ns."""
    header: Any = None
    time_ns: int = 0


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
        from rosbags.rosbag1 import ReaderError as Error1
        from rosbags.rosbag2 import ReaderError as Error2

        store = _typestore(self.ros2)
        try:
            with self._reader() as reader:
                conns = [(c.topic, c.msgtype, c.digest, c.msgcount) for c in reader.connections]
        except (Error1, Error2, OSError, ValueError, KeyError) as exc:
            if self.ros2 and self.storage != "mcap":
                raise BagError(f"{self.what} {self.path}: cannot read the bag ({_words(exc)})") from None
            self.salvage = True  # e.g. "Bag index looks damaged" after a truncation
            self.index_problem = f"index unreadable ({_words(exc)})"
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
            self.damage = f"storage unreadable after some messages ({_words(exc)})"

    def _scan(self, scan: "Scan", topic: Optional[str]) -> Iterator[tuple[int, bytes]]:
        if not self.ros2:
            return scan_ros1(self.path, scan, topic, self.what)
        files = sorted(self.path.glob("*.mcap"))
        return scan_mcap(files[0], scan, topic, self.what)

    def deserialize(self, raw: bytes, msgtype: str):
        store = _typestore(self.ros2)
        return store.deserialize_cdr(raw, msgtype) if self.ros2 else store.deserialize_ros1(raw, msgtype)

    def image_topics(self) -> list[Topic]:
        return [t for t in self.topics.values() if t.msgtype in IMAGE_TYPES]


def _words(exc: BaseException) -> str:
    text = " ".join(str(a) for a in exc.args) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _digest_ok(store, msgtype: str, digest: str, ros2: bool) -> bool:
    """The recorded definition is the standard one (older ROS 2 bags record no hash)."""
    if ros2:
        return not digest.startswith("RIHS01_") or digest == store.hash_rihs01(msgtype)
    return digest == store.generate_msgdef(msgtype)[1]


# --- record-by-record reading of ROS 1 (format 2.0) and MCAP files without a usable index --------
# Streamed: only the chunk being read is held in memory. Size fields come from a possibly damaged
# file, so no read asks for more than the file still holds and no chunk is inflated past its
# declared size, which itself must stay within MAX_CHUNK_BYTES.

MAX_CHUNK_BYTES = 1 << 30
MCAP_MAGIC = b"\x89MCAP0\r\n"


@dataclass
class Scan:
    """What a record-by-record read has found so far: the connections (id -> topic, msgtype,
    digest) and, once it stopped early, where the file is damaged."""
    connections: dict[int, dict] = field(default_factory=dict)
    damage: Optional[str] = None


class _Stop(Exception):
    pass


class _Capped:
    """A file whose `read(n)` never asks for more than what remains of it."""

    def __init__(self, file):
        self.file, self.size = file, os.fstat(file.fileno()).st_size

    def read(self, n: int = -1) -> bytes:
        return self.file.read(n if n < 0 else max(0, min(n, self.size - self.file.tell())))

    def tell(self) -> int:
        return self.file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)


def _inflate(data: bytes, kind: str, size: int) -> bytes:
    """A chunk's records: `data` decompressed (bz2, lz4, zstd; "" or "none": as is), at most `size` bytes."""
    if kind in ("", "none"):
        return data[:size]
    if size > MAX_CHUNK_BYTES:
        raise ValueError(f"the chunk declares {size} bytes uncompressed, more than the {MAX_CHUNK_BYTES} accepted")
    if kind == "bz2":
        from bz2 import BZ2Decompressor as Decompressor
    elif kind == "lz4":
        from lz4.frame import LZ4FrameDecompressor as Decompressor
    elif kind == "zstd":
        try:
            from compression.zstd import ZstdDecompressor as Decompressor
        except ImportError:  # Python < 3.14: the backport rosbags depends on
            from backports.zstd import ZstdDecompressor as Decompressor
    else:
        raise ValueError(f"chunk compression {kind!r} is not supported")
    return Decompressor().decompress(data, max_length=size)


def scan_ros1(path: Path, scan: Scan, topic: Optional[str] = None, what: str = "--input"
              ) -> Iterator[tuple[int, bytes]]:
    """The messages (time ns, bytes) of `topic` in a ROS 1 bag read from the start, chunk by chunk,
    until its end or the first damaged record (then `scan.damage`); `scan` collects the connections."""
    from rosbags.rosbag1.reader import Header, ReaderError, RecordType, read_uint32
    from rosbags.typesys.msg import normalize_msgtype

    def records(bio, end: int, where: str) -> Iterator[tuple[int, bytes]]:
        while bio.tell() < end:
            start = bio.tell()
            try:
                header = Header.read(bio)
                op = header.get_uint8("op")
                size = read_uint32(bio)
                data = bio.read(size)
                short = len(data) < size
                if op == RecordType.CHUNK:
                    kind = header.get_string("compression")
                    if kind == "none" or not short:  # an uncompressed chunk cut short: its whole records count
                        inner = _inflate(data, kind, header.get_uint32("size"))
                        yield from records(BytesIO(inner), len(inner), f" of the chunk at byte {start}")
                if short:
                    raise ReaderError("the record is cut short")
                elif op == RecordType.CONNECTION:
                    body = Header.read(BytesIO(size.to_bytes(4, "little") + data))
                    scan.connections[header.get_uint32("conn")] = {
                        "topic": header.get_string("topic"), "msgtype": normalize_msgtype(body.get_string("type")),
                        "digest": body.get_string("md5sum")}
                elif op == RecordType.MSGDATA:
                    conn = scan.connections.get(header.get_uint32("conn"))
                    if conn is not None and conn["topic"] == topic:
                        yield header.get_time("time"), data
            except _Stop:
                raise
            except Exception as exc:  # whatever a damaged record makes the parser or a decompressor raise
                if scan.damage is None:
                    scan.damage = f"damaged at byte {start}{where} ({_words(exc)})"
                raise _Stop from None

    with open(path, "rb") as file:
        bio = _Capped(file)
        try:
            if not file.readline(64).startswith(b"#ROSBAG V2.0"):
                raise BagError(f"{what} {path}: not a ROS 1 bag (version 2.0)")
            Header.read(bio, RecordType.BAGHEADER)
            bio.seek(read_uint32(bio), os.SEEK_CUR)  # header padding
        except ReaderError as exc:
            raise BagError(f"{what} {path}: not a readable ROS 1 bag ({_words(exc)})") from None
        try:
            yield from records(bio, bio.size, "")
        except _Stop:
            pass


def scan_mcap(path: Path, scan: Scan, topic: Optional[str] = None, what: str = "--input"
              ) -> Iterator[tuple[int, bytes]]:
    """The messages (log time ns, bytes) of `topic` in an MCAP file read from the start, record by
    record (chunks included), until its data end or the first damaged record (then `scan.damage`);
    `scan` collects the channels."""
    import struct
    import zlib

    schemas: dict[int, str] = {}

    def string(buf: bytes, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", buf, pos)
        if pos + 4 + n > len(buf):
            raise ValueError("string runs past its record")
        return buf[pos + 4:pos + 4 + n].decode(), pos + 4 + n

    def records(bio, end: int, where: str) -> Iterator[tuple[int, bytes]]:
        while bio.tell() < end:
            start = bio.tell()
            try:
                head = bio.read(9)
                if len(head) < 9:
                    raise ValueError("the record is cut short")
                op, size = head[0], struct.unpack_from("<Q", head, 1)[0]
                if op == 0x0F:  # data end: the summary follows
                    raise _Stop
                body = bio.read(size)
                short = len(body) < size
                if op == 0x06:  # chunk
                    usize, crc = struct.unpack_from("<QI", body, 16)
                    kind, pos = string(body, 28)
                    (length,) = struct.unpack_from("<Q", body, pos)
                    data = body[pos + 8:pos + 8 + length]
                    if kind == "" or not short:  # an uncompressed chunk cut short: its whole records count
                        inner = _inflate(data, kind, usize)
                        if crc and not short and zlib.crc32(inner) != crc:
                            raise ValueError("the chunk's checksum does not match its records")
                        yield from records(BytesIO(inner), len(inner), f" of the chunk at byte {start}")
                elif short:
                    pass
                elif op == 0x03:  # schema
                    (sid,) = struct.unpack_from("<H", body, 0)
                    schemas[sid] = string(body, 2)[0]
                elif op == 0x04:  # channel
                    cid, sid = struct.unpack_from("<HH", body, 0)
                    name = string(body, 4)[0]
                    scan.connections[cid] = {"topic": name, "msgtype": schemas.get(sid, ""), "digest": ""}
                elif op == 0x05:  # message
                    cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    conn = scan.connections.get(cid)
                    if conn is not None and conn["topic"] == topic:
                        yield log_time, body[22:]
                if short:
                    raise ValueError("the record is cut short")
            except _Stop:
                raise
            except Exception as exc:  # whatever a damaged record makes the parser or a decompressor raise
                if scan.damage is None:
                    scan.damage = f"damaged at byte {start}{where} ({type(exc).__name__}: {_words(exc)})"
                raise _Stop from None

    with open(path, "rb") as file:
        if file.read(8) != MCAP_MAGIC:
            raise BagError(f"{what} {path}: not an MCAP file")
        bio = _Capped(file)
        try:
            yield from records(bio, bio.size, "")
        except _Stop:
            pass


# --- pixels ------------------------------------------------------------------------------------

def _unpadded(msg, dtype: np.dtype, channels: int, encoding: str) -> np.ndarray:
    """(H, W) or (H, W, channels) pixels of a raw Image: rows `step` bytes apart, byte order honoured."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).ravel()
    if height < 1 or width < 1 or step < row or data.size < step * (height - 1) + row:
        raise ValueError(f"a {width}x{height} {encoding} image needs rows of at least {row} bytes and "
                         f"{step * (height - 1) + row} bytes, got step {step} and {data.size} bytes")
    # rows as a strided view of the data (the last row's padding may be left out); nothing is
    # allocated from the header's fields beyond the pixels themselves, which the data holds
    rows = np.lib.stride_tricks.as_strided(data, (height, row), (step, 1), writeable=False).copy()
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rows.view(dtype).reshape(shape).astype(dtype.newbyteorder("="))


def image_pixels(msg) -> np.ndarray:
    """The (H, W) array of a single-channel sensor_msgs/Image (row padding skipped, byte order honoured)."""
    encoding = str(msg.encoding)
    if encoding not in MONO_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not single-channel thermal (expected "
                         f"{', '.join(MONO_ENCODINGS)})")
    return _unpadded(msg, MONO_ENCODINGS[encoding], 1, encoding)


def colour_pixels(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (rgb8, bgr8, rgba8, bgra8, mono8) or PNG/JPEG CompressedImage."""
    if hasattr(msg, "encoding"):
        encoding = str(msg.encoding)
        if encoding not in COLOUR_ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is not a colour image (expected {', '.join(COLOUR_ENCODINGS)})")
        channels, order = COLOUR_ENCODINGS[encoding]
        pixels = _unpadded(msg, np.uint8, channels, encoding)
        return np.dstack([pixels] * 3) if channels == 1 else np.ascontiguousarray(pixels[:, :, list(order)])
    bgr = _decode_compressed(msg)[0]
    if bgr.dtype != np.uint8:
        raise ValueError(f"a {bgr.dtype} compressed colour image; expected 8 bits per channel")
    if bgr.ndim == 2:
        return np.dstack([bgr] * 3)
    return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB if bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _decode_compressed(msg) -> tuple[np.ndarray, str]:
    """The decoded pixels (cv2 channel order) of a PNG or JPEG CompressedImage, and "png" or "jpeg"."""
    data = np.asarray(msg.data, dtype=np.uint8).ravel()
    kind = next((k for sig, k in SIGNATURES.items() if data[:len(sig)].tobytes() == sig), None)
    if kind is None:
        raise ValueError(f"compressed image format {str(msg.format)!r} is not PNG or JPEG")
    width, height = declared_size(data.tobytes(), kind)
    if width * height > MAX_COMPRESSED_PIXELS:
        raise ValueError(f"the {kind.upper()} image declares {width}x{height} pixels, more than the "
                         f"{MAX_COMPRESSED_PIXELS} accepted")
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"the {kind.upper()} data cannot be decoded")
    return raw, kind


def declared_size(data: bytes, kind: str) -> tuple[int, int]:
    """(width, height) from the header of PNG or JPEG data, read before decoding: a few hundred
    bytes can declare a picture of gigabytes. ValueError when the header is missing."""
    if kind == "png":
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise ValueError("the PNG data has no IHDR header")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pos = 2
    while pos + 4 <= len(data):  # JPEG segments up to the frame header (SOF0..SOF15 but DHT, JPG, DAC)
        if data[pos] != 0xFF:
            break
        if data[pos + 1] == 0xFF:  # a fill byte
            pos += 1
            continue
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(data):
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        pos += 2 + length
    raise ValueError("the JPEG data has no frame header")


def compressed_pixels(msg, source: str) -> np.ndarray:
    """The single-channel pixels of a PNG or JPEG sensor_msgs/CompressedImage."""
    raw, kind = _decode_compressed(msg)
    return single_channel(raw, source, lossy=kind == "jpeg")


def message_pixels(msg, msgtype: str, source: str) -> np.ndarray:
    return image_pixels(msg) if msgtype == IMAGE else compressed_pixels(msg, source)


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
             ) -> Iterator[BagFrame]:
    """The frames of `topic` in recording order; a message that cannot be used comes with its error."""
    stem = source.path.stem if not source.ros2 else source.path.name
    for index, (time_ns, raw) in enumerate(source.messages(topic.name)):
        where = f"{source.path} {topic.name} message {index}"
        frame = BagFrame(f"{stem}_{index:06d}", where, time_ns=time_ns)
        try:
            msg = source.deserialize(raw, topic.msgtype)
        except Exception as exc:  # whatever a malformed message makes the deserializer raise
            frame.error = f"{where}: cannot deserialize ({_words(exc)})"
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


# --- output bag ----------------------------------------------------------------------------------

class BagWriter:
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
        self.ros2, self.store = source.ros2, _typestore(source.ros2)
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

    def write(self, frame: BagFrame, labels: np.ndarray, overlay_rgb: np.ndarray,
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
