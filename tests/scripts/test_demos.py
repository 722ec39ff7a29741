"""run_demo_teacher.py / run_demo_student.py end to end, and the student on a user's own frames."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest

import run_demo_student
import run_demo_teacher
import trainStudent
import trainTeacher
from util.data.frames import read_thermal
from util.data.synthetic import generate_dataset
from util.engine.metrics import metrics_from_confusion

SMALL = ["--depth", "18", "--height", "64", "--width", "96", "--no-pretrained", "--workers", "0",
         "--no-progress", "--epochs", "1", "--max-steps-per-epoch", "2"]
DEMO = ["--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = generate_dataset(root / "syn", n_frames=16, height=64, width=96, seed=2)
    runs = root / "runs"
    trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "t", *SMALL])
    trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "s", "--no-distill", *SMALL])
    return data, runs


def _check_outputs(out_dir, data, results, printed):
    for split in ("test", "test_day", "test_night"):
        names = (data / f"{split}.txt").read_text().split()
        r = results["splits"][split]
        assert r["images"] == len(names) and (r["height"], r["width"]) == (64, 96)
        mat = np.load(out_dir / f"confusion_{split}.npy")
        assert mat.sum() == len(names) * 64 * 96
        with open(out_dir / f"confusion_{split}.csv", newline="") as f:
            header, *rows = list(csv.reader(f))
        assert all(len(row) == len(header) for row in rows) and [row[0] for row in rows] == header[1:]
        assert np.array_equal(np.array([[int(v) for v in row[1:]] for row in rows]), mat)
        assert metrics_from_confusion(mat)["miou"] == pytest.approx(r["miou"])
        assert sorted(p.stem for p in (out_dir / "predictions" / split).iterdir()) == sorted(names)
        assert len(list((out_dir / "panels" / split).iterdir())) == min(2, len(names))
        assert f"{100 * r['miou']:.2f}" in printed
        assert r["timed_frames"] == max(0, len(names) - 5)
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["splits"]["test"]["miou"] == pytest.approx(results["splits"]["test"]["miou"])
    assert "tta" not in saved  # the release's single-scale evaluation
    for name in ("confusion.png", "per_class_iou.png"):  # the pictures beside results.json
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script,run,weights", [(run_demo_teacher, "t", "best.pth"), (run_demo_teacher, "t", "final.pth"),
                                                (run_demo_student, "s", "best.pth"), (run_demo_student, "s", "final.pth")])
def test_demo_end_to_end(setup, tmp_path, capsys, script, run, weights):
    data, runs = setup
    results = script.main(["--weights", str(runs / run / weights), "--data-dir", str(data),
                           "--runs-dir", str(tmp_path), "--run-name", "out", "--panels", "2", *DEMO])
    printed = capsys.readouterr().out
    _check_outputs(tmp_path / "out", data, results, printed)
    # the demo's numbers agree with the trainer's own final evaluation of the same weights, to a pixel or two:
    # this barely trained network has near-ties, and on one thread (pytest -n 2) the two processes' kernels
    # may round them apart (seen: one pixel of 49152, 1.1e-6 of mIoU)
    trained = json.loads((runs / run / "results.json").read_text())
    for split in ("test", "test_day", "test_night"):
        assert results["splits"][split]["miou"] == pytest.approx(trained["splits"][split]["miou"], abs=1e-5)
        assert results["splits"][split]["iou"] == pytest.approx(trained["splits"][split]["iou"], abs=1e-4, nan_ok=True)


def test_demo_errors(setup, tmp_path, capsys):
    data, runs = setup
    cases = [
        (run_demo_student, ["--weights", str(tmp_path / "none.pth")], "Download the released Student_model/final.pth"),
        (run_demo_student, ["--weights", str(runs / "t" / "best.pth")], "holds CENet (teacher) weights, but EKNet"),
        (run_demo_teacher, ["--weights", str(runs / "s" / "best.pth")], "holds EKNet (student) weights, but CENet"),
        (run_demo_student, ["--weights", str(runs / "s" / "best.pth"), "--n-class", "5"], "9-class EKNet, but --n-class 5"),
    ]
    for script, args, message in cases:
        with pytest.raises(SystemExit):
            script.main([*args, "--data-dir", str(data), "--runs-dir", str(tmp_path), *DEMO])
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test.txt").write_text("00001D\n")
    with pytest.raises(SystemExit):
        run_demo_student.main(["--weights", str(runs / "s" / "best.pth"), "--data-dir", str(broken),
                               "--runs-dir", str(tmp_path), *DEMO])
    err = capsys.readouterr().err
    assert "dataset check failed" in err and "00001D" in err
    assert not any(p.name.startswith("demo-") for p in tmp_path.iterdir())  # nothing written on failure


def test_read_thermal_scaling(tmp_path):
    a8 = np.array([[0, 51], [255, 102]], np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), a8)
    assert np.allclose(read_thermal(tmp_path / "a.png"), a8 / 255)
    a16 = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    cv2.imwrite(str(tmp_path / "b.png"), a16)
    assert np.allclose(read_thermal(tmp_path / "b.png"), [[0, 0.25], [0.5, 1.0]])
    assert np.allclose(read_thermal(tmp_path / "b.png", (0, 4000)), [[0.25, 0.5], [0.75, 1.0]])
    rgbt = np.zeros((2, 2, 4), np.uint8)
    rgbt[..., 3] = a8  # cv2 order B, G, R, A: channel 4 is thermal in both orders
    rgbt[..., 0] = 200
    cv2.imwrite(str(tmp_path / "c.png"), rgbt)
    assert np.allclose(read_thermal(tmp_path / "c.png"), a8 / 255)
    cv2.imwrite(str(tmp_path / "d.png"), np.dstack([a8, a8 // 2, a8]))
    with pytest.raises(ValueError, match="d.png: expected a single-channel thermal image"):
        read_thermal(tmp_path / "d.png")


def test_student_segments_a_folder_of_own_frames(setup, tmp_path, capsys):
    _, runs = setup
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(frames / "eight.png"), rng.integers(0, 256, (50, 70), dtype=np.uint8))
    cv2.imwrite(str(frames / "sixteen.png"), rng.integers(0, 65535, (120, 160), dtype=np.uint16))
    cv2.imwrite(str(frames / "mfnet.png"), rng.integers(0, 256, (64, 96, 4), dtype=np.uint8))
    (frames / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    summary = run_demo_student.main(["--weights", str(runs / "s" / "final.pth"), "--input", str(frames),
                                     "--runs-dir", str(tmp_path / "out"), "--run-name", "mine", *DEMO])
    out = tmp_path / "out" / "mine"
    assert sorted(s["output"] for s in summary["segmented"]) == ["eight", "mfnet", "sixteen"]
    assert [s["file"].endswith("broken.png") for s in summary["skipped"]] == [True]
    assert "broken.png" in capsys.readouterr().out
    for name, shape in (("eight", (50, 70)), ("sixteen", (120, 160)), ("mfnet", (64, 96))):
        label = cv2.imread(str(out / f"{name}_label.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == shape and label.max() < 9
        mask = cv2.imread(str(out / f"{name}_mask.png"))
        assert mask.shape == shape + (3,)
        assert (out / f"{name}_overlay.png").is_file()
    assert json.loads((out / "summary.json").read_text())["skipped"][0]["file"].endswith("broken.png")


def test_demo_tta(setup, tmp_path, capsys):
    data, runs = setup
    common = ["--weights", str(runs / "s" / "final.pth"), "--data-dir", str(data), "--runs-dir", str(tmp_path),
              "--panels", "0", "--no-predictions", *DEMO]
    plain = run_demo_student.main([*common, "--run-name", "plain"])
    single = run_demo_student.main([*common, "--run-name", "single", "--tta", "--scales", "1", "--no-flip"])
    for split, r in plain["splits"].items():  # one unflipped view at scale 1: the plain evaluation, exactly
        assert single["splits"][split]["iou"] == r["iou"] and single["splits"][split]["miou"] == r["miou"]
        assert (np.load(tmp_path / "single" / f"confusion_{split}.npy")
                == np.load(tmp_path / "plain" / f"confusion_{split}.npy")).all()
    capsys.readouterr()
    tta = run_demo_teacher.main(["--weights", str(runs / "t" / "best.pth"), "--data-dir", str(data),
                                 "--runs-dir", str(tmp_path), "--run-name", "tta", "--panels", "1", "--tta", *DEMO])
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "tta" / "results.json").read_text())
    assert saved["tta"]["scales"] == [0.75, 1.0, 1.25] and saved["tta"]["flip"] is True and saved["tta"]["views"] == 6
    assert tta["tta"] == saved["tta"]
    assert "TTA: scales 0.75 1 1.25 + horizontal flip (6 views)" in printed
    for split in ("test", "test_day", "test_night"):
        assert np.load(tmp_path / "tta" / f"confusion_{split}.npy").sum() == tta["splits"][split]["images"] * 64 * 96


def test_demo_tta_options_are_checked(setup, tmp_path, capsys):
    data, runs = setup
    weights = ["--weights", str(runs / "s" / "final.pth"), "--runs-dir", str(tmp_path), *DEMO]
    cases = [(["--input", str(data / "images"), "--tta"], "--tta: only for the evaluation on --data-dir"),
             (["--data-dir", str(data), "--scales", "1", "2"], "--scales: only with --tta"),
             (["--data-dir", str(data), "--tta", "--scales", "0"], "--scales"),
             ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            run_demo_student.main([*weights, *args])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_damaged_or_swapped_copy(setup, tmp_path, capsys):
    data, runs = setup
    copy = tmp_path / "copy"
    shutil.copytree(runs / "s", copy)
    assert run_demo_student.main(["--weights", str(copy / "best.pth"), "--data-dir", str(data), "--runs-dir",
                                  str(tmp_path / "ok"), "--panels", "0", "--no-predictions", *DEMO])
    assert "matches its card" in capsys.readouterr().out
    damaged = bytearray((copy / "best.pth").read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    (copy / "best.pth").write_bytes(bytes(damaged))
    shutil.copyfile(runs / "s" / "best.pth", copy / "final.pth")  # a readable file, but not the card's final.pth
    for name, extra in (("best.pth", []), ("final.pth", []), ("final.pth", ["--input", str(data / "images")])):
        with pytest.raises(SystemExit) as exc:
            run_demo_student.main(["--weights", str(copy / name), "--data-dir", str(data),
                                   "--runs-dir", str(tmp_path / "out"), *DEMO, *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
        assert f"{copy / name}: sha256" in err and "differs" in err and "card" in err
    assert not (tmp_path / "out").exists()  # nothing written
