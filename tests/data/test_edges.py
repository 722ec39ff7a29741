"""Edge Labels Generation: exact pixels on hand-made label maps, downsampling, and the command."""
import numpy as np
import pytest
from PIL import Image

from util.data.edges import disc_kernel, downsample_edges, edge_label, generate_edges, main, semantic_edges


def art(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in text.split()], np.uint8)


def brute_edges(label: np.ndarray, radius: float) -> np.ndarray:
    """Reference: a pixel is an edge when some in-image pixel within Euclidean distance radius differs."""
    h, w = label.shape
    r = int(np.ceil(radius))
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if dy * dy + dx * dx <= radius * radius and 0 <= yy < h and 0 <= xx < w \
                            and label[yy, xx] != label[y, x]:
                        out[y, x] = 1
    return out


def test_disc_kernel_radius_2():
    assert (disc_kernel(2) == art("..#.. .###. ##### .###. ..#..")).all()


def test_square_in_a_field_radius_2():
    label = np.zeros((9, 9), np.uint8)
    label[3:6, 3:6] = 4
    expected = art("""
        .........
        ...###...
        ..#####..
        .#######.
        .#######.
        .#######.
        ..#####..
        ...###...
        .........""")
    assert (semantic_edges(label, 2) == expected).all()


def test_square_in_a_field_radius_1():
    label = np.zeros((8, 8), np.uint8)
    label[2:6, 2:6] = 1
    expected = art("""
        ........
        ..####..
        .######.
        .##..##.
        .##..##.
        .######.
        ..####..
        ........""")
    assert (semantic_edges(label, 1) == expected).all()


def test_two_touching_classes_edges_on_both_sides():
    label = np.zeros((6, 8), np.uint8)
    label[:, :4], label[:, 4:] = 1, 2
    for radius, cols in ((1, [3, 4]), (2, [2, 3, 4, 5])):
        expected = np.zeros_like(label)
        expected[:, cols] = 1
        assert (semantic_edges(label, radius) == expected).all()


def test_single_class_map_has_no_edges():
    assert semantic_edges(np.full((7, 5), 3, np.uint8)).sum() == 0
    assert semantic_edges(np.zeros((4, 4), np.int64)).dtype == np.uint8


def test_image_border_is_not_an_edge():
    label = np.zeros((5, 5), np.uint8)
    label[:, 0] = 1
    assert semantic_edges(label, 1)[:, 2:].sum() == 0  # no edges from out-of-image neighbours


@pytest.mark.parametrize("radius", [1, 2, 2.5, 3])
def test_matches_bruteforce_reference(radius):
    rng = np.random.default_rng(int(radius * 10))
    for _ in range(5):
        coarse = rng.integers(0, 4, (5, 6))
        label = np.kron(coarse, np.ones((3, 3), np.int64))[: rng.integers(8, 16), : rng.integers(8, 19)]
        assert (semantic_edges(label, radius) == brute_edges(label, radius)).all()


def test_downsample_keeps_one_pixel_edges():
    edge = np.zeros((16, 16), np.uint8)
    edge[5, :] = 1
    out = downsample_edges(edge)
    assert out.shape == (4, 4) and out.dtype == np.uint8
    assert (out[1] == 1).all() and out.sum() == 4
    single = np.zeros((10, 10), np.uint8)
    single[9, 9] = 255
    out = downsample_edges(single)  # ceil: 10 -> 3 blocks, the last one partial
    assert out.shape == (3, 3) and out[2, 2] == 1 and out.sum() == 1


def test_edge_label_shape():
    assert edge_label(np.zeros((96, 130), np.uint8)).shape == (24, 33)


def _write_labels(folder, n=3, size=(40, 52)):
    (folder / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(n):
        label = np.kron(rng.integers(0, 9, (4, 4)), np.ones((10, 13), np.int64)).astype(np.uint8)[: size[0], : size[1]]
        Image.fromarray(label).save(folder / "labels" / f"{i:05d}D.png")
        labels[f"{i:05d}D"] = label
    return labels


def test_command_writes_skips_and_overwrites(tmp_path, capsys):
    labels = _write_labels(tmp_path)
    assert main(["--data-dir", str(tmp_path)]) == 0
    for name, label in labels.items():
        written = np.array(Image.open(tmp_path / "edge_4x" / f"{name}.png"))
        assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 1}
        assert (written == edge_label(label)).all()
    sentinel = tmp_path / "edge_4x" / "00000D.png"
    Image.fromarray(np.zeros((10, 13), np.uint8)).save(sentinel)
    assert generate_edges(tmp_path, progress=False) == (0, 3)  # existing files kept
    assert np.array(Image.open(sentinel)).sum() == 0
    assert main(["--data-dir", str(tmp_path), "--overwrite"]) == 0
    assert (np.array(Image.open(sentinel)) == edge_label(labels["00000D"])).all()
    assert "wrote 3" in capsys.readouterr().out


def test_command_splits_and_errors(tmp_path, capsys):
    _write_labels(tmp_path)
    (tmp_path / "train.txt").write_text("00001D\n\n")
    assert main(["--data-dir", str(tmp_path), "--splits", "train"]) == 0
    assert sorted(p.name for p in (tmp_path / "edge_4x").iterdir()) == ["00001D.png", "edges.json"]
    assert main(["--data-dir", str(tmp_path / "nope")]) == 1
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "labels" / "00002D.png").write_bytes(b"not a png")
    assert main(["--data-dir", str(tmp_path), "--overwrite"]) == 1
    assert "00002D.png" in capsys.readouterr().err
