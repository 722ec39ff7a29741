"""What `run_demo_student.py --input` writes for every kind of input, as hashes: test_frame_outputs.py compares
a fresh run with tests/fixtures/frame_outputs.json (recorded on the code before the frame pipeline of issue 25
was unified, so that the change moved no output).

Inputs (built here, tiny): a folder of frames (8-bit PNG, grey JPEG under the same stem, 16-bit PNG, 4-channel
MFNet PNG, float TIFF with NaN and infinite pixels, a broken PNG), an mp4 video with a colour frame (skipped), an
MJPG .avi with an undecodable frame, ROS 1 / ROS 2 MCAP / ROS 2 sqlite3 bags (16-bit frames, one damaged message,
an RGB topic beside; the ROS 1 one changes frame size), and an MJPEG stream served on 127.0.0.1. Runs: batch 1
and 3, with and without --temporal-smoothing, --confidence, --save-labels, --max-frames.

Recorded per run: summary.json without its timings (paths and the stream's URL replaced by <root> and
<stream>), the name of every file written, the sha256 of every PNG, the decoded frames of the overlay video
and the payload of every message of the output bag.

To record again (only when an output is meant to change; say which in the commit):

    OMP_NUM_THREADS=1 .venv/bin/python tests/deploy/frame_outputs.py --write
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import media_fixtures
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "frame_outputs.json"
DEMO = ["--no-progress", "--device", "cpu", "--backend", "torch", "--precision", "fp32"]
TIMINGS = {"seconds", "frames_per_second", "model_frames_per_second", "ms_per_frame"}
H, W = 12, 16

# run name -> (input, options); the inputs are named in build_inputs
RUNS = {
    "folder-b1": ("frames", []),
    "folder-b3-smooth": ("frames", ["--batch-size", "3", "--temporal-smoothing", "0.5"]),
    "video-b1-labels": ("video", ["--save-labels"]),
    "video-b3-smooth": ("video", ["--batch-size", "3", "--temporal-smoothing", "0.5"]),
    "avi-b3-labels": ("avi", ["--batch-size", "3", "--save-labels"]),
    "ros1-b1-confidence-labels": ("ros1", ["--confidence", "--save-labels"]),
    "ros1-b3-max-range": ("ros1", ["--batch-size", "3", "--max-frames", "4", "--thermal-range", "20000", "24000"]),
    "mcap-b3-smooth-confidence": ("mcap", ["--batch-size", "3", "--temporal-smoothing", "0.5", "--confidence",
                                           "--topic", "/thermal"]),
    "sqlite3-b1-range": ("sqlite3", ["--thermal-range", "20000", "24000"]),
    "sqlite3-b3-smooth-labels": ("sqlite3", ["--batch-size", "3", "--temporal-smoothing", "0.5", "--save-labels",
                                             "--topic-prefix", "/robot/seg"]),
    "stream-b1-labels": ("stream", ["--save-labels"]),
    "stream-b3-smooth-max": ("stream", ["--batch-size", "3", "--temporal-smoothing", "0.5", "--max-frames", "4"]),
}


def make_student(path: Path) -> Path:
    """The untrained EKNet-18 for 64x64 frames the deploy tests use, saved as our checkpoint."""
    from model import EKNet
    from util.engine.checkpoint import save_atomic

    torch.manual_seed(0)
    model = EKNet(depth=18, height=64, width=64).eval()
    return save_atomic({"format": "cekd-pytorch", "network": "EKNet", "model": model.state_dict()}, path)


# --- inputs ---------------------------------------------------------------------------------------------

def _ramp(h: int, w: int, shift: int = 0) -> np.ndarray:
    return np.roll(np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1)), shift, axis=1)


def _frames_folder(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    cv2.imwrite(str(folder / "a.png"), _ramp(40, 48))
    cv2.imwrite(str(folder / "a.jpg"), cv2.cvtColor(_ramp(40, 48, 9), cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(folder / "b.png"), cv2.GaussianBlur(rng.integers(0, 65535, (48, 64), dtype=np.uint16), (9, 9), 3))
    mfnet = np.dstack([rng.integers(0, 256, (32, 40), dtype=np.uint8) for _ in range(3)] + [_ramp(32, 40, 5)])
    cv2.imwrite(str(folder / "c.png"), mfnet)
    x = rng.uniform(10, 50, (24, 30)).astype(np.float32)
    x[0, 0], x[3, 4], x[5, 6] = np.nan, np.inf, -np.inf
    cv2.imwrite(str(folder / "d.tiff"), x)
    (folder / "e.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a picture")
    return folder


def make_video(path: Path, n: int = 7, fps: float = 10.0, size: tuple[int, int] = (48, 80)) -> Path:
    """A grey ramp moving sideways; frame 3 is a colour picture (refused, a black frame in the output)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size[::-1])
    for i in range(n):
        grey = cv2.cvtColor(_ramp(*size, 7 * i), cv2.COLOR_GRAY2BGR)
        if i == 3:
            grey = np.dstack([np.full(size, v, np.uint8) for v in (30, 120, 220)])
        writer.write(grey)
    writer.release()
    return path


