"""MFDataset: exact round trip of values, dtypes, shapes, names, and edge handling."""
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from util.data.dataset import MFDataset, read_frame
from util.data.layout import DatasetError, load_image_file, load_label_file
from util.data.mfnet import N_CLASS
from util.data.synthetic import generate_dataset

H, W = 64, 96


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=8, height=H, width=W)


@pytest.fixture
def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_round_trip_native_size(folder):
    ds = MFDataset(folder, "train", height=H, width=W, n_class=N_CLASS)
    names = (folder / "train.txt").read_text().split()
    assert ds.names == names and len(ds) == len(names) and ds.has_edges
    for i, name in enumerate(names):
        item = ds[i]
        assert item["name"] == name
        rgba = np.array(Image.open(folder / "images" / f"{name}.png"))  # PIL keeps the file's R, G, B, thermal order
        assert item["image"].dtype == torch.float32 and item["image"].shape == (4, H, W)
        assert torch.equal(item["image"], torch.from_numpy(rgba).permute(2, 0, 1).float() / 255)
        label = np.array(Image.open(folder / "labels" / f"{name}.png"))
        assert item["label"].dtype == torch.int64 and torch.equal(item["label"], torch.from_numpy(label).long())
        edge = np.array(Image.open(folder / "edge_4x" / f"{name}.png"))
        assert item["edge"].dtype == torch.float32 and item["edge"].shape == (1, H // 4, W // 4)
        assert torch.equal(item["edge"][0], torch.from_numpy(edge).float())
        assert set(item["edge"].unique().tolist()) <= {0.0, 1.0}


def test_load_image_file_channel_order(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 40
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    assert (load_image_file(tmp_path / "x.png")[0, 0] == [10, 20, 30, 40]).all()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="bad.png"):
        load_image_file(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="bad.png"):
        load_label_file(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="x.png.*single-channel"):
        load_label_file(tmp_path / "x.png")


def test_resize_shapes_and_dataloader(folder):
    ds = MFDataset(folder, "val", height=2 * H, width=W, n_class=N_CLASS)
    item = ds[0]
    assert item["image"].shape == (4, 2 * H, W) and item["label"].shape == (2 * H, W)
    assert item["edge"].shape == (1, 2 * H // 4, W // 4)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    native = read_frame(folder, item["name"])[1]
    assert set(item["label"].unique().tolist()) <= set(np.unique(native).tolist())  # nearest: no new ids
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 4, 2 * H, W) and batch["edge"].shape == (2, 1, H // 2, W // 4)
    assert isinstance(batch["name"], list) and batch["name"] == ds.names[:2]


def test_edges_absent_auto_false_true(copy):
    assert "edge" not in MFDataset(copy, "test", height=H, width=W, edges=False, n_class=N_CLASS)[0]
    (copy / "edge_4x" / f"{MFDataset(copy, 'test', check=False, n_class=N_CLASS).names[0]}.png").unlink()
    with pytest.warns(UserWarning, match="without edges"):
        auto = MFDataset(copy, "test", height=H, width=W, n_class=N_CLASS)
    assert not auto.has_edges and "edge" not in auto[0]
    with pytest.raises(DatasetError, match="edge_4x.*1 frame"):
        MFDataset(copy, "test", height=H, width=W, edges=True, check=False, n_class=N_CLASS)
    with pytest.raises(DatasetError, match="edge_4x"):
        MFDataset(copy, "test", height=H, width=W, edges=True, n_class=N_CLASS)
    shutil.rmtree(copy / "edge_4x")
    assert not MFDataset(copy, "train", height=H, width=W, n_class=N_CLASS).has_edges
    with pytest.raises(DatasetError, match="edge_4x.*not found"):
        MFDataset(copy, "train", edges=True, n_class=N_CLASS)


def test_edge_files_0_255_and_full_size(copy):
    ds = MFDataset(copy, "train", height=H, width=W, n_class=N_CLASS)
    name, before = ds.names[0], ds[0]["edge"]
    path = copy / "edge_4x" / f"{name}.png"
    cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED) * 255)
    assert torch.equal(ds[0]["edge"], before)
    full = np.zeros((H, W), np.uint8)
    full[9, :] = 255  # 1-px edge at full size: max-pooled to block row 2
    cv2.imwrite(str(path), full)
    edge = ds[0]["edge"][0]
    assert edge[2].sum() == W // 4 and edge.sum() == W // 4


def test_any_split_file_and_blank_lines(copy):
    (copy / "mine.txt").write_text("\n".join(["", MFDataset(copy, "val", n_class=N_CLASS).names[0], "  ", ""]))
    assert len(MFDataset(copy, "mine", height=H, width=W, n_class=N_CLASS)) == 1


def test_constructor_errors(copy, tmp_path):
    with pytest.raises(DatasetError, match="nope.txt"):
        MFDataset(copy, "nope", n_class=N_CLASS)
    with pytest.raises(DatasetError, match="data folder not found"):
        MFDataset(tmp_path / "missing", "train", n_class=N_CLASS)
    with pytest.raises(ValueError, match="edges"):
        MFDataset(copy, "train", edges="yes", n_class=N_CLASS)
    name = MFDataset(copy, "train", n_class=N_CLASS).names[0]
    label = np.array(Image.open(copy / "labels" / f"{name}.png"))
    label[0, 0] = 9
    Image.fromarray(label).save(copy / "labels" / f"{name}.png")
    with pytest.raises(DatasetError, match=f"dataset check failed.*\n.*{name}.png.*outside 0..8"):
        MFDataset(copy, "train", n_class=N_CLASS)
    assert len(MFDataset(copy, "train", check=False, n_class=N_CLASS)) > 0


def test_the_split_file_is_named_in_one_place(tmp_path):
    """layout.split_path names a split's file; util/data builds no split-file path by hand."""
    import re
    from pathlib import Path

    from util.data import layout

    assert layout.split_path(tmp_path, "test_day") == tmp_path / "test_day.txt"
    assert layout.write_split(tmp_path, "val", ["a"]) == layout.split_path(tmp_path, "val")
    by_hand = re.compile(r"""/\s*\(?\s*(f?["'][^"'\n]*\.txt["']|\w+\s*\+\s*["']\.txt["'])""")
    root = Path(layout.__file__).parent
    found = [f"{path.name}:{i}: {line.strip()}" for path in sorted(root.glob("*.py")) if path.name != "layout.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if by_hand.search(line)]
    assert found == []
