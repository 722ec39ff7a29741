"""run_demo_student.py --input on what a robot records: videos, JPEGs, broken frames, NaN pixels, ONNX."""
import json

import cv2
import numpy as np
import pytest
import torch

import run_demo_student
import util.data.frames
from model import EKNet
from util.data.frames import read_frame_file
from util.deploy.export import export_onnx
from util.engine.checkpoint import save_atomic

# a fixed path: `--backend auto` picks by timing, and runs compared with each other must use the same one
DEMO = ["--no-progress", "--device", "cpu", "--backend", "torch", "--precision", "fp32"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    torch.manual_seed(0)
    model = EKNet(depth=18, height=64, width=64).eval()
    return save_atomic({"format": "cekd-pytorch", "network": "EKNet", "model": model.state_dict()}, root / "s.pth")


def _grey_video(path, n=7, fps=10.0, size=(48, 80)):
    codec = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size[::-1])
    ramp = np.tile(np.linspace(0, 255, size[1], dtype=np.uint8), (size[0], 1))
    for i in range(n):
        writer.write(cv2.cvtColor(np.roll(ramp, 7 * i, axis=1), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def _count_frames(path):
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps


def _run(weights, inp, out, *extra):
    return run_demo_student.main(["--weights", str(weights), "--input", str(inp), "--runs-dir", str(out),
                                  "--run-name", "r", *DEMO, *extra])


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_in_overlay_video_out(weights, tmp_path, capsys, suffix):
    video = _grey_video(tmp_path / f"drive{suffix}")
    summary = _run(weights, video, tmp_path / "out", "--batch-size", "3", "--save-labels")
    out = tmp_path / "out" / "r"
    assert _count_frames(out / f"drive_overlay{suffix}") == (7, pytest.approx(10.0))
    labels = sorted((out / "labels").iterdir())
    assert [p.name for p in labels] == [f"drive_{i:06d}.png" for i in range(7)]
    assert cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED).shape == (48, 80)
    assert len(summary["segmented"]) == 7 and summary["video"]["black_placeholders"] == 0
    printed = capsys.readouterr().out
    assert "frames/s sustained" in printed and "PyTorch cpu" in printed


class _Flaky:
    """A capture that fails to decode frame 2 and returns frame 4 at the wrong size."""

    def __init__(self, cap):
        self.cap, self.i = cap, 0

    def read(self):
        ok, frame = self.cap.read()
        self.i += 1
        if self.i == 3:
            return False, None
        if self.i == 5:
            return True, frame[:20]
        return ok, frame

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_broken_frames_in_a_video_are_skipped(weights, tmp_path, monkeypatch, capsys):
    video = _grey_video(tmp_path / "drive.mp4")
    real = util.data.frames.open_video
    monkeypatch.setattr(util.data.frames, "open_video", lambda path: _Flaky(real(path)))
    summary = _run(weights, video, tmp_path / "out", "--batch-size", "2")
    reasons = [s["reason"] for s in summary["skipped"]]
    assert len(summary["segmented"]) == 5 and len(reasons) == 2
    assert "frame 2 of 7 could not be decoded" in reasons[0] and "frame 4 is 80x20, the video is 80x48" in reasons[1]
    assert "skipped 2" in capsys.readouterr().out
    assert _count_frames(tmp_path / "out" / "r" / "drive_overlay.mp4")[0] == 7  # black frames keep the timeline
    assert summary["video"]["black_placeholders"] == 2


def test_unusable_inputs_exit_with_one_line(weights, tmp_path, capsys):
    broken = tmp_path / "x.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    colour = np.dstack([np.full((40, 40), v, np.uint8) for v in (30, 120, 220)])
    cv2.imwrite(str(tmp_path / "ironbow.jpg"), colour)
    cases = [
        ([broken], "x.mp4: cannot open the video"),
        ([tmp_path / "ironbow.jpg"], "no frame could be segmented (" + str(tmp_path / "ironbow.jpg")),
        ([tmp_path / "ironbow.jpg", "--thermal-range", "300", "300"], "argument --thermal-range: must be LOW < HIGH, got 300 300"),
        ([tmp_path / "none.mp4"], "none.mp4: no such file or folder"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            run_demo_student.main(["--weights", str(weights), "--input", *map(str, args),
                                   "--runs-dir", str(tmp_path / "out"), *DEMO])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.strip().count("\n") == 0
    assert len(list((tmp_path / "out").iterdir())) == 1  # only the colour JPEG got as far as a run folder


def test_thermal_range_checked_before_the_weights(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_demo_student.main(["--weights", str(tmp_path / "missing.pth"), "--input", str(tmp_path),
                               "--thermal-range", "10", "2", "--runs-dir", str(tmp_path / "out"), *DEMO])
    assert "argument --thermal-range: must be LOW < HIGH, got 10 2" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_jpeg_frames(tmp_path):
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))
    cv2.imwrite(str(tmp_path / "one.jpg"), grey)
    cv2.imwrite(str(tmp_path / "three.jpeg"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    one, three = read_frame_file(tmp_path / "one.jpg")[0], read_frame_file(tmp_path / "three.jpeg")[0]
    assert one.shape == three.shape == grey.shape
    assert np.abs(one - grey / 255).max() < 0.05 and np.abs(three - grey / 255).max() < 0.05
    cv2.imwrite(str(tmp_path / "colour.jpg"), np.dstack([grey, 255 - grey, grey // 2]))
    with pytest.raises(ValueError, match="colour.jpg: expected a single-channel thermal image .* differ"):
        read_frame_file(tmp_path / "colour.jpg")


def test_nan_and_infinite_pixels(weights, tmp_path, capsys):
    x = np.array([[10, 20, np.nan], [30, np.inf, 50], [-np.inf, 40, 30]], np.float32)
    cv2.imwrite(str(tmp_path / "f.tiff"), x)
    thermal, n_bad = read_frame_file(tmp_path / "f.tiff")
    assert n_bad == 3 and np.isfinite(thermal).all()
    expected = np.array([[0, 0.25, 0], [0.5, 0, 1], [0, 0.75, 0.5]], np.float32)  # min-max over 10..50 only
    assert np.allclose(thermal, expected)
    ranged, _ = read_frame_file(tmp_path / "f.tiff", (0, 100))
    assert np.allclose(ranged, [[0.1, 0.2, 0], [0.3, 0, 0.5], [0, 0.4, 0.3]])
    summary = _run(weights, tmp_path / "f.tiff", tmp_path / "out")
    assert summary["nonfinite_pixels"] == 3 and summary["segmented"][0]["nonfinite_pixels"] == 3
    assert "3 NaN/infinite pixel(s) set to 0" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "r" / "summary.json").read_text())["nonfinite_pixels"] == 3


def test_onnx_weights_give_the_same_labels(weights, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), cv2.GaussianBlur(rng.integers(0, 65535, (72, 90), dtype=np.uint16), (9, 9), 3))
    from util.engine.checkpoint import build_from_weights
    model, info = build_from_weights(weights)
    onnx_path = export_onnx(model, tmp_path / "s.onnx", info)
    _run(weights, frames, tmp_path / "pth", "--batch-size", "2")
    _run(onnx_path, frames, tmp_path / "onnx", "--batch-size", "2", "--backend", "onnxruntime")
    assert "onnxruntime CPU, fp32" in capsys.readouterr().out
    for i in range(3):
        a, b = (cv2.imread(str(tmp_path / d / "r" / f"f{i}_label.png"), cv2.IMREAD_UNCHANGED) for d in ("pth", "onnx"))
        assert a.shape == (72, 90) and (a == b).mean() >= 0.99


def test_16bit_frames_are_scaled_with_the_training_datas_range_when_the_weights_carry_it(weights, tmp_path, capsys):
    """A student trained on frames converted with a raw range reads its camera's 16-bit frames with that range
    (not per-frame min-max), unless --thermal-range says otherwise; 8-bit frames stay value / 255."""
    from util.data.frames import TrainedRange
    from util.data.info import MFNET

    trained = save_atomic({**torch.load(weights, weights_only=True),
                           "dataset": {**MFNET.to_dict(), "thermal_range": [1000, 3000]}}, tmp_path / "trained.pth")
    frames = tmp_path / "frames"
    frames.mkdir()
    raw = np.random.default_rng(0).integers(1000, 3000, (48, 64)).astype(np.uint16)
    raw[0, :2] = (0, 60000)  # outliers: per-frame min-max would squeeze the scene into a few grey levels
    cv2.imwrite(str(frames / "raw16.png"), raw)
    cv2.imwrite(str(frames / "grey8.png"), (raw // 256).astype(np.uint8))

    wide, grey = read_frame_file(frames / "raw16.png", TrainedRange(1000, 3000)), frames / "grey8.png"
    assert np.array_equal(wide[0], read_frame_file(frames / "raw16.png", (1000, 3000))[0])
    assert not np.allclose(wide[0], read_frame_file(frames / "raw16.png")[0])
    assert np.array_equal(read_frame_file(grey, TrainedRange(1000, 3000))[0], read_frame_file(grey)[0])

    summary = _run(trained, frames, tmp_path / "a")
    assert "scaled as the training data were: raw range [1000, 3000]" in capsys.readouterr().out
    assert summary["thermal_range"] == {"low": 1000.0, "high": 3000.0, "from": "the weights' training data",
                                        "applies_to": "16-bit and float frames"}
    given = _run(trained, frames, tmp_path / "b", "--thermal-range", "1000", "3000")
    assert given["thermal_range"]["from"] == "--thermal-range"
    assert _run(weights, frames, tmp_path / "c")["thermal_range"] is None  # weights without a range: min-max
    from util.deploy.export import calibration_frames  # util.export --int8 calibrates on them the same way

    calib16 = tmp_path / "calib16"
    calib16.mkdir()
    for i in range(2):
        cv2.imwrite(str(calib16 / f"f{i}.png"), np.roll(raw, i, axis=1))
    calib = calibration_frames(calib16, 64, 64, 1, 1, TrainedRange(1000, 3000))[0]
    assert np.array_equal(calib, calibration_frames(calib16, 64, 64, 1, 1, (1000, 3000))[0])
    assert not np.array_equal(calib, calibration_frames(calib16, 64, 64, 1, 1)[0])

    def label(run, name):
        return cv2.imread(str(tmp_path / run / "r" / f"{name}_label.png"), cv2.IMREAD_UNCHANGED)

    assert np.array_equal(label("a", "raw16"), label("b", "raw16"))  # 16-bit: as with the explicit range
    assert np.array_equal(label("a", "grey8"), label("c", "grey8"))  # 8-bit: value / 255, as without a range