def make_broken_avi(path: Path, n: int = 8, fps: float = 10.0, size: tuple[int, int] = (48, 80)) -> Path:
    """An MJPG video whose frame 4 is damaged (its JPEG data zeroed): it cannot be decoded, the others can."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size[::-1])
    for i in range(n):
        writer.write(cv2.cvtColor(_ramp(*size, 5 * i), cv2.COLOR_GRAY2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]  # each frame's JPEG
    data[starts[4]:starts[4] + 200] = bytes(200)
    path.write_bytes(bytes(data))
    return path


def _store(kind: str):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if kind == "ros1" else Stores.ROS2_HUMBLE)


def _image(store, i: int, pixels: np.ndarray, encoding: str, bigendian: bool = False, pad: int = 0,
           frame_id: str = "thermal"):
    fields = store.types["std_msgs/msg/Header"].__dataclass_fields__
    stamp = store.types["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=1000 * i + 7)
    header = store.types["std_msgs/msg/Header"](**({"seq": i} if "seq" in fields else {}), stamp=stamp,
                                                frame_id=frame_id)
    dt = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(pixels.astype(dt)).view(np.uint8).reshape(pixels.shape[0], -1)
    rows = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    width = pixels.shape[1] // (3 if encoding == "rgb8" else 1)
    return store.types["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=width,
                                                encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                                                data=rows.ravel())


def make_bag(path: Path, kind: str) -> Path:
    """5 mono16 frames (message 2 damaged: too short) on /thermal and 5 rgb8 frames on /rgb, 0.5 s apart;
    the ROS 1 bag's last two frames are 15x20 (the others 12x16)."""
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.rosbag2 import StoragePlugin, Writer as Writer2

    store = _store(kind)
    sizes = [(H, W)] * 3 + [(15, 20)] * 2 if kind == "ros1" else [(H, W)] * 5
    thermal = []
    for i, (h, w) in enumerate(sizes):
        pixels = (20000 + 300 * i + np.random.default_rng(i).integers(0, 3000, (h, w))).astype(np.uint16)
        thermal.append(_image(store, i, pixels, "mono16", bigendian=i % 2 == 1, pad=4))
    thermal[2].data = thermal[2].data[:10]
    rgb = [_image(store, i, np.random.default_rng(50 + i).integers(0, 256, (H, W * 3), dtype=np.uint8), "rgb8",
                  frame_id="rgb") for i in range(5)]
    if kind == "ros1":
        writer = Writer1(path.with_suffix(".bag"))
    else:
        writer = Writer2(path, version=9,
                         storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    with writer:
        for topic, msgs in (("/rgb", rgb), ("/thermal", thermal)):
            conn = writer.add_connection(topic, msgs[0].__msgtype__, typestore=store)
            for i, msg in enumerate(msgs):
                raw = (store.serialize_ros1 if kind == "ros1" else store.serialize_cdr)(msg, msg.__msgtype__)
                writer.write(conn, 10**9 + i * 5 * 10**8, raw)
    return writer.path


def MjpegServer(frames: int = 6) -> media_fixtures.MjpegServer:
    """`frames` JPEG frames of a moving ramp on 127.0.0.1, then the end (media_fixtures.MjpegServer)."""
    return media_fixtures.MjpegServer([_ramp(48, 64, 3 * i) for i in range(frames)])
def build_inputs(root: Path) -> dict[str, str]:
    """The inputs of RUNS by name (the stream's URL is filled in by record_all)."""
    return {"frames": str(_frames_folder(root / "frames")), "video": str(make_video(root / "drive.mp4")),
            "avi": str(make_broken_avi(root / "cut.avi")),
            **{kind: str(make_bag(root / f"rec_{kind}", kind)) for kind in ("ros1", "mcap", "sqlite3")}}


# --- what a run wrote -------------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _normalised(value, names: dict[str, str]):
    """`value` without timings, its paths and URL replaced by their names."""
    if isinstance(value, dict):
        return {k: _normalised(v, names) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_normalised(v, names) for v in value]
    if isinstance(value, str):
        for text, name in names.items():
            value = value.replace(text, name)
    return value


def _video_frames(path: Path) -> list[str]:
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(_sha(frame.tobytes()))
    cap.release()
    return out


def _bag_messages(path: Path) -> dict[str, list[str]]:
    from rosbags.rosbag1 import Reader as Reader1
    from rosbags.rosbag2 import Reader as Reader2

    out: dict[str, list[str]] = {}
    with (Reader2 if path.is_dir() else Reader1)(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append(f"{t}:{_sha(bytes(raw))}")
    return out


def record_run(run_dir: Path, names: dict[str, str]) -> dict:
    """What one run wrote into `run_dir` (see the module's docstring)."""
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    record: dict = {"files": files, "summary": _normalised(json.loads((run_dir / "summary.json").read_text()), names),
                    "png": {f: _sha((run_dir / f).read_bytes()) for f in files if f.endswith(".png")}}
    for f in files:
        if f.endswith((".mp4", ".avi")):
            record.setdefault("video", {})[f] = _video_frames(run_dir / f)
    for bag in [p for p in run_dir.iterdir() if p.name.endswith("_cekd") or p.name.endswith("_cekd.bag")]:
        record.setdefault("bag", {})[bag.name] = _bag_messages(bag)
    return record


def record_all(root: Path, weights: Path) -> dict:
    """Every run of RUNS on inputs built under `root`: {run name: record_run}."""
    import run_demo_student

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the labels must not depend on the machine's thread count
    try:
        inputs = build_inputs(root)
        out: dict = {}
        for run, (name, options) in RUNS.items():
            server = MjpegServer() if name == "stream" else None
            with server or _Nothing():
                source = server.url if server else inputs[name]
                run_demo_student.main(["--weights", str(weights), "--input", source, "--runs-dir",
                                       str(root / "out"), "--run-name", run, *DEMO, *options])
                names = {str(root): "<root>", **({server.url: "<stream>"} if server else {})}
                out[run] = record_run(root / "out" / run, names)
        return out
    finally:
        torch.set_num_threads(threads)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        got = record_all(root, make_student(root / "s.pth"))
    text = json.dumps(got, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        FIXTURE.write_text(text)
        print(f"{FIXTURE}: {len(got)} runs recorded ({time.perf_counter() - start:.1f} s)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
