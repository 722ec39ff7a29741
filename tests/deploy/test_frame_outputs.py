"""run_demo_student.py --input writes what it wrote before the frame pipeline was unified (issue 25), on every
kind of input: summary.json without timings, every PNG, the overlay video's frames and the output bag's
messages, compared with tests/fixtures/frame_outputs.json (frame_outputs.py records and explains it)."""
import json

import pytest
from frame_outputs import FIXTURE, RUNS, make_student, record_all


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame-outputs")
    return record_all(root, make_student(root / "s.pth"))


@pytest.fixture(scope="module")
def expected():
    return json.loads(FIXTURE.read_text())


def test_every_run_is_recorded(recorded, expected):
    assert sorted(recorded) == sorted(expected) == sorted(RUNS)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_outputs_as_recorded(recorded, expected, run):
    got, want = recorded[run], expected[run]
    assert got["files"] == want["files"]
    assert got["summary"] == want["summary"]
    assert got["png"] == want["png"]
    assert got.get("video") == want.get("video")
    assert got.get("bag") == want.get("bag")
