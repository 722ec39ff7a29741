"""The edge radius travels with the edge maps (edge_4x/edges.json): the loader's ignore mask uses the radius
the maps were made with, the release's 2 when there is no record; one folder holds one radius."""
import json

import cv2
import numpy as np
import pytest

from util.data.dataset import MFDataset
from util.data.edges import generate_edges, main
from util.data.layout import DatasetError, read_edge_radius, write_image_file

SIZE, IGNORED = 32, (13, 17)  # one ignored pixel (class 0) in a field of class 1


def _folder(path):
    for sub in ("images", "labels"):
        (path / sub).mkdir(parents=True)
    label = np.ones((SIZE, SIZE), np.uint8)
    label[IGNORED] = 0
    cv2.imwrite(str(path / "labels" / "f.png"), label)
    write_image_file(path / "images" / "f.png", np.zeros((SIZE, SIZE, 4), np.uint8))
    (path / "train.txt").write_text("f\n")
    return path


def _by_hand(radius):
    """1 - (4x4 cells holding a pixel within `radius` of the ignored pixel), from distances alone."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    near = (yy - IGNORED[0]) ** 2 + (xx - IGNORED[1]) ** 2 <= radius * radius
    return 1.0 - near.reshape(SIZE // 4, 4, SIZE // 4, 4).any(axis=(1, 3))


def _edge_valid(folder):
    ds = MFDataset(folder, "train", SIZE, SIZE, n_class=2, ignore_index=0, edges=True, check=False)
    return ds[0]["edge_valid"][0].numpy()


@pytest.mark.parametrize("radius", [4, 2])
def test_the_ignore_mask_uses_the_recorded_radius(tmp_path, radius):
    folder = _folder(tmp_path)
    generate_edges(folder, radius=radius, progress=False)
    assert json.loads((folder / "edge_4x" / "edges.json").read_text()) == {"radius": radius, "stride": 4}
    np.testing.assert_array_equal(_edge_valid(folder), _by_hand(radius))


def test_no_record_is_the_release_radius(tmp_path):
    folder = _folder(tmp_path)
    generate_edges(folder, radius=4, progress=False)
    (folder / "edge_4x" / "edges.json").unlink()  # a folder made before the record existed
    assert read_edge_radius(folder) == 2
    np.testing.assert_array_equal(_edge_valid(folder), _by_hand(2))
    assert not np.array_equal(_by_hand(2), _by_hand(4))  # the two radii are told apart


def test_kept_maps_of_another_radius_are_refused(tmp_path, capsys):
    folder = _folder(tmp_path)
    generate_edges(folder, radius=4, progress=False)
    assert main(["--data-dir", str(folder), "--radius", "3"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "radius 4" in err and "--overwrite" in err
    assert read_edge_radius(folder) == 4
    assert main(["--data-dir", str(folder), "--radius", "3", "--overwrite"]) == 0
    assert read_edge_radius(folder) == 3


@pytest.mark.parametrize("text", ["{", '{"radius": -1, "stride": 4}', '{"radius": 2, "stride": 8}', "[]"])
def test_a_malformed_record_names_the_file(tmp_path, text):
    folder = _folder(tmp_path)
    generate_edges(folder, progress=False)
    (folder / "edge_4x" / "edges.json").write_text(text)
    with pytest.raises(DatasetError, match="edge_4x/edges.json: ") as exc:
        MFDataset(folder, "train", SIZE, SIZE, n_class=2, ignore_index=0, edges=True, check=False)
    assert len(str(exc.value).splitlines()) == 1
    with pytest.raises(DatasetError, match="1 problem") as exc:  # the check lists it with the others
        MFDataset(folder, "train", SIZE, SIZE, n_class=2, ignore_index=0, edges=True, check=True)
    assert str(exc.value).splitlines()[1].startswith(f"{folder}/edge_4x/edges.json: ")


@pytest.mark.parametrize("check", [False, True])
def test_the_radius_is_read_only_for_an_ignored_class(tmp_path, check):
    """Without an ignored class (MFNet) the radius is not used: a broken record does not stop the loader."""
    folder = _folder(tmp_path)
    generate_edges(folder, progress=False)
    (folder / "edge_4x" / "edges.json").write_text("{")
    ds = MFDataset(folder, "train", SIZE, SIZE, n_class=2, edges=True, check=check)
    assert ds.has_edges and "edge" in ds[0] and "edge_valid" not in ds[0]
    MFDataset(folder, "train", SIZE, SIZE, n_class=2, ignore_index=0, edges=False, check=check)  # no edges used


def test_writers_of_whole_folders_record_their_radius(tmp_path):
    from util.data.synthetic import generate_dataset
    assert read_edge_radius(generate_dataset(tmp_path / "s", n_frames=8, height=32, width=32, radius=3)) == 3


def test_edges_written_into_a_tools_folder_are_recorded_in_its_manifest(tmp_path, capsys):
    """util.edges on a folder of util.synthetic (or util.convert) lists what it wrote in that folder's manifest,
    so a later --overwrite of the tool still finds nothing but its own files there."""
    from util.data import synthetic
    from util.data.owned import foreign_entries
    from util.data.synthetic import SYNTHETIC

    out = str(tmp_path / "s")
    args = ["--out", out, "--frames", "8", "--height", "32", "--width", "32"]
    assert synthetic.main(args) == 0
    assert main(["--data-dir", out, "--radius", "3", "--overwrite"]) == 0
    assert read_edge_radius(out) == 3 and foreign_entries(tmp_path / "s", SYNTHETIC) == []
    assert main(["--data-dir", out, "--radius", "3"]) == 0  # nothing to write: nothing touched (see below)
    (tmp_path / "s" / "edge_4x" / "mine.png").write_bytes(b"mine")  # a user's file stays foreign
    assert [p.name for p, _ in foreign_entries(tmp_path / "s", SYNTHETIC)] == ["mine.png"]
    (tmp_path / "s" / "edge_4x" / "mine.png").unlink()
    capsys.readouterr()
    assert synthetic.main([*args, "--overwrite"]) == 0, capsys.readouterr().err
    assert read_edge_radius(out) == 2


def test_edges_written_into_a_users_folder_make_no_manifest(tmp_path):
    folder = _folder(tmp_path)
    generate_edges(folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["edge_4x", "images", "labels", "train.txt"]


def test_a_run_that_writes_no_map_touches_nothing(tmp_path, capsys):
    """Every edge map there: util.edges rewrites neither edge_4x/edges.json nor the folder's manifest (same
    bytes, new modification times would break backups and make-style freshness checks)."""
    import os

    from util.data import synthetic

    out = tmp_path / "s"
    assert synthetic.main(["--out", str(out), "--frames", "8", "--height", "32", "--width", "32"]) == 0
    assert main(["--data-dir", str(out)]) == 0  # the maps and the record are there already
    paths = [out, *out.rglob("*")]
    for p in paths:  # back in time, so that any rewrite shows, however coarse the file system's clock
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in paths}
    assert main(["--data-dir", str(out)]) == 0
    assert "wrote 0 edge maps" in capsys.readouterr().out
    assert sorted([out, *out.rglob("*")]) == sorted(paths)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in paths} == before
