"""util/files.py: the one atomic writer."""
import errno
import os

import pytest

from util.files import DiskFullError, atomic_path, atomic_write, is_partial_write, remove_partial_writes


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")

    def fail(f):
        f.write("half of the new")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_full_disk_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "w.bin"

    def full(f):
        f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as err:
        atomic_write(path, full, binary=True)
    assert str(err.value) == (f"{path}: the disk is full (no space left on device); the file was not written "
                              f"and no part of it was left")
    assert list(tmp_path.iterdir()) == []


def test_the_new_file_replaces_the_old_with_ordinary_permissions(tmp_path):
    path = tmp_path / "sub" / "w.bin"
    assert atomic_write(path, lambda f: f.write(b"\x00\x01"), binary=True) == path
    atomic_write(path, lambda f: f.write(b"new"), binary=True)
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["w.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_temporary_files_of_a_killed_write_are_recognised_and_removed(tmp_path):
    """What atomic_path names its temporary file is what remove_partial_writes removes, and nothing else."""
    (tmp_path / "last.pth").write_text("a user's file")
    (tmp_path / "notes.tmp").write_text("also theirs")
    with atomic_path(tmp_path / "best.pth") as tmp:
        tmp.write_text("half")
        assert is_partial_write(tmp.name)
        left = tmp_path / tmp.name.replace("best", "last")  # as a write killed at this moment would leave it
        left.write_text("half")
    assert sorted(p.name for p in remove_partial_writes(tmp_path)) == [left.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth", "notes.tmp"]
    assert not is_partial_write("last.pth") and not is_partial_write(".last.pth")


def test_the_temporary_file_is_forced_to_disk_before_the_rename(tmp_path, monkeypatch):
    """The suite turns fsync off (conftest): this test alone checks that the writer calls it, on the full new
    content, before the new file takes the name."""
    path = tmp_path / "w.bin"
    seen = []

    def fsync(fd):
        seen.append((os.fstat(fd).st_size, path.exists()))
    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(path, lambda f: f.write(b"abc"), binary=True)
    assert seen == [(3, False)]
