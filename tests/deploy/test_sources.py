"""One frame pipeline for every --input (issue 25): each kind of source takes --max-frames, a clean Ctrl-C and
--temporal-smoothing and gives the same summary fields; options of other kinds are refused by one rule; the
exporter calibrates on a bag through the same sources; one grey rule for the demo and the converter."""
import json
import os
import signal

import cv2
import numpy as np
import pytest
from frame_outputs import FIXTURE, make_bag, make_video
from media_fixtures import video_frame_count

import run_demo_student
import util.deploy.sources as sources

DEMO = ["--no-progress", "--device", "cpu", "--backend", "torch", "--precision", "fp32"]


@pytest.fixture
def weights(tiny_student):
    return tiny_student


def _run(weights, inp, out, *extra):
    return run_demo_student.main(["--weights", str(weights), "--input", str(inp), "--runs-dir", str(out),
                                  "--run-name", "r", *DEMO, *extra])


def _folder(path, n=5):
    path.mkdir()
    for i in range(n):
        cv2.imwrite(str(path / f"f{i}.png"), np.roll(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (24, 1)), i, 1))
    return path


def test_max_frames_and_smoothing_for_files_and_videos(weights, tmp_path):
    folder = _folder(tmp_path / "frames")
    files = _run(weights, folder, tmp_path / "a", "--max-frames", "2", "--temporal-smoothing", "0.5")
    assert [s["output"] for s in files["segmented"]] == ["f0", "f1"]
    assert (files["ended"], files["frames_read"], files["temporal_smoothing"]) == ("max-frames", 2, 0.5)
    assert not (tmp_path / "a" / "r" / "f2_label.png").exists()
    video = _run(weights, make_video(tmp_path / "drive.mp4"), tmp_path / "b", "--max-frames", "3")
    assert (video["ended"], video["frames_read"], len(video["segmented"])) == ("max-frames", 3, 3)
    assert video_frame_count(tmp_path / "b" / "r" / "drive_overlay.mp4") == 3 == video["video"]["frames_written"]
    whole = _run(weights, folder, tmp_path / "c")
    assert (whole["ended"], whole["frames_read"], whole["temporal_smoothing"]) == ("end", 5, 0.0)


def test_ctrl_c_ends_a_video_cleanly(weights, tmp_path, monkeypatch):
    """SIGINT once the 3rd frame has been read: reading stops, the frames read are segmented, outputs complete."""
    real = sources.iter_video

    def interrupted_after_3(*args):
        for i, frame in enumerate(real(*args)):
            yield frame
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sources, "iter_video", interrupted_after_3)
    before = signal.getsignal(signal.SIGINT)
    summary = _run(weights, make_video(tmp_path / "drive.mp4"), tmp_path / "out", "--batch-size", "2", "--save-labels")
    out = tmp_path / "out" / "r"
    written = json.loads((out / "summary.json").read_text())
    assert written["ended"] == "interrupted" and written["frames_read"] == 3
    assert video_frame_count(out / "drive_overlay.mp4") == written["video"]["frames_written"] == 3
    assert len(list((out / "labels").iterdir())) == len(summary["segmented"]) == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_options_of_other_sources_are_refused_by_one_rule(weights, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    url = "http://127.0.0.1:9/thermal.mjpg"  # never opened: the refusal comes first
    cases = [(tmp_path / "a.png", ["--confidence", "--max-frames", "3"], "--confidence: only with a ROS bag"),
             (tmp_path / "a.png", ["--topic", "/t", "--topic-prefix", "/x"], "--topic, --topic-prefix: only with a "
                                                                             "ROS bag"),
             (url, ["--topic", "/t"], "--topic: only with a ROS bag")]
    for inp, extra, line in cases:
        with pytest.raises(SystemExit) as stop:
            _run(weights, inp, tmp_path / "out", *extra)
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip() == f"error: {line} --input (got {inp})"
    assert not (tmp_path / "out").exists()


def test_every_kind_of_source_gives_the_same_summary_fields():
    """In the recorded outputs (test_frame_outputs.py checks the code gives them) every run's summary has the same
    fields, and every overlay video's section too."""
    runs = json.loads(FIXTURE.read_text())
    fields = {run: sorted(set(r["summary"]) - {"video", "bag"}) for run, r in runs.items()}
    assert len(set(map(tuple, fields.values()))) == 1, fields
    assert {"frames_read", "ended", "temporal_smoothing"} <= set(fields["folder-b1"])
    video = {run: sorted(r["summary"]["video"]) for run, r in runs.items() if "video" in r["summary"]}
    assert len(video) == 10 and len(set(map(tuple, video.values()))) == 1, video
    assert "fps_assumed" in video["stream-b1-labels"]


def test_a_bag_calibrates_the_int8_export(tmp_path):
    from util.deploy.export import calibration_frames

    bag = make_bag(tmp_path / "rec", "mcap")  # 5 frames, message 2 damaged
    calib, held, where = calibration_frames(bag, 32, 32, n_calib=8, n_held=1, thermal_range=(20000, 24000))
    assert calib.shape == (3, 1, 32, 32) and held.shape == (1, 1, 32, 32)
    assert where == f"3 calibration / 1 held-out frames of {bag}"
    assert np.array_equal(calibration_frames(bag, 32, 32, 8, 1, (20000, 24000), topic="/thermal")[0], calib)
    with pytest.raises(ValueError, match=f"^--calib-topic /rgbx: not an image topic of {bag}; image topics: "):
        calibration_frames(bag, 32, 32, 8, 1, topic="/rgbx")


def test_one_grey_rule_for_the_demo_and_the_converter(tmp_path):
    from util.data.frames import read_frame_file
    from util.data.sources import FrameProblem, read_thermal_values

    grey = np.tile(np.arange(10, 250, 4, dtype=np.uint8), (20, 1))
    near = np.dstack([grey, grey + 2, grey])  # a lossless grey picture, rounded when saved in colour
    far = np.dstack([grey, grey + 3, grey])
    cv2.imwrite(str(tmp_path / "near.png"), near)
    cv2.imwrite(str(tmp_path / "far.png"), far)
    luma = cv2.cvtColor(near, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(read_thermal_values(tmp_path / "near.png"), luma)
    assert np.allclose(read_frame_file(tmp_path / "near.png")[0], luma / 255)
    with pytest.raises(FrameProblem, match="far.png: expected a grey thermal image"):
        read_thermal_values(tmp_path / "far.png")
    with pytest.raises(ValueError, match="far.png: expected a single-channel thermal image"):
        read_frame_file(tmp_path / "far.png")
    noisy = np.dstack([grey, grey, grey]).astype(np.int16)
    noisy[::2, ::2, 1] += 6  # compression noise: 1.5 levels on average, 6 at most
    cv2.imwrite(str(tmp_path / "noisy.jpg"), np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert read_thermal_values(tmp_path / "noisy.jpg").shape == grey.shape  # lossy: taken as grey by both
    assert read_frame_file(tmp_path / "noisy.jpg")[0].shape == grey.shape


def test_calib_topic_only_with_a_bag(weights, tmp_path, capsys):
    from util.deploy.export import main

    folder = _folder(tmp_path / "frames", 2)
    with pytest.raises(SystemExit) as stop:
        main(["--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--int8", "--calib-data", str(folder),
              "--calib-topic", "/thermal"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --calib-topic: only with a ROS bag --calib-data (got {folder})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
