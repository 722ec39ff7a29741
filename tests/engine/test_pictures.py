"""Colour pictures: exact palette colours, panels, PNG saving."""
import cv2
import numpy as np
import pytest
import torch

from util.data.mfnet import PALETTE
from util.engine.pictures import colorize, edge_to_rgb, make_panel, overlay, save_rgb, tb_image, thermal_to_rgb


def test_colorize_exact_colours():
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, 255]])
    rgb = colorize(ids, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3)
    for cid in range(9):
        assert tuple(rgb.reshape(-1, 3)[cid]) == PALETTE[cid]
    for k in (9, 10, 11):
        assert tuple(rgb.reshape(-1, 3)[k]) == (255, 255, 255)
    np.testing.assert_array_equal(colorize(torch.from_numpy(ids), PALETTE), rgb)
    assert tuple(colorize(np.array([[2]], dtype=np.uint8), PALETTE)[0, 0]) == (64, 64, 0)


def test_thermal_edge_overlay_tb():
    t = np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(thermal_to_rgb(t)[0, :, 0], [0, 128, 255, 255])
    assert thermal_to_rgb(torch.zeros(1, 2, 3)).shape == (2, 3, 3)
    u = np.array([[7, 200]], dtype=np.uint8)
    np.testing.assert_array_equal(thermal_to_rgb(u)[..., 2], u)
    np.testing.assert_array_equal(edge_to_rgb(np.array([[0, 1]]))[0, :, 1], [0, 255])
    np.testing.assert_array_equal(edge_to_rgb(np.array([[0, 255]], dtype=np.uint8))[0, :, 1], [0, 255])
    a, b = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 200, np.uint8)
    assert overlay(a, b, 0.25)[0, 0, 0] == 50
    x = tb_image(b)
    assert x.shape == (3, 2, 2) and x.dtype == torch.float32 and x.max().item() == pytest.approx(200 / 255)


def test_make_panel_shape_and_resize():
    first = np.zeros((8, 10, 3), np.uint8)
    small_label = colorize(np.random.default_rng(0).integers(0, 9, (4, 5)), PALETTE)
    big_gray = np.zeros((16, 20), np.uint8)
    panel = make_panel([first, small_label, big_gray], pad=4)
    assert panel.shape == (8, 10 + 4 + 10 + 4 + 10, 3) and panel.dtype == np.uint8
    assert (panel[:, 10:14] == 255).all()
    # enlarged label colours stay exact palette colours (nearest neighbour)
    colours = {tuple(c) for c in panel[:, 14:24].reshape(-1, 3)}
    assert colours <= set(PALETTE)
    titled = make_panel([first, small_label], titles=["rgb", "label"], pad=2)
    assert titled.shape[1] == 10 + 2 + 10 and titled.shape[0] > 8
    with pytest.raises(ValueError):
        make_panel([first], titles=["a", "b"])


def test_save_round_trip_and_refuses_overwrite(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "img.png"
    save_rgb(path, rgb)
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, rgb)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="img.png"):
        save_rgb(path, np.zeros_like(rgb))
    assert path.read_bytes() == before
    save_rgb(path, np.zeros_like(rgb), overwrite=True)
    assert cv2.imread(str(path)).max() == 0
    with pytest.raises(ValueError):
        save_rgb(tmp_path / "x.jpg", rgb)
