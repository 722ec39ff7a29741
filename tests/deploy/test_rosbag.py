"""ROS bags in and out (run_demo_student.py --input BAG, python -m util.convert rosbag): bags written
here with rosbags' writers (ROS 1, ROS 2 sqlite3 and MCAP), read back with its readers."""
import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Reader as Reader1, Writer as Writer1
from rosbags.rosbag2 import Reader as Reader2, StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore

import run_demo_student
from util.data.bag_pixels import image_pixels

# a fixed path: `--backend auto` picks by timing, and runs compared with each other must use the same one
DEMO = ["--no-progress", "--device", "cpu", "--backend", "torch", "--precision", "fp32"]
KINDS = ["ros1", "sqlite3", "mcap"]
H, W = 12, 16


@pytest.fixture
def weights(tiny_student):
    return tiny_student


def _store(kind):
    return get_typestore(Stores.ROS1_NOETIC if kind == "ros1" else Stores.ROS2_HUMBLE)


def _header(store, i, frame_id="thermal_optical"):
    fields = store.types["std_msgs/msg/Header"].__dataclass_fields__
    stamp = store.types["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=1000 * i + 7)
    return store.types["std_msgs/msg/Header"](**({"seq": i} if "seq" in fields else {}), stamp=stamp,
                                              frame_id=frame_id)


def raw_image(store, i, pixels, encoding, bigendian=False, pad=0, frame_id="thermal_optical"):
    """A sensor_msgs/Image of `pixels` with `pad` bytes of padding after each row."""
    dt = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(pixels.astype(dt)).view(np.uint8).reshape(pixels.shape[0], -1)
    rows = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return store.types["sensor_msgs/msg/Image"](
        header=_header(store, i, frame_id), height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
        is_bigendian=int(bigendian), step=rows.shape[1], data=rows.ravel())


def compressed_image(store, i, pixels, ext, frame_id="thermal_optical"):
    data = np.frombuffer(cv2.imencode(ext, pixels)[1].tobytes(), np.uint8)
    return store.types["sensor_msgs/msg/CompressedImage"](header=_header(store, i, frame_id),
                                                          format=ext[1:], data=data)


def receive_time(i):
    return 10**9 * (i + 1) + 123


def write_bag(path, kind, streams):
    """streams: {topic: [messages]}; message i of each topic is received at receive_time(i)."""
    store = _store(kind)
    if kind == "ros1":
        writer = Writer1(path.with_suffix(".bag"))
    else:
        storage = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
        writer = Writer2(path, version=9, storage_plugin=storage)
    with writer:
        for topic, msgs in streams.items():
            conn = writer.add_connection(topic, msgs[0].__msgtype__, typestore=store)
            for i, msg in enumerate(msgs):
                raw = store.serialize_ros1(msg, msg.__msgtype__) if kind == "ros1" else store.serialize_cdr(
                    msg, msg.__msgtype__)
                writer.write(conn, receive_time(i), raw)
    return writer.path


def read_bag(path):
    """{topic: [(receive time, message)]} of a bag written by either writer."""
    ros2 = path.is_dir()
    store = _store("ros2" if ros2 else "ros1")
    out = {}
    with (Reader2 if ros2 else Reader1)(path) as reader:
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype) if ros2 else store.deserialize_ros1(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((t, msg))
    return out


def thermal16(i):
    rng = np.random.default_rng(i)
    return (20000 + 100 * i + rng.integers(0, 3000, (H, W))).astype(np.uint16)


def _run(weights, inp, out, *extra):
    return run_demo_student.main(["--weights", str(weights), "--input", str(inp), "--runs-dir", str(out),
                                  "--run-name", "r", *DEMO, *extra])


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


# --- pixels -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,dtype,bigendian,pad", [
    ("mono8", np.uint8, False, 3), ("8UC1", np.uint8, True, 0), ("mono16", np.uint16, True, 5),
    ("16UC1", np.uint16, False, 2), ("32FC1", np.float32, False, 4), ("32FC1", np.float32, True, 0)])
def test_raw_image_pixels_exact(encoding, dtype, bigendian, pad):
    store = _store("ros2")
    pixels = (np.arange(H * W).reshape(H, W) * 37 % 251).astype(dtype) * (3 if dtype != np.uint8 else 1)
    got = image_pixels(raw_image(store, 0, pixels, encoding, bigendian, pad))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, pixels)


