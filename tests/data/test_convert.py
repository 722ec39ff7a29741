"""util.data.convert: PST900, FMB and generic folders become checked MFNet-format folders; bad sources and
foreign destinations are refused with every problem named and nothing written; SRC is never touched."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from util.data import convert as conv
from util.data.check import check_dataset
from util.data.edges import edge_label
from util.data.info import FMB, PST900, DatasetInfo, default_palette, load_dataset_info
from util.data.layout import load_edge_file, load_image_file, load_label_file
from util.data.sources import plan_pst900, seeded_split
from util.data.thermal import percentile_range

H, W = 48, 64
RNG_SEED = 1234


# ----------------------------------------------------------------------------- fixture trees

def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path


def blocks_label(rng, n_class, h=H, w=W):
    """A label map of a few rectangles of random classes on class 0."""
    label = np.zeros((h, w), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        label[y:y + rng.integers(4, 16), x:x + rng.integers(4, 20)] = rng.integers(1, n_class)
    return label


def make_pst900(root, n_train=10, n_test=3, stem=None):
    """PST900 layout; returns {stem: {"rgb", "thermal", "raw", "label"}} of what was written (RGB order)."""
    rng = np.random.default_rng(RNG_SEED)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = stem(split, i) if stem else f"{i:02d}_bag1a_rect_rgb_frame{i + 100 * (split == 'test'):010d}"
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            thermal = rng.integers(1, 256, (H, W), dtype=np.uint8)
            raw = rng.integers(7000, 9000, (H, W)).astype(np.uint16)
            raw[:3, :5] = 0  # projection holes
            label = blocks_label(rng, 5)
            d = root / split
            write(d / "rgb" / f"{name}.png", rgb[:, :, ::-1])
            write(d / "thermal" / f"{name}.png", thermal)
            write(d / "thermal_raw" / f"{name}.png", raw)
            write(d / "depth" / f"{name}.png", raw)
            write(d / "labels" / f"{name}.png", label)
            frames[name] = {"rgb": rgb, "thermal": thermal, "raw": raw, "label": label, "split": split}
    return frames


def make_fmb(root, n_train=6, n_test=2):
    rng = np.random.default_rng(RNG_SEED)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = f"{split[:2]}{i:05d}"
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            thermal = rng.integers(0, 256, (H, W), dtype=np.uint8)
            label = blocks_label(rng, 15)
            label[-4:, -4:] = 255  # FMB's stray void pixels
            write(root / split / "Visible" / f"{name}.png", rgb[:, :, ::-1])
            write(root / split / "Infrared" / f"{name}.png", np.dstack([thermal] * 3))  # grey stored as colour
            write(root / split / "Label" / f"{name}.png", label)
            frames[name] = {"rgb": rgb, "thermal": thermal, "label": label}
    return frames


TOY_PALETTE = ((0, 0, 0), (255, 0, 0), (0, 0, 255))


def make_folders(root, n=10):
    """Generic layout: JPEG RGB of flat colour, 16-bit TIFF thermal, colour-coded PNG labels."""
    rng = np.random.default_rng(RNG_SEED)
    frames = {}
    for i in range(n):
        name = f"frame_{i:03d}"
        rgb = np.empty((H, W, 3), np.uint8)
        rgb[:] = (200, 100, 30)  # flat, so JPEG keeps it (within a level or two)
        raw = rng.integers(1000, 5000, (H, W)).astype(np.uint16)
        label = blocks_label(rng, 3)
        colour = np.array(TOY_PALETTE, np.uint8)[label]
        write(root / "rgb" / f"{name}.jpg", rgb[:, :, ::-1])
        write(root / "thermal" / f"{name}.tif", raw)
        write(root / "labels" / f"{name}.png", colour[:, :, ::-1])
        frames[name] = {"rgb": rgb, "raw": raw, "label": label}
    return frames


def expected_split(names, val_fraction, test_fraction=0.0, seed=0):
    """The documented rule, written out independently."""
    ordered = sorted(names)
    n = len(ordered)
    count = lambda f: 0 if f == 0 else max(1, math.floor(f * n + 0.5))  # noqa: E731
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = count(val_fraction), count(test_fraction)
    val = sorted(ordered[i] for i in perm[:n_val])
    test = sorted(ordered[i] for i in perm[n_val:n_val + n_test])
    return sorted(set(ordered) - set(val) - set(test)), val, test


def split(dst, name):
    return (dst / f"{name}.txt").read_text().split()


def snapshot(root):
    """Every path under root with its size and mtime (to prove nothing was written)."""
    out = {}
    for here, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(here, n)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def run(args, capsys):
    code = conv.main([*args, "--no-progress", "--workers", "1"])
    out = capsys.readouterr()
    return code, out.out, out.err


def outputs_beside(parent):
    return sorted(p.name for p in parent.iterdir())


# ----------------------------------------------------------------------------- PST900

def test_pst900_8bit(tmp_path, capsys):
    frames = make_pst900(tmp_path / "pst")
    dst = tmp_path / "out"
    code, out, err = run(["pst900", str(tmp_path / "pst"), str(dst)], capsys)
    assert code == 0, err
    assert check_dataset(dst, ["train", "val", "test"], PST900.n_class, need_edges=True) == []
    assert load_dataset_info(dst) == PST900
    train_names = [n for n, f in frames.items() if f["split"] == "train"]
    exp_train, exp_val, _ = expected_split(train_names, 0.1)
    assert (split(dst, "train"), split(dst, "val")) == (exp_train, exp_val)
    assert len(exp_val) == 1 and len(exp_train) == 9
    assert split(dst, "test") == sorted(n for n, f in frames.items() if f["split"] == "test")
    assert "val: 1 of the 10 frames" in out and "--seed 0" in out
    for name, f in frames.items():
        image = load_image_file(dst / "images" / f"{name}.png")
        assert np.array_equal(image[:, :, :3], f["rgb"]), "R, G, B order"
        assert np.array_equal(image[:, :, 3], f["thermal"]), "thermal in channel 3"
        assert np.array_equal(load_label_file(dst / "labels" / f"{name}.png"), f["label"])
        assert np.array_equal(load_edge_file(dst / "edge_4x" / f"{name}.png"), edge_label(f["label"]))
    manifest = json.loads((dst / "convert.json").read_text())
    assert manifest["format"] == "pst900" and manifest["split_sizes"] == {"train": 9, "val": 1, "test": 3}


def scaled(raw, low, high):
    return np.clip(np.floor((raw.astype(np.float64) - low) * 255 / (high - low) + 0.5), 0, 255).astype(np.uint8)


def test_pst900_raw16_percentile_scaling(tmp_path, capsys):
    frames = make_pst900(tmp_path / "pst")
    dst = tmp_path / "out"
    code, out, err = run(["pst900", str(tmp_path / "pst"), str(dst), "--thermal", "raw16", "--val-fraction", "0.2"],
                         capsys)
    assert code == 0, err
    train = split(dst, "train")
    assert len(train) == 8 and len(split(dst, "val")) == 2
    values = np.sort(np.concatenate([frames[n]["raw"].ravel() for n in train]))
    values = values[values > 0]  # zero = no data, left out
    low = int(values[math.ceil(1.0 / 100 * values.size) - 1])
    high = int(values[math.ceil(99.0 / 100 * values.size) - 1])
    info = load_dataset_info(dst)
    assert info.thermal_range == (low, high)
    assert 7000 <= low < high < 9000
    for name, f in frames.items():
        thermal = load_image_file(dst / "images" / f"{name}.png")[:, :, 3]
        assert np.array_equal(thermal, scaled(f["raw"], low, high))
        assert (thermal[:3, :5] == 0).all()
    assert f"[{low}, {high}]" in out and "percentiles" in out


def test_pst900_raw16_fixed_range(tmp_path, capsys):
    frames = make_pst900(tmp_path / "pst", n_train=4, n_test=1)
    dst = tmp_path / "out"
    code, _, err = run(["pst900", str(tmp_path / "pst"), str(dst), "--thermal", "raw16",
                        "--raw-range", "7500", "8500"], capsys)
    assert code == 0, err
    assert load_dataset_info(dst).thermal_range == (7500, 8500)
    name = next(iter(frames))
    thermal = load_image_file(dst / "images" / f"{name}.png")[:, :, 3]
    assert np.array_equal(thermal, scaled(frames[name]["raw"], 7500, 8500))
    assert thermal.min() == 0 and thermal.max() == 255  # values outside the range are clipped


def test_stems_colliding_across_splits_are_prefixed(tmp_path, capsys):
    make_pst900(tmp_path / "pst", n_train=3, n_test=2, stem=lambda s, i: f"frame{i}")
    dst = tmp_path / "out"
    code, out, err = run(["pst900", str(tmp_path / "pst"), str(dst)], capsys)
    assert code == 0, err
    assert split(dst, "test") == ["test_frame0", "test_frame1"]
    assert sorted(split(dst, "train") + split(dst, "val")) == ["train_frame0", "train_frame1", "train_frame2"]
    assert "prefixed" in out


# ----------------------------------------------------------------------------- FMB

def test_fmb(tmp_path, capsys):
    frames = make_fmb(tmp_path / "fmb")
    dst = tmp_path / "out"
    code, _, err = run(["fmb", str(tmp_path / "fmb"), str(dst), "--val-fraction", "0.2"], capsys)
    assert code == 0, err
    assert check_dataset(dst, ["train", "val", "test"], FMB.n_class, need_edges=True) == []
    info = load_dataset_info(dst)
    assert info == FMB and info.ignore_index == 0 and info.class_names[0] == "unlabeled"
    exp_train, exp_val, _ = expected_split([n for n in frames if n.startswith("tr")], 0.2)
    assert (split(dst, "train"), split(dst, "val"), split(dst, "test")) == (exp_train, exp_val, ["te00000", "te00001"])
    for name, f in frames.items():
        image = load_image_file(dst / "images" / f"{name}.png")
        assert np.array_equal(image[:, :, :3], f["rgb"]) and np.array_equal(image[:, :, 3], f["thermal"])
        expected = f["label"].copy()
        expected[expected == 255] = 0
        assert np.array_equal(load_label_file(dst / "labels" / f"{name}.png"), expected)


def test_fmb_colour_coded_label_is_mapped_through_the_palette(tmp_path, capsys):
    frames = make_fmb(tmp_path / "fmb", n_train=3, n_test=1)
    name = "tr00000"
    ids = frames[name]["label"].copy()
    ids[ids == 255] = 0
    colour = np.array(FMB.palette, np.uint8)[ids]
    write(tmp_path / "fmb" / "train" / "Label" / f"{name}.png", colour[:, :, ::-1])
    code, _, err = run(["fmb", str(tmp_path / "fmb"), str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert np.array_equal(load_label_file(tmp_path / "out" / "labels" / f"{name}.png"), ids)


def test_missing_source_is_one_line(tmp_path, capsys):
    code, _, err = run(["fmb", str(tmp_path / "nope"), str(tmp_path / "out")], capsys)
    assert code == 1
    assert err.strip().splitlines()[1:] == [f"{tmp_path / 'nope'}: source folder not found"]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- folders

def test_folders_seeded_split_colour_labels_16bit_jpeg(tmp_path, capsys):
    frames = make_folders(tmp_path / "src")
    dst = tmp_path / "out"
    code, out, err = run(["folders", str(tmp_path / "src"), str(dst), "--classes", "background,hot,cold",
                          "--palette", "0,0,0; 255,0,0; 0,0,255", "--val-fraction", "0.2", "--seed", "3"], capsys)
    assert code == 0, err
    assert check_dataset(dst, ["train", "val", "test"], 3, need_edges=True) == []
    exp = expected_split(frames, 0.2, 0.1, seed=3)
    assert (split(dst, "train"), split(dst, "val"), split(dst, "test")) == exp
    assert [len(x) for x in exp] == [7, 2, 1]
    info = load_dataset_info(dst)
    assert info == DatasetInfo("src", ("background", "hot", "cold"), TOY_PALETTE, thermal_range=info.thermal_range)
    low, high = info.thermal_range
    for name, f in frames.items():
        image = load_image_file(dst / "images" / f"{name}.png")
        assert np.abs(image[:, :, :3].astype(int) - f["rgb"]).max() <= 2, "R, G, B order from JPEG"
        assert np.array_equal(image[:, :, 3], scaled(f["raw"], low, high))
        assert np.array_equal(load_label_file(dst / "labels" / f"{name}.png"), f["label"])


def test_folders_split_lists_json_classes_and_map(tmp_path, capsys):
    src = tmp_path / "src"
    frames = make_folders(src, n=6)
    for name, f in frames.items():  # id labels this time, with 255 as void
        ids = f["label"].copy()
        ids[0, 0] = 255
        write(src / "labels" / f"{name}.png", ids)
    names = sorted(frames)
    (src / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (src / "test.txt").write_text(names[5] + "\n")
    spec = tmp_path / "classes.json"
    spec.write_text(json.dumps({"name": "Toy", "class_names": ["void", "hot", "cold"], "ignore_index": 0}))
    dst = tmp_path / "out"
    code, out, err = run(["folders", str(src), str(dst), "--classes-json", str(spec), "--map", "255=0",
                          "--val-fraction", "0.25"], capsys)
    assert code == 0, err
    info = load_dataset_info(dst)
    assert (info.name, info.ignore_index, info.palette) == ("Toy", 0, default_palette(3))
    exp_train, exp_val, _ = expected_split(names[:4], 0.25)
    assert (split(dst, "train"), split(dst, "val"), split(dst, "test")) == (exp_train, exp_val, [names[5]])
    assert "1 frame(s) in no split list were left out" in out and "no val.txt" in out
    assert load_label_file(dst / "labels" / f"{names[0]}.png")[0, 0] == 0
    assert not (dst / "images" / f"{names[4]}.png").exists()


# ----------------------------------------------------------------------------- refusals

def test_every_problem_listed_with_its_file_and_nothing_written(tmp_path, capsys):
    src = tmp_path / "pst"
    frames = make_pst900(src)
    names = sorted(n for n, f in frames.items() if f["split"] == "train")
    (src / "train" / "thermal" / f"{names[0]}.png").unlink()  # missing modality
    write(src / "train" / "labels" / f"{names[1]}.png", np.zeros((H - 8, W), np.uint8))  # size mismatch
    bad = frames[names[2]]["label"].copy()
    bad[5, 5] = 7
    write(src / "train" / "labels" / f"{names[2]}.png", bad)  # id outside the class list
    test_name = sorted(n for n, f in frames.items() if f["split"] == "test")[0]
    (src / "test" / "rgb" / f"{test_name}.png").write_bytes(b"not a png")  # unreadable
    before = snapshot(tmp_path)
    code, _, err = run(["pst900", str(src), str(tmp_path / "out")], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: 4 problem(s) in") and "nothing was written" in lines[0]
    problems = lines[1:]
    assert len(problems) == 4, problems
    expect = [(src / "train" / "rgb" / f"{names[0]}.png", "no matching thermal"),
              (src / "train" / "labels" / f"{names[1]}.png", "label size 40x64 differs from rgb size 48x64"),
              (src / "train" / "labels" / f"{names[2]}.png", "label ids [7] outside the classes 0..4"),
              (src / "test" / "rgb" / f"{test_name}.png", "unreadable")]
    for path, fragment in expect:
        assert any(p.startswith(str(path)) and fragment in p for p in problems), (path, fragment, problems)
    assert snapshot(tmp_path) == before  # no DST, no temporary folder, SRC untouched


def test_bad_split_lists(tmp_path, capsys):
    src = tmp_path / "src"
    names = sorted(make_folders(src, n=4))
    (src / "train.txt").write_text(f"{names[0]}\n{names[1]}\n{names[0]}\nghost\n")
    (src / "val.txt").write_text(f"{names[1]}\n")
    (src / "test.txt").write_text("\n")
    code, _, err = run(["folders", str(src), str(tmp_path / "out"), "--classes", "a,b,c",
                        "--palette", "0,0,0;255,0,0;0,0,255"], capsys)
    assert code == 1
    for fragment in (f"{src / 'train.txt'}: frame {names[0]} listed more than once",
                     f"{src / 'train.txt'}: frame ghost: no rgb/thermal/labels file",
                     f"{src / 'val.txt'}: frame {names[1]} is also in train.txt",
                     f"{src / 'test.txt'}: lists no frames"):
        assert fragment in err, (fragment, err)
    assert "4 problem(s)" in err and not (tmp_path / "out").exists()


def test_mixed_bit_depth_and_unknown_colours(tmp_path, capsys):
    src = tmp_path / "src"
    frames = make_folders(src, n=5)
    names = sorted(frames)
    write(src / "thermal" / f"{names[0]}.tif", np.full((H, W), 9, np.uint8))
    colour = np.zeros((H, W, 3), np.uint8)
    colour[0, 0] = (10, 20, 30)
    write(src / "labels" / f"{names[1]}.png", colour)
    code, _, err = run(["folders", str(src), str(tmp_path / "out"), "--classes", "a,b,c",
                        "--palette", "0,0,0;255,0,0;0,0,255"], capsys)
    assert code == 1
    assert "mix 8-bit" in err and str(src / "thermal" / f"{names[0]}.tif") in err
    assert f"{src / 'labels' / names[1]}.png: colours not in the palette: (30, 20, 10)" in err
    assert not (tmp_path / "out").exists()


def test_foreign_destination_refused_and_untouched(tmp_path, capsys):
    make_pst900(tmp_path / "pst", n_train=3, n_test=1)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(["pst900", str(tmp_path / "pst"), str(dst), *extra], capsys)
        assert code == 1 and "not written by util.data.convert" in err and str(dst) in err
    assert snapshot(tmp_path) == before


def test_destination_inside_source_refused(tmp_path, capsys):
    make_pst900(tmp_path / "pst", n_train=3, n_test=1)
    before = snapshot(tmp_path)
    code, _, err = run(["pst900", str(tmp_path / "pst"), str(tmp_path / "pst" / "converted")], capsys)
    assert code == 1 and "inside the source" in err
    code, _, err = run(["pst900", str(tmp_path / "pst"), str(tmp_path)], capsys)
    assert code == 1 and "contains the source" in err
    assert snapshot(tmp_path) == before


def test_source_never_written_and_rerun_needs_overwrite(tmp_path, capsys):
    src, dst = tmp_path / "pst", tmp_path / "out"
    make_pst900(src, n_train=5, n_test=1)
    before = snapshot(src)
    assert run(["pst900", str(src), str(dst)], capsys)[0] == 0
    first = snapshot(dst)
    code, _, err = run(["pst900", str(src), str(dst), "--val-fraction", "0.4"], capsys)
    assert code == 1 and "add --overwrite" in err
    assert snapshot(dst) == first
    code, _, err = run(["pst900", str(src), str(dst), "--val-fraction", "0.4", "--overwrite"], capsys)
    assert code == 0, err
    assert len(split(dst, "val")) == 2 and len(split(dst, "train")) == 3
    assert outputs_beside(tmp_path) == ["out", "pst"]  # no temporary or old folder left
    (dst / "images" / "extra.png").write_bytes(b"user file")
    code, _, err = run(["pst900", str(src), str(dst), "--overwrite"], capsys)
    assert code == 1 and "images/extra.png" in err and "refusing" in err
    assert snapshot(src) == before


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    make_pst900(tmp_path / "pst", n_train=4, n_test=1)
    calls = []

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = conv.write_frame
    monkeypatch.setattr(conv, "write_frame", fail_on_third)
    plan = plan_pst900(tmp_path / "pst")
    with pytest.raises(KeyboardInterrupt):
        conv.convert(plan, tmp_path / "out", workers=1, progress=False)
    assert outputs_beside(tmp_path) == ["pst"]


def test_a_full_disk_during_conversion_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno
    make_pst900(tmp_path / "pst", n_train=4, n_test=1)
    out = tmp_path / "out"

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(conv, "write_png", full)
    assert conv.main(["pst900", str(tmp_path / "pst"), str(out), "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and err[0].endswith(
        f": the disk is full (no space left on device); nothing was written to {out}")
    assert outputs_beside(tmp_path) == ["pst"]


# ----------------------------------------------------------------------------- rules and arguments

def test_seeded_split_rule():
    names = [f"n{i:02d}" for i in range(20)]
    out = seeded_split(reversed(names), 0.1, 0.25, seed=5)
    assert [len(out[k]) for k in ("train", "val", "test")] == [13, 2, 5]
    assert sorted(out["train"] + out["val"] + out["test"]) == names
    assert (out["train"], out["val"], out["test"]) == expected_split(names, 0.1, 0.25, seed=5)
    assert seeded_split(names, 0.1, seed=6)["val"] != out["val"]
    assert "test" not in seeded_split(names, 0.1)
    assert len(seeded_split(names[:3], 0.01)["val"]) == 1  # at least one val frame
    with pytest.raises(ValueError, match="too few"):
        seeded_split(names[:2], 0.5, 0.5)


def test_percentile_range_nearest_rank():
    hist = np.zeros(65536, np.int64)
    hist[0] = 10_000  # no-data pixels are left out
    hist[100:200] = 1  # values 100..199 once each
    assert percentile_range(hist) == (100, 198)
    with pytest.raises(ValueError, match="no non-zero"):
        percentile_range(np.eye(1, 65536, 0, dtype=np.int64)[0])


@pytest.mark.parametrize("args, fragment", [
    (["--classes", "a,b,c", "--palette", "0,0,0;255,0"], "argument --palette: must be colours \"R,G,B;R,G,B;...\""),
    (["--classes", "a,b,c", "--palette", "0,0,0;255,0,\u0663"], "argument --palette: must be colours"),  # Arabic 3
    (["--classes", "a,b,c", "--workers", "-1"], "argument --workers: must be an integer at least 1, got '-1'"),
    (["--classes", "a,b,c", "--edge-radius", "nan"], "argument --edge-radius: must be a finite number at least 0"),
    (["--classes", "a,b,c", "--seed", "-1"], "argument --seed: must be an integer from 0 to 4294967295"),
    (["--classes", "a,b,c", "--test-fraction", "1"], "argument --test-fraction: must be a number in [0, 1)"),
    (["--classes", "a,b,c", "--palette", "0,0,0;255,0,0"], "--classes/--palette: palette: expected 3 colours"),
    (["--classes", "a,b,a"], "class_names[2]: name 'a' appears more than once"),
    (["--classes", "a,b,c", "--map", "255=9"], "--map 255=9: class id 9 outside 0..2"),
    (["--classes", "a,b,c", "--map", "x"], "argument --map: must be SRC=ID"),
    (["--classes", "a,b,c", "--ignore-index", "255"], "ignore_index: expected null or a class id 0..2"),
    (["--classes", "a,b,c", "--val-fraction", "0"], "--val-fraction"),
    (["--classes", "a,b,c", "--raw-range", "9", "3"], "argument --raw-range: must be LOW < HIGH, got 9 3"),
])
def test_bad_arguments_name_the_argument(tmp_path, capsys, args, fragment):
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit) as exc:
        conv.main(["folders", str(tmp_path / "src"), str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_classes_json_error_names_file_and_field(tmp_path, capsys):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"class_names": ["a", "b"], "palette": [[0, 0, 0]]}))
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit):
        conv.main(["folders", str(tmp_path / "src"), str(tmp_path / "out"), "--classes-json", str(spec)])
    assert f"{spec}: palette: expected 2 colours" in capsys.readouterr().err


# ----------------------------------------------------------------------------- train and evaluate on each

@pytest.mark.parametrize("fmt", ["pst900", "fmb", "folders"])
def test_convert_then_train_both_networks_and_evaluate(tmp_path, capsys, fmt):
    """Each source layout converts, checks, trains both networks one short epoch at 64x64 (the frames
    are 48x64, not a multiple of 32: metrics at the native size) and evaluates with its own classes."""
    import run_demo_student
    import trainStudent
    import trainTeacher

    src, dst = tmp_path / "src", tmp_path / "data"
    {"pst900": make_pst900, "fmb": make_fmb, "folders": make_folders}[fmt](src)
    extra = ["--classes", "background,red,blue", "--palette", "0,0,0;255,0,0;0,0,255"] if fmt == "folders" else []
    code, _, err = run([fmt, str(src), str(dst), *extra], capsys)
    assert code == 0, err
    info = load_dataset_info(dst)
    assert check_dataset(dst, ["train", "val", "test"], info.n_class, need_edges=True) == []
    small = ["--data-dir", str(dst), "--runs-dir", str(tmp_path / "runs"), "--depth", "18", "--height", "64",
             "--width", "64", "--batch-size", "2", "--no-pretrained", "--workers", "0", "--no-progress",
             "--epochs", "1", "--max-steps-per-epoch", "2", "--lr", "0.01"]
    teacher = trainTeacher.cli([*small, "--run-name", "t"])
    student = trainStudent.cli([*small, "--run-name", "s", "--teacher", str(tmp_path / "runs" / "t" / "best.pth")])
    for results in (teacher, student):
        assert results["class_names"] == list(info.class_names)
        assert results["config"]["n_class"] == info.n_class
        test = results["splits"]["test"]
        assert len(test["iou"]) == info.n_class
        if info.ignore_index is not None:  # FMB's "unlabeled" is not scored
            assert np.isnan(test["iou"][info.ignore_index])
    demo = run_demo_student.main(["--weights", str(tmp_path / "runs" / "s" / "best.pth"), "--data-dir", str(dst),
                                  "--runs-dir", str(tmp_path / "demo"), "--run-name", "d", "--workers", "0",
                                  "--no-progress", "--panels", "1"])
    n_test = len(split(dst, "test"))
    mat = np.load(tmp_path / "demo" / "d" / "confusion_test.npy")
    ignored = 0
    if info.ignore_index is not None:
        ignored = sum(int((load_label_file(dst / "labels" / f"{n}.png") == info.ignore_index).sum())
                      for n in split(dst, "test"))
    assert mat.sum() == n_test * H * W - ignored, "metrics at the labels' native 48x64"
    assert demo["class_names"] == list(info.class_names)
    header = (tmp_path / "demo" / "d" / "confusion_test.csv").read_text().splitlines()[0]
    assert header.split(",")[1:] == list(info.class_names)
    mask = cv2.imread(str(next((tmp_path / "demo" / "d" / "predictions" / "test").iterdir())))[:, :, ::-1]
    assert mask.shape[:2] == (H, W)
    colours = {tuple(int(v) for v in c) for c in mask.reshape(-1, 3)}
    assert colours <= set(info.palette), "predictions are drawn in the dataset's palette"
    # --input on the user's frames shows the same classes' colours without the data folder
    frame = tmp_path / "frame.png"
    write(frame, load_image_file(dst / "images" / f"{split(dst, 'test')[0]}.png")[:, :, 3])
    run_demo_student.main(["--weights", str(tmp_path / "runs" / "s" / "best.pth"), "--input", str(frame),
                           "--runs-dir", str(tmp_path / "demo"), "--run-name", "own", "--no-progress"])
    own = cv2.imread(str(tmp_path / "demo" / "own" / "frame_mask.png"))[:, :, ::-1]
    assert {tuple(int(v) for v in c) for c in own.reshape(-1, 3)} <= set(info.palette)


# ----------------------------------------------------------------------------- issue 16: names, leftovers

def test_names_a_split_list_cannot_store_are_refused_in_one_line_before_writing(tmp_path, capsys):
    src = tmp_path / "src"
    make_folders(src, n=6)
    for sub, ext in (("rgb", ".jpg"), ("thermal", ".tif"), ("labels", ".png")):
        for bad in ("frame_000", "frame_001"):
            (src / sub / f"{bad}{ext}").rename(src / sub / f"{bad}\nx{ext}" if bad == "frame_000"
                                              else src / sub / f"{bad}\u2028y{ext}")
    code, _, err = run(["folders", str(src), str(tmp_path / "out"), "--classes", "background,hot,cold",
                        "--palette", "0,0,0; 255,0,0; 0,0,255"], capsys)
    assert code == 1 and not (tmp_path / "out").exists()
    assert outputs_beside(tmp_path) == ["src"]
    line = (f"{src / 'rgb'}: 2 file name(s) hold a line break or another control character, which a "
            f"one-name-per-line split list cannot store: 'frame_000\\nx.jpg', 'frame_001\\u2028y.jpg'; rename them")
    assert line in err.splitlines()


def test_a_conversion_removes_the_leftovers_of_killed_ones_beside_dst(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    make_folders(tmp_path / "src", n=6)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = [tmp_path / f".out.converting-{host}-{dead.stdout.strip()}", tmp_path / f".out.old-{host}-{dead.stdout.strip()}"]
    alive = tmp_path / f".out.converting-{host}-1"  # pid 1 runs: a conversion in progress, kept
    other = tmp_path / f".out.converting-elsewhere-{dead.stdout.strip()}"  # another host's: kept
    for d in (*stale, alive, other):
        (d / "images").mkdir(parents=True)
    code, _, err = run(["folders", str(tmp_path / "src"), str(tmp_path / "out"), "--classes", "background,hot,cold",
                        "--palette", "0,0,0; 255,0,0; 0,0,255"], capsys)
    assert code == 0, err
    assert outputs_beside(tmp_path) == sorted([alive.name, other.name, "out", "src"])


def test_a_raw_range_given_in_code_is_worded_as_on_the_command_line():
    """scale_raw_thermal's LOW < HIGH rule says what --raw-range LOW HIGH says (options.check_low_high)."""
    from util.data.thermal import scale_raw_thermal

    for low, high in ((9, 3), (7, 7)):
        with pytest.raises(ValueError, match=rf"^--raw-range: must be LOW < HIGH, got {low} {high}$"):
            scale_raw_thermal(np.zeros((2, 2), np.uint16), low, high)
    with pytest.raises(ValueError, match=r"^--raw-range: must be LOW < HIGH \(finite numbers\), got 0 inf$"):
        scale_raw_thermal(np.zeros((2, 2), np.uint16), 0, math.inf)
    assert scale_raw_thermal(np.array([[3, 9]], np.uint16), 3, 9).tolist() == [[0, 255]]
