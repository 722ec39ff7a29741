"""Owned output folders (util.data.owned): only a tool's own earlier output is replaced, manifests of the
earlier versions still count, and a failed write leaves the old output as it was."""
import json

import pytest

from util.data.owned import DestinationError, Owner, check_destination, foreign_entries, write_owned

TOOL = Owner("util.data.example", "example.json")


def _fill(work):
    (work / "images").mkdir()
    (work / "images" / "a.png").write_bytes(b"pixels")
    (work / "train.txt").write_text("a\n")
    return {"seed": 1}


def test_manifest_lists_every_file_with_its_checksum(tmp_path):
    doc = write_owned(tmp_path / "out", TOOL, False, _fill)
    assert doc == json.loads((tmp_path / "out" / "example.json").read_text())
    assert doc["tool"] == TOOL.tool and doc["seed"] == 1 and sorted(doc["files"]) == ["images/a.png", "train.txt"]
    assert foreign_entries(tmp_path / "out", TOOL) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no work folder left


def test_only_an_unchanged_own_output_is_replaced(tmp_path):
    out = tmp_path / "out"
    write_owned(out, TOOL, False, _fill)
    with pytest.raises(DestinationError, match="add --overwrite"):
        write_owned(out, TOOL, False, _fill)
    (out / "train.txt").write_text("mine\n")
    with pytest.raises(DestinationError, match="train.txt: changed since util.data.example wrote it"):
        check_destination(out, TOOL, overwrite=True)
    (out / "train.txt").write_text("a\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match="notes.txt: not written by util.data.example"):
        write_owned(out, TOOL, True, _fill)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    with pytest.raises(DestinationError, match=r"no valid other\.json"):
        check_destination(out, Owner("util.data.other", "other.json"), overwrite=True)
    write_owned(out, TOOL, True, _fill)


@pytest.mark.parametrize("manifest", [
    {"tool": "util.data.example", "files": ["images/a.png", "train.txt"]},  # util.data.convert before: a list
    {"generator": "util.data.example", "files": {"images/a.png": None, "train.txt": None}},  # synthetic before
])
def test_manifests_of_earlier_versions_are_read(tmp_path, manifest):
    out = tmp_path / "out"
    _fill(out.mkdir() or out)
    if isinstance(manifest["files"], dict):  # the old synthetic.json held checksums
        from util.data.owned import sha256_file
        manifest["files"] = {rel: sha256_file(out / rel) for rel in manifest["files"]}
    (out / "example.json").write_text(json.dumps(manifest))
    check_destination(out, TOOL, overwrite=True)
    (out / "images" / "b.png").write_bytes(b"mine")
    assert [p.name for p, _ in foreign_entries(out, TOOL)] == ["b.png"]


def test_a_failed_write_leaves_the_old_output(tmp_path):
    out = tmp_path / "out"
    write_owned(out, TOOL, False, _fill)

    def failing(work):
        _fill(work)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_owned(out, TOOL, True, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and foreign_entries(out, TOOL) == []


def test_a_nested_file_named_like_the_manifest_is_the_tools(tmp_path):
    """Only the top-level manifest is left out of the list: a tool's own sub/<manifest> (an unlabeled pool with
    its own synthetic.json inside a synthetic set) is listed, so the output stays replaceable."""
    def fill(work):
        _fill(work)
        (work / "pool").mkdir()
        (work / "pool" / "example.json").write_text("{}\n")
        return {}

    out = tmp_path / "out"
    doc = write_owned(out, TOOL, False, fill)
    assert sorted(doc["files"]) == ["images/a.png", "pool/example.json", "train.txt"]
    assert foreign_entries(out, TOOL) == []
    write_owned(out, TOOL, True, fill)


def test_the_refusal_counts_the_foreign_entries(tmp_path):
    out = tmp_path / "out"
    write_owned(out, TOOL, False, _fill)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match=r"notes\.txt: not written by util\.data\.example \(1 such entry in "):
        check_destination(out, TOOL, overwrite=True)
    (out / "more.txt").write_text("mine")
    with pytest.raises(DestinationError, match=r"more\.txt: not written by util\.data\.example \(2 such entries in "):
        check_destination(out, TOOL, overwrite=True)


def test_a_writer_without_overwrite_does_not_offer_it(tmp_path):
    """generate_unlabeled_pool never replaces a folder: its refusal does not say "add --overwrite"."""
    from util.data.synthetic import generate_unlabeled_pool

    pool = generate_unlabeled_pool(tmp_path / "pool", 1, 32, 32)
    with pytest.raises(DestinationError) as exc:
        generate_unlabeled_pool(pool, 1, 32, 32)
    assert "holds an earlier output of util.data.synthetic" in str(exc.value)
    assert "--overwrite" not in str(exc.value) and "choose another output folder" in str(exc.value)
    with pytest.raises(DestinationError, match="holds an earlier output of util.data.synthetic; add --overwrite"):
        write_owned(pool, Owner("util.data.synthetic", "synthetic.json"), False, _fill)  # the writers that offer it


def test_files_added_later_are_recorded_in_the_folders_manifest(tmp_path):
    from util.data.owned import CONVERTER, record_files, sha256_file

    out = tmp_path / "out"
    write_owned(out, CONVERTER, False, _fill)
    (out / "edge_4x").mkdir()
    (out / "edge_4x" / "a.png").write_bytes(b"edges")
    assert [p.name for p, _ in foreign_entries(out, CONVERTER)] == ["edge_4x", "a.png"]
    assert record_files(out, ["edge_4x/a.png"]) == CONVERTER
    doc = json.loads((out / "convert.json").read_text())
    assert doc["tool"] == CONVERTER.tool and doc["files"]["edge_4x/a.png"] == sha256_file(out / "edge_4x" / "a.png")
    assert foreign_entries(out, CONVERTER) == []
    with pytest.raises(ValueError, match="convert.json"):
        record_files(out, ["convert.json"])
    (out / "convert.json").write_text(json.dumps({"tool": CONVERTER.tool, "files": ["images/a.png", "train.txt"]}))
    record_files(out, ["edge_4x/a.png"])  # an earlier version's list stays a list
    assert json.loads((out / "convert.json").read_text())["files"] == ["images/a.png", "train.txt", "edge_4x/a.png"]
    mine = tmp_path / "mine"
    _fill(mine.mkdir() or mine)
    assert record_files(mine, ["train.txt"]) is None and sorted(p.name for p in mine.iterdir()) == ["images", "train.txt"]


def test_work_folders_of_dead_processes_are_removed(tmp_path):
    """Work folders (today's .partial-/.old-, and the converter's earlier .converting-) of processes gone from
    this host are removed; a live process's, another host's and the output itself are kept."""
    import os
    import subprocess
    import sys

    from util.data.owned import remove_stale_work_dirs, work_dir

    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    gone = [work_dir(out, kind, dead.pid) for kind in ("partial", "old", "converting")]
    live = [work_dir(out, kind, os.getppid()) for kind in ("partial", "old", "converting")]
    other_host = tmp_path / f".out.converting-elsewhere.example-{dead.pid}"
    for path in gone + live + [other_host]:
        path.mkdir()
        (path / "a.png").write_bytes(b"pixels")
    remove_stale_work_dirs(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [out, *live, other_host])


def test_an_output_filled_meanwhile_is_kept(tmp_path, monkeypatch):
    """Another process fills the (empty) output between the last check and the rename: its folder is kept,
    this copy discarded, and the line says so."""
    import os

    out = tmp_path / "out"
    rename = os.rename

    def other_process_first(src, dst):
        if os.fspath(dst) == os.fspath(out):
            out.mkdir(exist_ok=True)
            (out / "theirs.txt").write_text("theirs")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", other_process_first)
    with pytest.raises(DestinationError, match=r"out: filled by another process meanwhile; kept it"):
        write_owned(out, TOOL, False, _fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "theirs.txt").read_text() == "theirs"
