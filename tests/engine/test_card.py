"""Model cards (util/engine/card.py, python -m util.card): written atomically, read back, and a damaged,
swapped or missing weights file found by its checksum."""
import json

import pytest

from util import card as card_command
from util.engine.card import (
    CARD_JSON,
    CARD_MD,
    CardError,
    check_against_card,
    cpu_model,
    file_entries,
    find_card,
    load_card,
    sha256_file,
    split_lists,
    verify_card,
    write_card,
)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "best.pth").write_bytes(b"best weights" * 100)
    (tmp_path / "last.pth").write_bytes(b"last weights" * 100)
    write_card(tmp_path, {"role": "student", "network": {"name": "EKNet", "depth": 18},
                          "classes": ["a", "b"], "metrics": {"test": {"images": 3, "miou": 0.5, "macc": 0.6}},
                          "command": "python trainStudent.py", "files": file_entries(tmp_path, ("best.pth", "last.pth", "final.pth"))})
    return tmp_path


def test_sha256_and_split_lists_by_hand(tmp_path):
    import hashlib

    (tmp_path / "train.txt").write_text("a\nb\nc\n")
    (tmp_path / "val.txt").write_text("d\n")
    assert sha256_file(tmp_path / "train.txt") == hashlib.sha256(b"a\nb\nc\n").hexdigest()
    lists = split_lists(tmp_path)
    assert set(lists) == {"train", "val"}  # absent splits are left out
    assert lists["train"] == {"frames": 3, "sha256": hashlib.sha256(b"a\nb\nc\n").hexdigest()}


def test_file_entries_remember_a_file_until_it_is_written_again(tmp_path, monkeypatch):
    import hashlib
    import os

    import util.engine.card as card_module

    read = []
    monkeypatch.setattr(card_module, "sha256_file", lambda p: read.append(p.name) or sha256_file(p))
    (tmp_path / "best.pth").write_bytes(b"one")
    (tmp_path / "last.pth").write_bytes(b"two")
    known = {}
    first = file_entries(tmp_path, ("best.pth", "last.pth", "final.pth"), known)
    assert first["last.pth"] == {"sha256": hashlib.sha256(b"two").hexdigest(), "bytes": 3}
    assert file_entries(tmp_path, ("best.pth", "last.pth"), known) == first and read == ["best.pth", "last.pth"]
    tmp = tmp_path / ".last.tmp"  # rewritten the way the runs write: a new file renamed over the old
    tmp.write_bytes(b"TWO")
    os.replace(tmp, tmp_path / "last.pth")
    again = file_entries(tmp_path, ("best.pth", "last.pth"), known)
    assert again["last.pth"]["sha256"] == hashlib.sha256(b"TWO").hexdigest() and read[2:] == ["last.pth"]
    assert again["best.pth"] == first["best.pth"]
    assert file_entries(tmp_path, ("best.pth",)) == {"best.pth": first["best.pth"]} and read[3:] == ["best.pth"]


def test_a_card_lists_each_present_file_and_reads_back(folder):
    card = load_card(folder / CARD_JSON)
    assert set(card["files"]) == {"best.pth", "last.pth"}  # final.pth is not there yet
    assert card["files"]["best.pth"]["sha256"] == sha256_file(folder / "best.pth")
    assert card["files"]["best.pth"]["bytes"] == 1200
    text = (folder / CARD_MD).read_text()
    assert "# EKNet (student)" in text and card["files"]["last.pth"]["sha256"] in text and "| test | 3 | 50.00 | 60.00 |" in text
    assert verify_card(folder / CARD_JSON) == {"best.pth": "ok", "last.pth": "ok"}
    assert check_against_card(folder / "best.pth") == folder / CARD_JSON
    assert sorted(p.name for p in folder.iterdir()) == sorted(["best.pth", "last.pth", CARD_JSON, CARD_MD])


def test_a_tampered_or_swapped_file_is_named(folder):
    data = bytearray((folder / "best.pth").read_bytes())
    data[500] ^= 1  # one bit
    (folder / "best.pth").write_bytes(bytes(data))
    with pytest.raises(CardError, match=r"--weights .*best.pth: sha256 .* differs .* on its card .*card.json"):
        check_against_card(folder / "best.pth")
    (folder / "last.pth").unlink()
    assert verify_card(folder / CARD_JSON) == {"best.pth": "mismatch", "last.pth": "missing"}


def test_files_no_card_lists_are_not_checked(folder, tmp_path_factory):
    (folder / "other.pth").write_bytes(b"x")
    assert find_card(folder / "other.pth") is None and check_against_card(folder / "other.pth") is None
    alone = tmp_path_factory.mktemp("alone") / "best.pth"
    alone.write_bytes(b"y")
    assert check_against_card(alone) is None


def test_an_unreadable_card_is_one_line(folder):
    (folder / CARD_JSON).write_text("{ not json")
    with pytest.raises(CardError, match="not a readable model card"):
        check_against_card(folder / "best.pth")
    (folder / CARD_JSON).write_text(json.dumps({"format": "other", "files": {}}))
    with pytest.raises(CardError, match="not a CEKD model card"):
        load_card(folder / CARD_JSON)


def test_cpu_model_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n")
    assert cpu_model(tmp_path / "cpuinfo") == "AMD EPYC 9R14"
    assert cpu_model(tmp_path / "missing")  # falls back to the platform's word


def test_the_card_command(folder, tmp_path_factory, capsys):
    assert card_command.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "# EKNet (student)" in out and "ok       best.pth" in out
    assert card_command.main([str(folder / CARD_MD)]) == 0
    assert card_command.main([str(folder / "best.pth")]) == 0
    capsys.readouterr()
    (folder / "last.pth").write_bytes(b"swapped")
    assert card_command.main([str(folder / CARD_JSON)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH last.pth" in captured.out and "last.pth: does not match" in captured.err
    empty = tmp_path_factory.mktemp("empty")
    assert card_command.main([str(empty)]) == 2
    assert "no card.json in this folder" in capsys.readouterr().err
