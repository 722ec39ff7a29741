"""The pixels of sensor_msgs/Image and sensor_msgs/CompressedImage messages of untrusted bags
(`msg`: a message deserialized by rosbags' type store).

Raw images: rows ``step`` bytes apart (padding skipped), little- or big-endian (``is_bigendian``);
sizes come from the message's data, never from its header fields alone. Compressed images: PNG
and JPEG only, recognised by their signature, decoded by OpenCV after their declared size is
checked (MAX_COMPRESSED_PIXELS).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .frames import single_channel
from .layout import rgb_from_cv2

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
MONO_ENCODINGS = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16,
                  "32FC1": np.float32}
COLOUR_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
                    "bgra8": (4, (2, 1, 0)), "mono8": (1, ())}
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
MAX_COMPRESSED_PIXELS = 1 << 26  # 8192 x 8192: far above any thermal or RGB camera


def _unpadded(msg: Any, dtype: np.dtype, channels: int, encoding: str) -> np.ndarray:
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


def image_pixels(msg: Any) -> np.ndarray:
    """The (H, W) array of a single-channel sensor_msgs/Image (row padding skipped, byte order honoured)."""
    encoding = str(msg.encoding)
    if encoding not in MONO_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not single-channel thermal (expected "
                         f"{', '.join(MONO_ENCODINGS)})")
    return _unpadded(msg, MONO_ENCODINGS[encoding], 1, encoding)


def colour_pixels(msg: Any) -> np.ndarray:
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
    return rgb_from_cv2(bgr[:, :, :3])  # an alpha channel is dropped


def _decode_compressed(msg: Any) -> tuple[np.ndarray, str]:
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


def compressed_pixels(msg: Any, source: str) -> np.ndarray:
    """The single-channel pixels of a PNG or JPEG sensor_msgs/CompressedImage."""
    raw, kind = _decode_compressed(msg)
    return single_channel(raw, source, lossy=kind == "jpeg")


def message_pixels(msg: Any, msgtype: str, source: str) -> np.ndarray:
    return image_pixels(msg) if msgtype == IMAGE else compressed_pixels(msg, source)
