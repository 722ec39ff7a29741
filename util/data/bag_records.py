"""Record-by-record reading of ROS 1 bags (format 2.0) and MCAP files whose index is missing or
damaged (a recording cut short, a truncated copy): from the start, up to the first damaged record.

Used by rosbag.BagSource when a bag's index cannot be read. Streamed: only the chunk being read is
held in memory. Size fields come from a possibly damaged file, so no read asks for more than the
file still holds, and no chunk is inflated past its declared size, which itself must stay within
MAX_CHUNK_BYTES.
"""
from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Iterator, Optional

MAX_CHUNK_BYTES = 1 << 30
MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(ValueError):
    """A bag that cannot be used; the message names it (a ValueError: the CLI prints one line)."""


def first_words(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = " ".join(str(a) for a in exc.args) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Scan:
    """What a record-by-record read has found so far: the connections (id -> topic, msgtype,
    digest) and, once it stopped early, where the file is damaged."""
    connections: dict[int, dict] = field(default_factory=dict)
    damage: Optional[str] = None


class _Stop(Exception):
    """Ends a record-by-record read: the data end, or damage (noted in the Scan)."""


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


@contextlib.contextmanager
def _one_record(scan: Scan, start: int, where: str) -> Iterator[None]:
    """Reading the record at byte `start`: whatever its damage makes the parser or a decompressor
    raise is noted in `scan.damage` (the first time) and ends the read."""
    try:
        yield
    except _Stop:
        raise
    except Exception as exc:
        if scan.damage is None:
            scan.damage = f"damaged at byte {start}{where} ({first_words(exc)})"
        raise _Stop from None


def inflate(data: bytes, kind: str, size: int) -> bytes:
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
            with _one_record(scan, start, where):
                header = Header.read(bio)
                op = header.get_uint8("op")
                size = read_uint32(bio)
                data = bio.read(size)
                short = len(data) < size
                if op == RecordType.CHUNK:
                    kind = header.get_string("compression")
                    if kind == "none" or not short:  # an uncompressed chunk cut short: its whole records count
                        inner = inflate(data, kind, header.get_uint32("size"))
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

    with open(path, "rb") as file:
        bio = _Capped(file)
        try:
            if not file.readline(64).startswith(b"#ROSBAG V2.0"):
                raise BagError(f"{what} {path}: not a ROS 1 bag (version 2.0)")
            Header.read(bio, RecordType.BAGHEADER)
            bio.seek(read_uint32(bio), os.SEEK_CUR)  # header padding
        except ReaderError as exc:
            raise BagError(f"{what} {path}: not a readable ROS 1 bag ({first_words(exc)})") from None
        try:
            yield from records(bio, bio.size, "")
        except _Stop:
            pass


def scan_mcap(path: Path, scan: Scan, topic: Optional[str] = None, what: str = "--input"
              ) -> Iterator[tuple[int, bytes]]:
    """The messages (log time ns, bytes) of `topic` in an MCAP file read from the start, record by
    record (chunks included), until its data end or the first damaged record (then `scan.damage`);
    `scan` collects the channels."""
    schemas: dict[int, str] = {}

    def string(buf: bytes, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", buf, pos)
        if pos + 4 + n > len(buf):
            raise ValueError("string runs past its record")
        return buf[pos + 4:pos + 4 + n].decode(), pos + 4 + n

    def records(bio, end: int, where: str) -> Iterator[tuple[int, bytes]]:
        while bio.tell() < end:
            start = bio.tell()
            with _one_record(scan, start, where):
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
                        inner = inflate(data, kind, usize)
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

    with open(path, "rb") as file:
        if file.read(8) != MCAP_MAGIC:
            raise BagError(f"{what} {path}: not an MCAP file")
        bio = _Capped(file)
        try:
            yield from records(bio, bio.size, "")
        except _Stop:
            pass
