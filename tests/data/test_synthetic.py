"""Synthetic MFNet-format generator: determinism, classes, day/night splits, folder safety."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from util.data.check import check_dataset
from util.data.dataset import MFDataset
from util.data.mfnet import N_CLASS, STANDARD_SPLITS
from util.data.synthetic import ensure_synthetic, generate_dataset, main

KW = dict(n_frames=16, height=64, width=96)
ARGS = ["--frames", "16", "--height", "64", "--width", "96"]


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("syn") / "a", seed=3, **KW)


def test_reproducible_from_seed(folder, tmp_path):
    again = files(generate_dataset(tmp_path / "b", seed=3, **KW))
    assert again == files(folder)
    other = files(generate_dataset(tmp_path / "c", seed=4, **KW))
    shared = [k for k in other if k.startswith("images/") and k in again]
    assert shared and all(other[k] != again[k] for k in shared)


def test_all_classes_and_formats(folder):
    seen = set()
    for path in (folder / "labels").iterdir():
        label = Image.open(path)
        assert label.mode == "L" and label.size == (96, 64)
        seen |= set(np.unique(np.array(label)).tolist())
        image = Image.open(folder / "images" / path.name)
        assert image.mode == "RGBA" and image.size == (96, 64)
        edge = np.array(Image.open(folder / "edge_4x" / path.name))
        assert edge.shape == (16, 24) and set(np.unique(edge).tolist()) <= {0, 1}
    assert seen == set(range(N_CLASS))


def test_day_night_splits(folder):
    splits = {s: (folder / f"{s}.txt").read_text().split() for s in STANDARD_SPLITS}
    names = sorted(p.stem for p in (folder / "images").iterdir())
    day = [n for n in names if n.endswith("D")]
    night = [n for n in names if n.endswith("N")]
    assert len(day) + len(night) == len(names) == 16 and day and night
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == names
    assert set(splits["test_day"]) | set(splits["test_night"]) == set(splits["test"])
    assert all(n.endswith("D") for n in splits["test_day"]) and all(n.endswith("N") for n in splits["test_night"])
    for group in (day, night):
        in_split = {s: len(set(group) & set(splits[s])) for s in ("train", "val", "test")}
        assert in_split == {"train": len(group) // 2, "val": len(group) // 4,
                            "test": len(group) - len(group) // 2 - len(group) // 4}


def test_loadable_and_checks_clean(folder):
    assert check_dataset(folder, None, N_CLASS, need_edges=True) == []
    for split in STANDARD_SPLITS:
        ds = MFDataset(folder, split, height=64, width=96, edges=True, n_class=N_CLASS)
        assert ds[0]["image"].shape == (4, 64, 96)


def snapshot(folder):
    return {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_refuses_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(out, **KW)
    for flags in ([], ["--overwrite"]):
        assert main(["--out", str(out), "--frames", "8", "--height", "32", "--width", "32", *flags]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and str(out) in err
    assert f"{out}: not empty and not written by util.data.synthetic (no valid synthetic.json)" in err
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("meddle", ["extra file", "edited split", "extra folder"])
def test_overwrite_refuses_generated_folder_holding_user_files(folder, tmp_path, capsys, meddle):
    out = tmp_path / "out"
    shutil.copytree(folder, out)
    if meddle == "extra file":
        (out / "notes.txt").write_text("mine")
    elif meddle == "edited split":
        (out / "train.txt").write_text("00001D\n")
    else:
        (out / "images" / "mine").mkdir()
    before = snapshot(out)
    assert main(["--out", str(out), "--overwrite", "--seed", "4", *ARGS]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"refusing to replace {out}" in err
    assert ("changed since" if meddle == "edited split" else "not written by util.data.synthetic") in err
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_regenerates_purely_generated_folder(folder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(folder, out)
    (out / "images" / next(iter(sorted((out / "images").iterdir()))).name).unlink()  # missing files are fine
    assert main(["--out", str(out), "--overwrite", "--seed", "4", *ARGS]) == 0
    assert json.loads((out / "synthetic.json").read_text())["seed"] == 4
    assert files(out) == files(generate_dataset(tmp_path / "ref", seed=4, **KW))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]
    assert check_dataset(out, None, N_CLASS, need_edges=True, progress=False) == []


def test_size_must_be_multiple_of_32(tmp_path):
    with pytest.raises(ValueError, match="multiples of 32"):
        generate_dataset(tmp_path / "x", n_frames=8, height=50, width=64)
    with pytest.raises(ValueError, match="at least 4 day"):
        generate_dataset(tmp_path / "x", n_frames=4, height=32, width=32)


def test_full_mfnet_size(tmp_path):
    out = generate_dataset(tmp_path / "big", n_frames=8, height=480, width=640)
    assert Image.open(next((out / "images").iterdir())).size == (640, 480)
    assert Image.open(next((out / "edge_4x").glob("*.png"))).size == (160, 120)


def test_ensure_synthetic_generates_once(tmp_path, capsys):
    out = ensure_synthetic(tmp_path / "s", n_frames=8, height=32, width=64)
    assert out == tmp_path / "s" and (out / "test_night.txt").exists()
    stamp = (out / "train.txt").stat().st_mtime_ns
    assert ensure_synthetic(out, n_frames=8, height=32, width=64) == out
    assert (out / "train.txt").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left behind
    with pytest.warns(UserWarning, match="differs"):
        ensure_synthetic(out, n_frames=9, height=32, width=64)
    assert main(["--out", str(tmp_path / "cli"), "--frames", "8", "--height", "32", "--width", "32"]) == 0
    assert "wrote 8 frames" in capsys.readouterr().out


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    import util.data.synthetic as syn
    real, calls = syn.render, []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # half-way
        return real(*args, **kw)

    monkeypatch.setattr(syn, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "s", **KW)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(syn, "render", real)
    assert check_dataset(ensure_synthetic(tmp_path / "s", **KW), None, N_CLASS, need_edges=True, progress=False) == []


def test_killed_run_is_cleaned_up_by_the_next(tmp_path):
    out = tmp_path / "s"
    code = (f"from util.data.synthetic import generate_dataset; "
            f"generate_dataset({str(out)!r}, n_frames=2000, height=32, width=32)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(".s.partial-*/images/*.png"))) < 3:  # killed half-way
            assert proc.poll() is None and time.monotonic() < deadline, "generator ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    alive = tmp_path / f".s.partial-{socket.gethostname()}-{os.getppid()}"  # another run, still going
    alive.mkdir()
    assert not out.exists() and len(list(tmp_path.iterdir())) == 2
    assert ensure_synthetic(out, **KW) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "s"]
    assert check_dataset(out, None, N_CLASS, need_edges=True, progress=False) == []
    assert len(list((out / "images").iterdir())) == KW["n_frames"]