def test_raw_image_refusals():
    store = _store("ros2")
    msg = raw_image(store, 0, np.zeros((H, W, 3), np.uint8).reshape(H, W * 3), "rgb8")
    msg.width = W
    with pytest.raises(ValueError, match=r"encoding 'rgb8' is not single-channel thermal \(expected mono8"):
        image_pixels(msg)
    short = raw_image(store, 0, np.zeros((H, W), np.uint16), "mono16", pad=2)
    short.data = short.data[:-40]
    with pytest.raises(ValueError, match=f"a {W}x{H} mono16 image needs rows of at least {2 * W} bytes"):
        image_pixels(short)


# --- run_demo_student.py --input BAG -------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_bag_in_bag_out(weights, tmp_path, capsys, kind):
    store = _store(kind)
    thermal = [raw_image(store, i, thermal16(i), "mono16", bigendian=True, pad=4) for i in range(5)]
    thermal[2] = raw_image(store, 2, thermal16(2), "mono16", pad=4)
    thermal[2].data = thermal[2].data[:10]  # damaged message: skipped, the others go on
    colour = [raw_image(store, i, np.zeros((H, W * 3), np.uint8), "rgb8", frame_id="rgb") for i in range(5)]
    for m in colour:
        m.width = W
    bag = write_bag(tmp_path / "drive", kind, {"/rgb/image": colour, "/thermal/image_raw": thermal})
    summary = _run(weights, bag, tmp_path / "out", "--confidence", "--thermal-range", "20000", "24000")
    out = tmp_path / "out" / "r"
    assert summary["frames_read"] == 5 and len(summary["segmented"]) == 4
    assert "message 2" in summary["skipped"][0]["reason"] and "needs rows" in summary["skipped"][0]["reason"]
    assert summary["bag"]["topic"] == "/thermal/image_raw" and summary["bag"]["damage"] is None
    written = json.loads((out / "summary.json").read_text())["bag"]["written"]
    assert written == {"/cekd/labels": 4, "/cekd/overlay": 4, "/cekd/confidence": 4}
    result = (out / "drive_cekd.bag") if kind == "ros1" else (out / "drive_cekd")
    if kind != "ros1":
        assert next(result.glob("*.mcap" if kind == "mcap" else "*.db3"))
    got = read_bag(result)
    assert set(got) == set(written)
    kept = [0, 1, 3, 4]
    for topic, encoding in (("/cekd/labels", "mono8"), ("/cekd/overlay", "rgb8"), ("/cekd/confidence", "mono8")):
        assert [t for t, _ in got[topic]] == [receive_time(i) for i in kept]
        assert [_stamp(m) for _, m in got[topic]] == [_stamp(thermal[i]) for i in kept]
        assert {(m.encoding, m.height, m.width) for _, m in got[topic]} == {(encoding, H, W)}
    labels = np.stack([np.asarray(m.data).reshape(H, W) for _, m in got["/cekd/labels"]])
    assert labels.max() < 9
    conf = np.stack([np.asarray(m.data).reshape(H, W) for _, m in got["/cekd/confidence"]])
    assert conf.min() >= 255 // 9  # a max probability is at least 1/9
    assert summary["video"]["frames_written"] == 5 and summary["video"]["black_placeholders"] == 1
    assert summary["video"]["fps"] == pytest.approx(1.0)  # messages received 1 s apart
    assert "ROS" in capsys.readouterr().out


def test_frames_that_change_size_reach_every_output(weights, tmp_path, capsys):
    """48x64 frames, then 60x80 ones: each is segmented, written to the bag and labels/ at its own size, and
    resized into the overlay video (whose size is the first frame's), never a black placeholder."""
    store = _store("ros1")
    sizes = [(48, 64)] * 3 + [(60, 80)] * 2
    ramps = [np.tile(np.linspace(20000, 30000, w).astype(np.uint16), (h, 1)) for h, w in sizes]
    bag = write_bag(tmp_path / "drive", "ros1", {"/thermal": [raw_image(store, i, r, "mono16")
                                                              for i, r in enumerate(ramps)]})
    summary = _run(weights, bag, tmp_path / "out", "--save-labels")
    out = tmp_path / "out" / "r"
    assert [(f["height"], f["width"]) for f in summary["segmented"]] == sizes and summary["skipped"] == []
    video = json.loads((out / "summary.json").read_text())["video"]
    assert video["frames_written"] == 5 and video["black_placeholders"] == 0
    assert video["resized_to_video"] == 2 and (video["height"], video["width"]) == (48, 64)
    assert "2 frame(s) of another size resized to the overlay video's 48x64" in capsys.readouterr().out
    cap, frames = cv2.VideoCapture(str(out / "drive_overlay.mp4")), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 5 and all(f.shape[:2] == (48, 64) and f.mean() > 20 for f in frames)  # none black
    overlays = read_bag(out / "drive_cekd.bag")["/cekd/overlay"]
    assert [(m.height, m.width) for _, m in overlays] == sizes
    assert [cv2.imread(str(p)).shape[:2] for p in sorted((out / "labels").glob("*.png"))] == sizes


