"""Dataset check: every kind of broken folder is reported, naming the file, and nothing is modified;
a second check decodes only the files that changed."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import util.data.layout as layout
from util.data.check import cache_path, check_dataset, main, verify_dataset
from util.data.layout import DatasetError
from util.data.mfnet import N_CLASS
from util.data.synthetic import generate_dataset


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CEKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


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
    assert check_dataset(folder, None, N_CLASS, need_edges=True) == []
    assert main(["--data-dir", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")


def test_missing_data_dir(tmp_path):
    only(check_dataset(tmp_path / "nope", None, N_CLASS), "nope", "not found")


def test_missing_split_file(folder):
    (folder / "val.txt").unlink()
    only(check_dataset(folder, None, N_CLASS), "val.txt", "split file not found")


def test_frame_absent(folder):
    with open(folder / "train.txt", "a") as f:
        f.write("99999D\n")
    problems = check_dataset(folder, ["train"], N_CLASS, need_edges=True)
    assert len(problems) == 3
    for sub in ("images", "labels", "edge_4x"):
        assert any(os.path.join(sub, "99999D.png") in p and "not found" in p for p in problems)


def test_corrupt_png(folder):
    name = first(folder)
    path = folder / "images" / f"{name}.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    only(check_dataset(folder, ["train"], N_CLASS), str(path), "corrupt")
    (folder / "labels" / f"{name}.png").write_bytes(b"garbage")
    assert any(f"labels/{name}.png" in p and "corrupt" in p for p in check_dataset(folder, ["train"], N_CLASS))


def test_three_channel_image(folder):
    name = first(folder)
    Image.new("RGB", (64, 32)).save(folder / "images" / f"{name}.png")
    only(check_dataset(folder, ["train"], N_CLASS), f"images/{name}.png", "4-channel", "3 channel")


def test_three_channel_label(folder):
    name = first(folder)
    Image.new("RGB", (64, 32)).save(folder / "labels" / f"{name}.png")
    only(check_dataset(folder, ["train"], N_CLASS), f"labels/{name}.png", "single-channel", "3 channel")


def test_label_id_out_of_range(folder):
    name = first(folder)
    label = np.array(Image.open(folder / "labels" / f"{name}.png"))
    label[3, 4] = 9
    Image.fromarray(label).save(folder / "labels" / f"{name}.png")
    only(check_dataset(folder, ["train"], N_CLASS), f"labels/{name}.png", "[9]", "outside 0..8")
    assert check_dataset(folder, ["train"], n_class=10) == []


def test_size_mismatch(folder):
    name = first(folder)
    Image.new("L", (64, 40)).save(folder / "labels" / f"{name}.png")
    problems = check_dataset(folder, ["train"], N_CLASS)
    assert any(f"images/{name}.png" in p and "differs" in p and "40x64" in p for p in problems), problems
    assert any(f"edge_4x/{name}.png" in p and "expected 10x16" in p for p in problems), problems


def test_edge_wrong_size_and_missing(folder):
    name = first(folder, "val")
    Image.new("L", (10, 10)).save(folder / "edge_4x" / f"{name}.png")
    only(check_dataset(folder, ["val"], N_CLASS), f"edge_4x/{name}.png", "expected 8x16")
    Image.new("L", (64, 32)).save(folder / "edge_4x" / f"{name}.png")  # label size is accepted too
    assert check_dataset(folder, ["val"], N_CLASS) == []
    (folder / "edge_4x" / f"{name}.png").unlink()
    assert check_dataset(folder, ["val"], N_CLASS) == []
    only(check_dataset(folder, ["val"], N_CLASS, need_edges=True), f"edge_4x/{name}.png", "not found")


def test_verify_lists_every_problem(folder, capsys):
    (folder / "val.txt").unlink()
    Image.new("RGB", (64, 32)).save(folder / "labels" / f"{first(folder, 'test')}.png")
    with pytest.raises(DatasetError) as err:
        verify_dataset(folder, None, N_CLASS)
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
    assert check_dataset(folder, None, N_CLASS, need_edges=True)
    assert main(["--data-dir", str(folder), "--need-edges"]) == 1
    assert snapshot() == before


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut


def test_truncated_pixel_data_is_found_by_the_default_check(folder):
    name, edge_name = first(folder), first(folder, "val")
    image, edge = folder / "images" / f"{name}.png", folder / "edge_4x" / f"{edge_name}.png"
    truncate(image)
    truncate(edge)
    assert check_dataset(folder, None, N_CLASS, decode_images=False) == []  # headers alone look fine
    problems = check_dataset(folder, None, N_CLASS)
    assert len(problems) == 2
    assert any(str(image) in p and "corrupt" in p for p in problems), problems
    assert any(str(edge) in p and "corrupt" in p for p in problems), problems
    with pytest.raises(DatasetError, match=f"2 problem.*\n.*{name}.png"):
        verify_dataset(folder, None, N_CLASS, need_edges=True, progress=False)


def test_sixteen_bit_rgba_image(folder):
    name = first(folder)
    path = folder / "images" / f"{name}.png"
    assert cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257)
    only(check_dataset(folder, ["train"], N_CLASS), str(path), "4-channel uint8", "uint16")


def test_progress_bar_on_stderr_and_off_switch(folder, capsys):
    check_dataset(folder, ["train"], N_CLASS)
    assert "checking" in capsys.readouterr().err
    check_dataset(folder, ["train"], N_CLASS, progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture
def decodes(monkeypatch):
    """Names of the files decoded while the test runs, by folder (images, labels, edge_4x)."""
    seen = {"images": [], "labels": [], "edge_4x": []}

    def counting(fn):
        def wrapper(path, *args):
            seen[os.path.basename(os.path.dirname(path))].append(os.path.basename(path))
            return fn(path, *args)
        return wrapper

    monkeypatch.setattr(layout, "load_image_file", counting(layout.load_image_file))
    monkeypatch.setattr(layout, "load_single_channel", counting(layout.load_single_channel))  # labels and edges
    return seen


def test_second_check_uses_cache_and_redecodes_changed_files(folder, decodes, cache_dir):
    n = len(list((folder / "images").iterdir()))
    assert check_dataset(folder, None, N_CLASS, need_edges=True) == []
    assert {k: len(v) for k, v in decodes.items()} == {"images": n, "labels": n, "edge_4x": n}
    doc = json.loads(cache_path(folder).read_text())
    assert cache_path(folder).parent == cache_dir and doc["data_dir"] == str(folder.resolve())
    assert len(doc["files"]) == 3 * n

    for seen in decodes.values():
        seen.clear()
    assert check_dataset(folder, None, N_CLASS, need_edges=True) == []
    assert decodes == {"images": [], "labels": [], "edge_4x": []}

    name = first(folder)
    image, label = folder / "images" / f"{name}.png", folder / "labels" / f"{name}.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, new mtime
    bad = np.array(Image.open(label))
    bad[0, :8] = 12  # new content and size
    Image.fromarray(bad).save(label)
    only(check_dataset(folder, None, N_CLASS, need_edges=True), str(label), "[12]", "outside 0..8")
    assert decodes == {"images": [f"{name}.png"], "labels": [f"{name}.png"], "edge_4x": []}
    assert main(["--data-dir", str(folder), "--no-cache", "--no-progress"]) == 1
    assert len(decodes["images"]) == 1 + n  # --no-cache decodes everything again


def test_cached_label_is_judged_against_each_n_class(folder, decodes):
    assert check_dataset(folder, ["train"], N_CLASS) == []
    decodes["labels"].clear()
    problems = check_dataset(folder, ["train"], n_class=5)
    assert problems and all("outside 0..4" in p for p in problems)
    assert decodes["labels"] == []  # the verdict came from the cached class ids


def test_unusable_cache_never_breaks_the_check(folder, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CEKD_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert check_dataset(folder, None, N_CLASS) == []
    name = first(folder)
    truncate(folder / "images" / f"{name}.png")
    only(check_dataset(folder, ["train"], N_CLASS), f"images/{name}.png", "corrupt")

    monkeypatch.setenv("CEKD_CACHE_DIR", str(tmp_path / "garbled"))
    cache_path(folder).parent.mkdir()
    cache_path(folder).write_text("{not json")
    only(check_dataset(folder, ["train"], N_CLASS), f"images/{name}.png", "corrupt")
    assert json.loads(cache_path(folder).read_text())["files"]  # replaced by a good one
    assert [p.name for p in cache_path(folder).parent.iterdir()] == [cache_path(folder).name]  # no temp file left


def test_cache_location_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("CEKD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path("a").parent == tmp_path / "xdg" / "cekd-pytorch"
    assert cache_path("a") != cache_path("b") and cache_path("a") == cache_path(os.path.abspath("a"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path("a").parent == tmp_path / "home" / ".cache" / "cekd-pytorch"


def test_the_command_reads_the_class_count_from_dataset_json(folder, capsys):
    from util.data.info import DatasetInfo, default_palette, write_dataset_info

    (folder / "dataset.json").unlink(missing_ok=True)
    assert main(["--data-dir", str(folder), "--no-progress"]) == 0
    write_dataset_info(DatasetInfo("five", tuple(f"c{i}" for i in range(5)), default_palette(5)), folder)
    capsys.readouterr()
    assert main(["--data-dir", str(folder), "--no-progress"]) == 1  # the synthetic labels use ids up to 8
    assert "outside 0..4" in capsys.readouterr().out
    assert main(["--data-dir", str(folder), "--no-progress", "--n-class", "9"]) == 0


@pytest.mark.parametrize("text", ["{", '{"radius": "2", "stride": 4}', '{"radius": 2, "stride": 8}'])
def test_a_malformed_edge_record_is_one_problem_of_the_command(folder, capsys, text):
    """edge_4x/edges.json holds the radius a loader with an ignored class needs: the command reads it."""
    (folder / "edge_4x" / "edges.json").write_text(text)
    assert main(["--data-dir", str(folder), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 1 problem(s)") and len(out) == 2 and out[1].startswith(f"{folder}/edge_4x/edges.json: ")
    only(check_dataset(folder, ["val"], N_CLASS, edge_record=True), "edge_4x/edges.json")
    assert check_dataset(folder, ["val"], N_CLASS, need_edges=True) == []  # a caller that does not need the radius
    shutil.rmtree(folder / "edge_4x")
    assert check_dataset(folder, ["val"], N_CLASS, edge_record=True) == []  # no edge maps: no radius needed
