"""Dataset check: every kind of broken folder is reported, naming the file, and nothing is modified."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from util.check_dataset import DatasetError, check_dataset, main, verify_dataset
from util.synthetic import generate_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("check") / "clean", n_frames=8, height=32, width=64)


@pytest.fixture
def folder(clean, tmp_path):
    return shutil.copytree(clean, tmp_path / "d")


def first(folder, split="train"):
    return (folder / f"{split}.txt").read_text().split()[0]


def only(problems, *fragments):
    assert len(problems) == 1, problems
    assert all(f in problems[0] for f in fragments), problems[0]


def test_clean_folder_passes(folder, capsys):
    assert check_dataset(folder, need_edges=True) == []
    assert main(["--data-dir", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")


def test_missing_data_dir(tmp_path):
    only(check_dataset(tmp_path / "nope"), "nope", "not found")


def test_missing_split_file(folder):
    (folder / "val.txt").unlink()
    only(check_dataset(folder), "val.txt", "split file not found")


def test_frame_absent(folder):
    with open(folder / "train.txt", "a") as f:
        f.write("99999D\n")
    problems = check_dataset(folder, ["train"], need_edges=True)
    assert len(problems) == 3
    for sub in ("images", "labels", "edge_4x"):
        assert any(os.path.join(sub, "99999D.png") in p and "not found" in p for p in problems)


def test_corrupt_png(folder):
    name = first(folder)
    path = folder / "images" / f"{name}.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    only(check_dataset(folder, ["train"]), str(path), "corrupt")
    (folder / "labels" / f"{name}.png").write_bytes(b"garbage")
    assert any(f"labels/{name}.png" in p and "corrupt" in p for p in check_dataset(folder, ["train"]))


def test_three_channel_image(folder):
    name = first(folder)
    Image.new("RGB", (64, 32)).save(folder / "images" / f"{name}.png")
    only(check_dataset(folder, ["train"]), f"images/{name}.png", "4-channel", "3 channel")


def test_three_channel_label(folder):
    name = first(folder)
    Image.new("RGB", (64, 32)).save(folder / "labels" / f"{name}.png")
    only(check_dataset(folder, ["train"]), f"labels/{name}.png", "single-channel", "3 channel")


def test_label_id_out_of_range(folder):
    name = first(folder)
    label = np.array(Image.open(folder / "labels" / f"{name}.png"))
    label[3, 4] = 9
    Image.fromarray(label).save(folder / "labels" / f"{name}.png")
    only(check_dataset(folder, ["train"]), f"labels/{name}.png", "[9]", "outside 0..8")
    assert check_dataset(folder, ["train"], n_class=10) == []


def test_size_mismatch(folder):
    name = first(folder)
    Image.new("L", (64, 40)).save(folder / "labels" / f"{name}.png")
    problems = check_dataset(folder, ["train"])
    assert any(f"images/{name}.png" in p and "differs" in p and "40x64" in p for p in problems), problems
    assert any(f"edge_4x/{name}.png" in p and "expected 10x16" in p for p in problems), problems


def test_edge_wrong_size_and_missing(folder):
    name = first(folder, "val")
    Image.new("L", (10, 10)).save(folder / "edge_4x" / f"{name}.png")
    only(check_dataset(folder, ["val"]), f"edge_4x/{name}.png", "expected 8x16")
    Image.new("L", (64, 32)).save(folder / "edge_4x" / f"{name}.png")  # label size is accepted too
    assert check_dataset(folder, ["val"]) == []
    (folder / "edge_4x" / f"{name}.png").unlink()
    assert check_dataset(folder, ["val"]) == []
    only(check_dataset(folder, ["val"], need_edges=True), f"edge_4x/{name}.png", "not found")


def test_verify_lists_every_problem(folder, capsys):
    (folder / "val.txt").unlink()
    Image.new("RGB", (64, 32)).save(folder / "labels" / f"{first(folder, 'test')}.png")
    with pytest.raises(DatasetError) as err:
        verify_dataset(folder)
    lines = str(err.value).splitlines()
    assert lines[0] == f"dataset check failed for {folder}: 2 problem(s)" and len(lines) == 3
    assert main(["--data-dir", str(folder)]) == 1
    assert "2 problem(s)" in capsys.readouterr().out


def test_check_modifies_nothing(folder):
    with open(folder / "train.txt", "a") as f:
        f.write("99999D\n")
    (folder / "labels" / f"{first(folder, 'val')}.png").write_bytes(b"garbage")

    def snapshot():
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} | \
               {p: None for p in folder.rglob("*") if p.is_dir()}

    before = snapshot()
    assert check_dataset(folder, need_edges=True)
    assert main(["--data-dir", str(folder), "--need-edges"]) == 1
    assert snapshot() == before