def test_compressed_topics_and_topic_choice(weights, tmp_path, capsys):
    store = _store("ros1")
    frames = [thermal16(i) for i in range(3)]
    png = [compressed_image(store, i, f, ".png") for i, f in enumerate(frames)]
    jpeg = [compressed_image(store, i, (f // 256).astype(np.uint8), ".jpg") for i, f in enumerate(frames)]
    floats = [raw_image(store, i, f.astype(np.float32) / 100, "32FC1", pad=8) for i, f in enumerate(frames)]
    bag = write_bag(tmp_path / "cams", "ros1", {"/a/png": png, "/b/jpeg": jpeg, "/c/float": floats})
    with pytest.raises(SystemExit):
        _run(weights, bag, tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert err == f"error: --input {bag}: several single-channel image topics: /a/png, /b/jpeg, /c/float; pass --topic"
    with pytest.raises(SystemExit):
        _run(weights, bag, tmp_path / "out", "--topic", "/nope")
    assert capsys.readouterr().err.strip() == (
        f"error: --topic /nope: not an image topic of {bag}; image topics: /a/png (CompressedImage), "
        f"/b/jpeg (CompressedImage), /c/float (Image)")
    assert not (tmp_path / "out").exists()
    # a 16-bit PNG and a float topic give the same labels (min-max scaling of the same values)
    a = _run(weights, bag, tmp_path / "o1", "--topic", "/a/png")
    c = _run(weights, bag, tmp_path / "o2", "--topic", "/c/float", "--max-frames", "2")
    assert len(a["segmented"]) == 3 and a["ended"] == "end"
    assert len(c["segmented"]) == 2 and c["ended"] == "max-frames"
    la, lc = (read_bag(tmp_path / o / "r" / "cams_cekd.bag")["/cekd/labels"] for o in ("o1", "o2"))
    assert [bytes(m.data) for _, m in la[:2]] == [bytes(m.data) for _, m in lc]
    j = _run(weights, bag, tmp_path / "o3", "--topic", "/b/jpeg", "--topic-prefix", "/robot/seg")
    assert set(read_bag(tmp_path / "o3" / "r" / "cams_cekd.bag")) == {"/robot/seg/labels", "/robot/seg/overlay"}
    assert len(j["segmented"]) == 3


def test_truncated_ros1_bag_keeps_the_frames_before_the_damage(weights, tmp_path, capsys):
    store = _store("ros1")
    frames = [raw_image(store, i, thermal16(i), "mono16", pad=2) for i in range(6)]
    whole = write_bag(tmp_path / "whole", "ros1", {"/thermal": frames}).read_bytes()
    ends = [whole.find(bytes(f.data)) + len(f.data) for f in frames]
    cut = ends[3] - 5  # in the middle of message 3
    (tmp_path / "cut.bag").write_bytes(whole[:cut])
    kept = sum(end <= cut for end in ends)
    assert kept == 3 and min(ends) > 4096
    summary = _run(weights, tmp_path / "cut.bag", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {tmp_path / 'cut.bag'}: index unreadable")
    assert f"the {kept} frame(s) before it were read" in err[0]
    assert len(summary["segmented"]) == kept and summary["bag"]["damage"]
    got = read_bag(tmp_path / "out" / "r" / "cut_cekd.bag")["/cekd/labels"]
    assert [_stamp(m) for _, m in got] == [_stamp(f) for f in frames[:kept]]


def test_bag_only_options_refused_elsewhere(weights, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(SystemExit):
        _run(weights, tmp_path / "a.png", tmp_path / "out", "--max-frames", "3", "--confidence")
    assert capsys.readouterr().err.strip() == (
        f"error: --confidence: only with a ROS bag --input (got {tmp_path / 'a.png'})")
    with pytest.raises(SystemExit):
        _run(weights, tmp_path / "a.png", tmp_path / "out", "--max-frames", "0")
    assert capsys.readouterr().err == ("error: argument --max-frames: must be an integer at least 1, got '0' "
                                       "(see run_demo_student.py --help)\n")


# --- python -m util.convert rosbag: an unlabeled set ------------------------------------------------

def _stamped(msg, store, sec, nanosec):
    msg.header = store.types["std_msgs/msg/Header"](
        **({"seq": 0} if "seq" in store.types["std_msgs/msg/Header"].__dataclass_fields__ else {}),
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=msg.header.frame_id)
    return msg


def _rgb(i):
    rng = np.random.default_rng(100 + i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _paired_bag(tmp_path, kind, rgb_reversed=False):
    """5 thermal frames (mono16) at t_i = 100 + 0.1 i s; RGB (bgr8, padded) 5 ms later, but 50 ms for frame 3
    (RGB recorded in reverse order with `rgb_reversed`)."""
    store = _store(kind)
    thermal = [_stamped(raw_image(store, i, thermal16(i), "mono16", pad=2), store, 100, i * 10**8) for i in range(5)]
    rgb = []
    for i in range(5):
        bgr = _rgb(i)[:, :, ::-1].reshape(H, W * 3)
        msg = raw_image(store, i, bgr, "bgr8", pad=3, frame_id="rgb")
        msg.width = W
        rgb.append(_stamped(msg, store, 100, i * 10**8 + (50 if i == 3 else 5) * 10**6))
    return write_bag(tmp_path / "pairs", kind, {"/rgb": rgb[::-1] if rgb_reversed else rgb, "/thermal": thermal})


def _convert(*args):
    from util.data.bag_convert import main
    return main([str(a) for a in args])


@pytest.mark.parametrize("kind", ["ros1", "mcap"])
def test_convert_rosbag_pairs_by_stamp(tmp_path, capsys, kind):
    from util.data.thermal import percentile_range, scale_raw_thermal
    bag = _paired_bag(tmp_path, kind)
    dst = tmp_path / "set"
    topics = ["--rgb-topic", "/rgb", "--thermal-topic", "/thermal"]
    assert _convert(bag, dst, *topics, "--raw-range", "20000", "24000") == 0
    assert "4 RGB-thermal pairs written; 1 thermal frame(s) without an RGB frame within 20 ms dropped" in \
        capsys.readouterr().out
    names = [f"pairs_{i:06d}" for i in (0, 1, 2, 4)]
    assert (dst / "train.txt").read_text().split() == names
    assert sorted(p.name for p in dst.iterdir()) == ["convert.json", "dataset.json", "images", "train.txt"]
    assert json.loads((dst / "dataset.json").read_text()) == {"name": "pairs", "unlabeled": True,
                                                              "thermal_range": [20000.0, 24000.0]}
    for name, i in zip(names, (0, 1, 2, 4)):
        bgra = cv2.imread(str(dst / "images" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(bgra[:, :, 2::-1], _rgb(i))  # R, G, B as stored
        np.testing.assert_array_equal(bgra[:, :, 3], scale_raw_thermal(thermal16(i), 20000, 24000))
    record = json.loads((dst / "convert.json").read_text())
    assert record["dropped_outside_max_dt"] == 1 and record["written"] == 4
    # a wider window keeps frame 3; a homography shifts RGB by 2 pixels; the old set is replaced
    (tmp_path / "h.txt").write_text("1 0 2\n0 1 0\n0 0 1\n")
    assert _convert(bag, dst, "--rgb-topic", "/rgb", "--thermal-topic", "/thermal", "--max-dt-ms", "60",
                    "--homography", tmp_path / "h.txt", "--overwrite") == 0
    assert len((dst / "train.txt").read_text().split()) == 5
    bgra = cv2.imread(str(dst / "images" / "pairs_000003.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgra[:, 2:, 2::-1], _rgb(3)[:, :-2])
    assert (bgra[:, :2, :3] == 0).all()
    hist = np.bincount(np.concatenate([thermal16(i).ravel() for i in range(5)]), minlength=65536)
    assert json.loads((dst / "dataset.json").read_text())["thermal_range"] == list(percentile_range(hist))


def test_convert_rosbag_rgb_out_of_order(tmp_path):
    bag = _paired_bag(tmp_path, "ros1", rgb_reversed=True)
    assert _convert(bag, tmp_path / "set", "--rgb-topic", "/rgb", "--thermal-topic", "/thermal", "--max-dt-ms", "60",
                    "--raw-range", "20000", "24000") == 0
    for i in range(5):
        bgra = cv2.imread(str(tmp_path / "set" / "images" / f"pairs_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(bgra[:, :, 2::-1], _rgb(i))


def test_convert_rosbag_refusals(tmp_path, capsys):
    bag = _paired_bag(tmp_path, "ros1")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    cases = [
        (["--rgb-topic", "/rgb", "--thermal-topic", "/thermal"], tmp_path / "busy",
         f"error: {tmp_path / 'busy'}: not empty and not written by util.data.convert (no valid convert.json); "
         f"choose another output folder"),
        (["--rgb-topic", "/rgbx", "--thermal-topic", "/thermal"], tmp_path / "new",
         f"error: --rgb-topic /rgbx: not an image topic of {bag}; image topics: /rgb (Image), /thermal (Image)"),
        (["--rgb-topic", "/rgb", "--thermal-topic", "/thermal", "--max-dt-ms", "1"], tmp_path / "new",
         f"error: {bag}: no thermal frame of /thermal has an RGB frame of /rgb within 1 ms (5 dropped, "
         f"0 unreadable); nothing was written"),
    ]
    for extra, dst, line in cases:
        assert _convert(bag, dst, *extra) == 1
        assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "new").exists() and (tmp_path / "busy" / "mine.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_command_dispatches_rosbag(tmp_path, monkeypatch):
    import runpy
    bag = _paired_bag(tmp_path, "sqlite3")
    monkeypatch.setattr("sys.argv", ["util.convert", "rosbag", str(bag), str(tmp_path / "set"), "--rgb-topic", "/rgb",
                                     "--thermal-topic", "/thermal"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("util.convert", run_name="__main__")
    assert stop.value.code == 0 and len((tmp_path / "set" / "train.txt").read_text().split()) == 4


def test_truncated_mcap_bag_keeps_the_frames_before_the_damage(weights, tmp_path, capsys):
    store = _store("mcap")
    frames = [raw_image(store, i, thermal16(i), "mono16", pad=2) for i in range(6)]
    bag = write_bag(tmp_path / "rec", "mcap", {"/thermal": frames})
    storage = next(bag.glob("*.mcap"))
    whole = storage.read_bytes()
    ends = [whole.find(bytes(f.data)) + len(f.data) for f in frames]
    storage.write_bytes(whole[:ends[4] - 5])  # in the middle of message 4
    summary = _run(weights, bag, tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {bag}: index unreadable (File end magic is invalid.)")
    assert "the 4 frame(s) before it were read" in err[0]
    got = read_bag(tmp_path / "out" / "r" / "rec_cekd")["/cekd/labels"]
    assert [_stamp(m) for _, m in got] == [_stamp(f) for f in frames[:4]] and len(summary["segmented"]) == 4
    assert [t for t, _ in got] == [receive_time(i) for i in range(4)]


def test_unreadable_sqlite_bag_is_one_line(weights, tmp_path, capsys):
    store = _store("sqlite3")
    bag = write_bag(tmp_path / "rec", "sqlite3", {"/thermal": [raw_image(store, 0, thermal16(0), "mono16")]})
    storage = next(bag.glob("*.db3"))
    storage.write_bytes(storage.read_bytes()[:len(storage.read_bytes()) // 2])
    with pytest.raises(SystemExit):
        _run(weights, bag, tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --input {bag}: cannot read the bag (") and "\n" not in err
    assert not (tmp_path / "out").exists()


# --- ROS 2 CompressedImage, storage failing partway, nothing written outside the run folder ----------

def _tree(root):
    """{path: (size, mtime_ns)} of every file under root."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", ["sqlite3", "mcap"])
def test_ros2_compressed_topics(weights, tmp_path, kind):
    store = _store(kind)
    frames = [thermal16(i) for i in range(3)]
    png = [compressed_image(store, i, f, ".png", frame_id=f"png{i}") for i, f in enumerate(frames)]
    raw = [raw_image(store, i, f, "mono16", pad=2) for i, f in enumerate(frames)]
    jpeg = [compressed_image(store, i, (f // 256).astype(np.uint8), ".jpg") for i, f in enumerate(frames)]
    bag = write_bag(tmp_path / "cams", kind, {"/png": png, "/raw": raw, "/jpeg": jpeg})
    before = _tree(tmp_path)
    runs = {t: _run(weights, bag, tmp_path / "out", "--topic", t, "--run-name", t.strip("/"))
            for t in ("/png", "/raw", "/jpeg")}
    assert {p: v for p, v in _tree(tmp_path).items() if tmp_path / "out" not in p.parents} == before
    assert all(len(s["segmented"]) == 3 and s["bag"]["message_type"].endswith(t) for s, t in
               zip(runs.values(), ("CompressedImage", "Image", "CompressedImage")))
    got = {t: read_bag(tmp_path / "out" / t.strip("/") / "cams_cekd")["/cekd/labels"] for t in runs}
    assert [_stamp(m) for _, m in got["/png"]] == [_stamp(m) for m in png]
    assert [t for t, _ in got["/jpeg"]] == [receive_time(i) for i in range(3)]
    # a 16-bit PNG holds the raw frame exactly: the same labels as the mono16 topic
    assert [bytes(m.data) for _, m in got["/png"]] == [bytes(m.data) for _, m in got["/raw"]]
    assert max(np.asarray(m.data).max() for _, m in got["/jpeg"]) < 9


def test_sqlite_error_partway_keeps_the_frames_before(weights, tmp_path, capsys):
    """Message 3 spans several sqlite overflow pages; one page's link is broken, so the query fails there."""
    store = _store("sqlite3")
    frames = [raw_image(store, i, (np.arange(96 * 64).reshape(96, 64) * (i + 3) % 65000).astype(np.uint16),
                        "mono16") for i in range(6)]
    bag = write_bag(tmp_path / "rec", "sqlite3", {"/thermal": frames})
    db = next(bag.glob("*.db3"))
    whole = bytearray(db.read_bytes())
    page = int.from_bytes(whole[16:18], "big")
    at = whole.find(bytes(frames[3].data)[page:page + 64]) // page * page  # an overflow page of message 3
    assert at > 0 and whole[at:at + 4] != bytes(4)  # not the last page of its chain
    whole[at:at + 4] = (0x7FFFFFF0).to_bytes(4, "big")  # its link to the next page
    db.write_bytes(bytes(whole))
    summary = _run(weights, bag, tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {bag}: storage unreadable after some messages (database disk image is malformed); "
                   f"the 3 frame(s) before it were read"]
    assert len(summary["segmented"]) == 3 and summary["bag"]["written"]["/cekd/labels"] == 3
    got = read_bag(tmp_path / "out" / "r" / "rec_cekd")["/cekd/labels"]
    assert [_stamp(m) for _, m in got] == [_stamp(f) for f in frames[:3]]


def test_failed_run_leaves_no_half_written_bag(weights, tmp_path, monkeypatch):
    from util.deploy.sinks import BagWriter
    store = _store("ros1")
    bag = write_bag(tmp_path / "rec", "ros1", {"/t": [raw_image(store, i, thermal16(i), "mono16") for i in range(3)]})
    write = BagWriter.write

    def fail_on_second(self, frame, *args):
        if sum(self.written.values()):
            raise RuntimeError("disk full")
        write(self, frame, *args)

    monkeypatch.setattr(BagWriter, "write", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(weights, bag, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "r").iterdir()) == ["rec_overlay.mp4"]


# --- sizes from untrusted fields ----------------------------------------------------------------------

def test_raw_image_sizes_come_from_the_data(tmp_path):
    import tracemalloc
    store = _store("ros2")
    one_row = raw_image(store, 0, np.arange(W, dtype=np.uint16)[None], "mono16")
    one_row.step = 2**32 - 1  # one row: its step is never used to size anything
    tracemalloc.start()
    got = image_pixels(one_row)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, np.arange(W)[None])
    assert peak < 1 << 20
    absurd = raw_image(store, 0, np.zeros((H, W), np.uint16), "mono16")
    absurd.height = absurd.width = 2**32 - 1
    with pytest.raises(ValueError, match=r"^a 4294967295x4294967295 mono16 image needs rows of at least "
                                         r"8589934590 bytes and .* bytes, got step 32 and 384 bytes$"):
        image_pixels(absurd)


def _png_declaring(width, height):
    import struct
    import zlib
    png = bytearray(cv2.imencode(".png", np.zeros((4, 4), np.uint16))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # a valid IHDR
    return png


def test_compressed_image_declaring_a_huge_picture_is_refused():
    from util.data.bag_pixels import compressed_pixels, declared_size
    store = _store("ros1")
    msg = compressed_image(store, 0, np.zeros((4, 4), np.uint8), ".png")
    msg.data = np.frombuffer(bytes(_png_declaring(20000, 20000)), np.uint8)
    with pytest.raises(ValueError, match=r"^the PNG image declares 20000x20000 pixels, more than the 67108864 "
                                         r"accepted$"):
        compressed_pixels(msg, "t")
    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((9, 11), np.uint8))[1].tobytes())
    assert declared_size(bytes(jpeg), "jpeg") == (11, 9)
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    msg.data = np.frombuffer(bytes(jpeg), np.uint8)
    with pytest.raises(ValueError, match=r"^the JPEG image declares 30000x30000 pixels"):
        compressed_pixels(msg, "t")


def test_absurd_message_is_one_line_naming_bag_topic_and_index(tmp_path):
    from util.data.rosbag import BagSource, iter_bag, pick_topic
    store = _store("ros1")
    good = compressed_image(store, 0, thermal16(0), ".png")
    huge = compressed_image(store, 1, thermal16(1), ".png")
    huge.data = np.frombuffer(bytes(_png_declaring(20000, 20000)), np.uint8)
    bag = write_bag(tmp_path / "rec", "ros1", {"/t": [good, huge]})
    source = BagSource.open(bag)
    frames = list(iter_bag(source, pick_topic(source, "/t")))
    assert frames[0].error is None and frames[0].thermal.shape == (H, W)
    assert frames[1].error == (f"{bag} /t message 1: the PNG image declares 20000x20000 pixels, more than the "
                               f"67108864 accepted")


def test_chunks_are_inflated_no_further_than_declared():
    import lz4.frame

    from util.data.bag_records import MAX_CHUNK_BYTES, inflate
    bomb = lz4.frame.compress(bytes(10 << 20))  # 10 MiB of zeros in a few KiB
    assert len(bomb) < 100_000 and inflate(bomb, "lz4", 1000) == bytes(1000)
    with pytest.raises(ValueError, match=f"^the chunk declares {MAX_CHUNK_BYTES + 1} bytes uncompressed, more than "
                                         f"the {MAX_CHUNK_BYTES} accepted$"):
        inflate(bomb, "lz4", MAX_CHUNK_BYTES + 1)


def _indexless_ros1(tmp_path, count, cut=True):
    """A ROS 1 bag of `count` 8 KiB messages in chunks of two, cut before its index (unless not `cut`)."""
    store = _store("ros1")
    frames = [raw_image(store, i, np.tile(thermal16(i), (6, 4))[:64, :64], "mono16") for i in range(count)]
    path = tmp_path / "long.bag"
    with Writer1(path) as writer:
        writer.chunk_threshold = 10_000
        conn = writer.add_connection("/t", frames[0].__msgtype__, typestore=store)
        for i, f in enumerate(frames):
            writer.write(conn, receive_time(i), store.serialize_ros1(f, f.__msgtype__))
    if cut:
        whole = path.read_bytes()
        path.write_bytes(whole[:whole.find(bytes(frames[-1].data)) + len(frames[-1].data) + 1])
    return path, frames


def test_damaged_bag_is_streamed_not_held(tmp_path):
    import tracemalloc

    from util.data.rosbag import BagSource
    path, _ = _indexless_ros1(tmp_path, 40)
    source = BagSource.open(path)
    assert source.salvage
    tracemalloc.start()
    count = 0
    for time_ns, raw in source.messages("/t"):
        count += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 40 and peak < 100_000  # the messages take 40 x 8 KiB = 320 KiB
    assert source.damage.startswith("index unreadable") and "; damaged at byte" in source.damage


def _ros1_records(whole):
    """(start, op, where its data length is) of each top-level record of a ROS 1 bag."""
    pos = len(b"#ROSBAG V2.0\n")
    while pos + 4 <= len(whole):
        header_len = int.from_bytes(whole[pos:pos + 4], "little")
        header = whole[pos + 4:pos + 4 + header_len]
        at = pos + 4 + header_len
        yield pos, header[header.find(b"op=") + 3], at
        pos = at + 4 + int.from_bytes(whole[at:at + 4], "little")


def test_absurd_record_size_in_a_damaged_bag(tmp_path):
    import tracemalloc

    from util.data.bag_records import Scan, scan_ros1
    path, _ = _indexless_ros1(tmp_path, 6)
    whole = bytearray(path.read_bytes())
    s, length_at = [(start, at) for start, op, at in _ros1_records(whole) if op == 5][1]  # the 2nd chunk
    whole[length_at:length_at + 4] = (0xFFFFFFF0).to_bytes(4, "little")  # its data length
    path.write_bytes(bytes(whole))
    scan = Scan()
    tracemalloc.start()
    got = list(scan_ros1(path, scan, "/t"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the chunk's records end where its header says: its messages count, what follows it does not
    assert [t for t, _ in got] == [receive_time(i) for i in range(4)] and peak < 1 << 20
    assert scan.damage == f"damaged at byte {s} (the record is cut short)"


def test_ros1_index_with_an_absurd_chunk_size(tmp_path):
    """rosbags fails on it (a struct.error while opening): read record by record, nothing sized from it."""
    import tracemalloc

    from util.data.rosbag import BagSource
    path, _ = _indexless_ros1(tmp_path, 6, cut=False)
    whole = bytearray(path.read_bytes())
    s, length_at = [(start, at) for start, op, at in _ros1_records(whole) if op == 5][1]  # the 2nd chunk
    whole[length_at:length_at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(whole))
    tracemalloc.start()
    source = BagSource.open(path)
    got = list(source.messages("/t"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert source.salvage and peak < 1 << 20
    assert [t for t, _ in got] == [receive_time(i) for i in range(4)]
    assert source.damage.startswith("index unreadable (") and "\n" not in source.damage
    assert source.damage.endswith(f"; damaged at byte {s} (the record is cut short)")


def test_mcap_index_with_an_absurd_chunk_size_is_not_trusted(tmp_path):
    """The summary's chunk index declares 1 TiB uncompressed: the data section is read record by record."""
    import struct

    from util.data.rosbag import BagSource
    store = _store("mcap")
    frames = [raw_image(store, i, thermal16(i), "mono16") for i in range(4)]
    bag = write_bag(tmp_path / "rec", "mcap", {"/t": frames})
    storage = next(bag.glob("*.mcap"))
    whole = bytearray(storage.read_bytes())
    footer = len(whole) - 8 - 9 - 20
    assert whole[footer] == 0x02  # footer: summary start, summary offset start, summary crc
    pos, patched = struct.unpack_from("<Q", whole, footer + 9)[0], 0
    while pos < footer:
        op, size = whole[pos], struct.unpack_from("<Q", whole, pos + 1)[0]
        if op == 0x08:  # a chunk index: its last field is the uncompressed size
            struct.pack_into("<Q", whole, pos + 9 + size - 8, 1 << 40)
            patched += 1
        pos += 9 + size
    struct.pack_into("<I", whole, footer + 9 + 16, 0)  # no summary crc
    storage.write_bytes(bytes(whole))
    assert patched == 1
    source = BagSource.open(bag)
    got = list(source.messages("/t"))
    assert source.salvage and [t for t, _ in got] == [receive_time(i) for i in range(4)]
    assert source.damage.startswith("index unreadable (the index lists a chunk of ")
    assert source.damage.endswith(f"({1 << 40} uncompressed) that does not fit the file)")


def test_convert_rosbag_cleans_up_after_a_killed_conversion_and_safe_names(tmp_path):
    import socket

    from util.data.owned import work_dir
    bag = _paired_bag(tmp_path, "ros1")
    odd = bag.with_name("drive 2\nnight.bag")
    bag.rename(odd)
    dst = tmp_path / "set"
    dead = work_dir(dst, "partial", pid=2**22 + 7)  # no such process: left by a conversion killed outright
    (dead / "images").mkdir(parents=True)
    alive = tmp_path / f".set.partial-{socket.gethostname()}-1"  # pid 1 runs: not ours to remove
    alive.mkdir()
    assert _convert(odd, dst, "--rgb-topic", "/rgb", "--thermal-topic", "/thermal") == 0
    assert not dead.exists() and alive.is_dir()
    assert (dst / "train.txt").read_text().split()[0] == "drive_2_night_000000"
    assert json.loads((dst / "dataset.json").read_text())["name"] == "drive_2_night"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".set")) == [alive.name]
