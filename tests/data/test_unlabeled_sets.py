"""Unlabeled sets (issue 18): written by `util.convert folders` from a source without labels/ and by the
synthetic generator's --unlabeled-frames pool; checked once (then cached); read without labels."""
import json

import cv2
import numpy as np
import pytest

from util.data import convert as conv, layout
from util.data.check import check_unlabeled
from util.data.info import is_unlabeled_set, load_dataset_info, unlabeled_thermal_range, write_unlabeled_info
from util.data.layout import DatasetError, load_image_file
from util.data.synthetic import generate_dataset, generate_unlabeled_pool
from util.data.unlabeled import UnlabeledDataset


def _source(root, n=3, h=32, w=48, raw16=False):
    (root / "rgb").mkdir(parents=True)
    (root / "thermal").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "rgb" / f"f{i}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
        thermal = rng.integers(1000, 3000, (h, w), np.uint16) if raw16 else rng.integers(0, 256, (h, w), np.uint8)
        cv2.imwrite(str(root / "thermal" / f"f{i}.png"), thermal)
    return root


def test_folders_without_labels_become_an_unlabeled_set(tmp_path, capsys):
    src = _source(tmp_path / "rec")
    assert conv.main(["folders", str(src), str(tmp_path / "out"), "--name", "my-car", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert "unlabeled set; train 3 frames" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["convert.json", "dataset.json", "images", "train.txt"]
    assert json.loads((out / "dataset.json").read_text()) == {"name": "my-car", "unlabeled": True}
    assert (out / "train.txt").read_text().split() == ["f0", "f1", "f2"]
    image = load_image_file(out / "images" / "f1.png")
    rgb = cv2.imread(str(src / "rgb" / "f1.png"))[:, :, ::-1]
    assert np.array_equal(image[:, :, :3], rgb)
    assert np.array_equal(image[:, :, 3], cv2.imread(str(src / "thermal" / "f1.png"), cv2.IMREAD_UNCHANGED))
    assert is_unlabeled_set(out) and check_unlabeled(out, progress=False) == []


def test_raw16_unlabeled_set_records_its_thermal_range(tmp_path, capsys):
    src = _source(tmp_path / "rec", raw16=True)
    assert conv.main(["folders", str(src), str(tmp_path / "out"), "--raw-range", "1000", "3000",
                      "--no-progress"]) == 0
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["thermal_range"] == [1000, 3000]
    assert unlabeled_thermal_range(tmp_path / "out") == (1000, 3000)
    assert unlabeled_thermal_range(tmp_path / "rec") is None  # no dataset.json


def test_folders_without_labels_refuse_class_options(tmp_path, capsys):
    src = _source(tmp_path / "rec")
    with pytest.raises(SystemExit):
        conv.main(["folders", str(src), str(tmp_path / "out"), "--map", "255=0"])
    assert "--map: " in capsys.readouterr().err and not (tmp_path / "out").exists()
    (src / "labels").mkdir()
    with pytest.raises(SystemExit):
        conv.main(["folders", str(src), str(tmp_path / "out")])
    assert "--classes or --classes-json is required" in capsys.readouterr().err


def test_an_unlabeled_set_is_refused_where_labels_are_needed(tmp_path):
    write_unlabeled_info(tmp_path, "pool")
    with pytest.raises(DatasetError, match="is an unlabeled set") as exc:
        load_dataset_info(tmp_path)
    assert "\n" not in str(exc.value)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left over


@pytest.mark.parametrize("splits", [[], ["--splits", "train"]], ids=["no --splits", "--splits train"])
def test_the_demo_names_an_unlabeled_set_as_one(tmp_path, tiny_student, capsys, splits):
    """An unlabeled set given to the demo as --data-dir says it is one (and where it goes), not that test
    splits are missing; nothing is written."""
    import run_demo_student

    src = _source(tmp_path / "rec", h=64, w=64)
    assert conv.main(["folders", str(src), str(tmp_path / "pool"), "--no-progress"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_demo_student.main(["--weights", str(tiny_student), "--data-dir", str(tmp_path / "pool"), *splits,
                               "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    pool = tmp_path / "pool"
    assert stop.value.code == 2 and err == [
        f"error: {pool / 'dataset.json'}: {pool} is an unlabeled set (no labels to train, validate or test on); "
        f"give it to trainStudent.py --unlabeled {pool}, with a labelled --data-dir"], err
    assert not (tmp_path / "runs").exists()


def test_synthetic_pool_leaves_the_labelled_frames_unchanged(tmp_path):
    plain = generate_dataset(tmp_path / "plain", n_frames=12, height=32, width=32, seed=3)
    with_pool = generate_dataset(tmp_path / "pool", n_frames=12, height=32, width=32, seed=3, unlabeled_frames=5)
    for path in plain.rglob("*.png"):
        assert path.read_bytes() == (with_pool / path.relative_to(plain)).read_bytes()
    pool = with_pool / "unlabeled"
    names = (pool / "train.txt").read_text().split()
    assert len(names) == 5 and is_unlabeled_set(pool) and check_unlabeled(pool, {(32, 32)}, progress=False) == []
    assert not (pool / "labels").exists()
    meta = json.loads((with_pool / "synthetic.json").read_text())
    assert meta["unlabeled_frames"] == 5 and "unlabeled/train.txt" in meta["files"]
    first = load_image_file(pool / "images" / f"{names[0]}.png")
    assert first.shape == (32, 32, 4) and first[:, :, 3].std() > 0  # a rendered scene, not a blank
    alone = generate_unlabeled_pool(tmp_path / "alone", 5, 32, 32, seed=3)  # the same pool on its own
    for path in pool.rglob("*.png"):
        assert path.read_bytes() == (alone / path.relative_to(pool)).read_bytes()
    item = UnlabeledDataset(pool, 64, 64)[0]
    assert item["image"].shape == (4, 64, 64) and item["labelled"] is False and item["label"].sum() == 0


def test_the_check_decodes_each_frame_once(tmp_path, monkeypatch):
    pool = generate_dataset(tmp_path / "syn", n_frames=12, height=32, width=32, seed=3, unlabeled_frames=3)
    pool = pool / "unlabeled"
    decoded = []
    real = layout.load_image_file
    monkeypatch.setattr(layout, "load_image_file", lambda p: decoded.append(p) or real(p))
    assert check_unlabeled(pool, progress=False) == []
    assert len(decoded) == 3
    assert check_unlabeled(pool, progress=False) == []
    assert len(decoded) == 3  # the second check is served by the cache
    path = pool / "images" / (pool / "train.txt").read_text().split()[0]
    path = path.with_suffix(".png")
    cv2.imwrite(str(path), np.zeros((32, 32), np.uint8))  # now a grey image: decoded again, and refused
    problems = check_unlabeled(pool, progress=False)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: expected a 4-channel uint8 image")
