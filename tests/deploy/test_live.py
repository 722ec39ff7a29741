"""Live sources (an MJPEG-over-HTTP stream served here on 127.0.0.1) and temporal smoothing."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys

import cv2
import media_fixtures
import numpy as np
import pytest
from media_fixtures import video_frame_count

import run_demo_student
from conftest import ROOT
from util.demo import SMOOTHING
from util.deploy.predictor import ProbabilityPredictor

# a fixed path: `--backend auto` picks by timing, and runs compared with each other must use the same one
DEMO = ["--no-progress", "--device", "cpu", "--backend", "torch", "--precision", "fp32"]


@pytest.fixture
def weights(tiny_student):
    return tiny_student


def MjpegServer(frames, delay=0.0, on_frame=None):
    """`frames` JPEG frames of a moving ramp, served on 127.0.0.1 (media_fixtures.MjpegServer)."""
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    return media_fixtures.MjpegServer([np.roll(ramp, 3 * i, 1) for i in range(frames)], delay, on_frame)
def _run(weights, inp, out, *extra):
    return run_demo_student.main(["--weights", str(weights), "--input", str(inp), "--runs-dir", str(out),
                                  "--run-name", "r", *DEMO, *extra])


def test_what_counts_as_live(tmp_path, monkeypatch):
    from util.data.frames import is_live
    monkeypatch.chdir(tmp_path)
    assert is_live("0") and is_live("12") and is_live("rtsp://cam/1") and is_live("http://127.0.0.1:8/x.mjpg")
    (tmp_path / "0").write_text("")
    assert not is_live("0") and not is_live("video.mp4") and not is_live("-1")


def test_opencv_opens_a_loopback_mjpeg_stream():
    with MjpegServer(3) as server:
        cap = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG)
        got = [cap.read()[1] for _ in range(3)]
        cap.release()
    assert all(f is not None and f.shape[:2] == (48, 64) for f in got)


def test_stream_until_max_frames(weights, tmp_path):
    with MjpegServer(8) as server:
        summary = _run(weights, server.url, tmp_path / "out", "--max-frames", "5", "--save-labels")
    out = tmp_path / "out" / "r"
    assert len(summary["segmented"]) == 5 and summary["ended"] == "max-frames"
    assert json.loads((out / "summary.json").read_text())["frames_read"] == 5
    assert video_frame_count(out / "live_overlay.mp4") == 5
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"live_{i:06d}.png" for i in range(5)]


def test_stream_end_is_the_end(weights, tmp_path):
    with MjpegServer(4) as server:
        summary = _run(weights, server.url, tmp_path / "out")
    assert len(summary["segmented"]) == 4 and summary["ended"] == "end"


def test_ctrl_c_ends_a_stream_cleanly(weights, tmp_path, monkeypatch):
    """SIGINT once the 3rd frame has been read: the run stops before reading on, and everything is written."""
    import util.deploy.sources as recording

    def interrupted_after_3(*args):
        for i, frame in enumerate(real(*args)):
            yield frame
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)

    real = recording.iter_live
    monkeypatch.setattr(recording, "iter_live", interrupted_after_3)
    before = signal.getsignal(signal.SIGINT)
    with MjpegServer(200, delay=0.02) as server:
        summary = _run(weights, server.url, tmp_path / "out", "--batch-size", "2")
    out = tmp_path / "out" / "r"
    written = json.loads((out / "summary.json").read_text())
    assert written["ended"] == "interrupted" and written["frames_read"] == 3
    assert video_frame_count(out / "live_overlay.mp4") == written["video"]["frames_written"] == len(summary["segmented"]) == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_unreachable_stream_is_one_line(weights, tmp_path, capsys):
    with MjpegServer(1) as server:
        url = server.url.replace("thermal", "x")
    with pytest.raises(SystemExit):  # the server is gone: nothing listens on the port
        _run(weights, url, tmp_path / "out")
    assert capsys.readouterr().err.strip() == (
        f"error: --input {url}: cannot open the stream (OpenCV could not connect or decode it)")
    assert not (tmp_path / "out").exists()


# --- temporal smoothing ----------------------------------------------------------------------------

class FixedLogits:
    """A segmenter returning the next of `logits` (each (C, h, w)) per frame."""
    height, width, name = 2, 2, "fixed"

    def __init__(self, logits):
        self.logits, self.n_class, self.i = logits, logits[0].shape[0], 0

    def __call__(self, x):
        out = np.stack(self.logits[self.i:self.i + len(x)])
        self.i += len(x)
        return out


def test_exponential_moving_average_by_hand():
    a = np.zeros((2, 2, 2), np.float32)
    a[0] = np.log(3.0)  # softmax: class 0 with p = 0.75 everywhere
    b = a[::-1].copy()  # class 1 with p = 0.75
    pred = ProbabilityPredictor(FixedLogits([a, b, b, b]), alpha=0.6, confidence=True)
    got = [pred([np.zeros((2, 2), np.float32)])[0] for _ in range(4)]
    # p(class 1): 0.25, then 0.6 * 0.25 + 0.4 * 0.75 = 0.45, then 0.57, then 0.642
    assert [int(lab[0, 0]) for lab, _ in got] == [0, 0, 1, 1]
    assert [int(c[0, 0]) for _, c in got] == [round(0.75 * 255), round(0.55 * 255), round(0.57 * 255),
                                                round(0.642 * 255)]
    plain = ProbabilityPredictor(FixedLogits([a, b]), alpha=0.0)
    assert [int(plain([np.zeros((3, 5), np.float32)])[0][2, 4]) for _ in range(2)] == [0, 1]


def test_smoothing_option(weights, tmp_path, capsys):
    assert SMOOTHING("0.5") == 0.5 and SMOOTHING("0") == 0.0
    for bad in ("1", "-0.1", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a number in \[0, 1\)"):
            SMOOTHING(bad)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.roll(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1)), i, 1))
    plain = _run(weights, folder, tmp_path / "a")
    smooth = _run(weights, folder, tmp_path / "b", "--temporal-smoothing", "0.0001")
    assert [s["class_pixels"] for s in plain["segmented"]] == [s["class_pixels"] for s in smooth["segmented"]]


def _free_port():
    """A loopback port nothing listens on (bound once, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source", ["stream", "camera"])
def test_a_source_that_cannot_be_opened_is_our_one_line_alone(weights, tmp_path, source):
    """No OpenCV or FFmpeg lines around ours ([tcp @ 0x...] Connection refused, [ WARN:0@...] cap.cpp ...,
    can't open camera by index): util/data/media.py turns their logging off."""
    inp = f"http://127.0.0.1:{_free_port()}/thermal.mjpg" if source == "stream" else "97"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    done = subprocess.run([sys.executable, "run_demo_student.py", "--weights", str(weights), "--input", inp,
                           "--runs-dir", str(tmp_path), *DEMO], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --input {inp}: cannot open the {source} (OpenCV could "
                                                f"not connect or decode it)"], done.stderr
    assert not any(s in done.stderr + done.stdout for s in ("[tcp @", "WARN", "can't open camera"))
    assert not list(tmp_path.iterdir())
