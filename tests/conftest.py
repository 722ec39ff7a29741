"""Fixtures shared by every test folder.

The tests are grouped like the code: model/, data/, engine/, deploy/, and scripts/ (the trainers, demos,
pipeline and compatibility runs); fixtures/ holds JSON reference files. The folders have no __init__.py,
so every test file's name must be unique across folders (pytest imports each under its basename).
"""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs the suite in one pytest-xdist worker per core. Each worker computes on one thread, and so do
# the processes its tests start: two processes that each use every core wait on each other's threads (10-50x
# slower). The tests marked serial (bitwise results recorded for a thread count) run afterwards, alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Every key and tensor shape, and the parameter count, of the released CENet and EKNet checkpoints
# (ResNet-50, 9 classes, 480x640): the compatibility tests check our models against it without the weights.
FIXTURES = ROOT / "tests" / "fixtures"
MANIFEST = FIXTURES / "official_state_dict.json"


# The folders in the order make test's workers take them: the longest files first (the trainers' end-to-end
# runs in scripts/), so that no worker starts a minute-long file while the other has nothing left.
FOLDER_ORDER = ("scripts", "benchmarks", "deploy", "engine", "data", "model")


def _folder_rank(item) -> int:
    parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
    return FOLDER_ORDER.index(parts[0]) if len(parts) > 1 and parts[0] in FOLDER_ORDER else len(FOLDER_ORDER)


def pytest_collection_modifyitems(config, items):
    """Longest folders first (a stable sort: the order within a folder stays). Tests marked cuda run where a
    CUDA device is (`pytest -m cuda` on a GPU machine); elsewhere they are skipped with the reason."""
    items.sort(key=_folder_rank)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run pytest -m cuda on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Each test starts from seed 0 and leaves torch's thread count as it found it (the pinned bitwise
    test is recorded for a thread count, and a test that sets 1 thread must not change what follows)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    """Caches (the dataset check's) go to a temporary folder, never to the home folder; session-wide so
    that module-scoped fixtures and subprocesses are covered too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CEKD_CACHE_DIR", str(tmp_path_factory.mktemp("cekd-cache")))
        yield


@pytest.fixture(autouse=True, scope="session")
def _no_fsync():
    """The suite writes gigabytes of checkpoints that it removes again: forcing each one to the disk (fsync, a
    third of a checkpoint's write time) only costs time. Atomic writes keep their temporary file and rename;
    what fsync adds, surviving a power cut, no test can observe. Subprocesses still fsync."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        yield


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """An untrained EKNet-18 for 64x64 frames, saved as our checkpoint (the deploy tests' student)."""
    from model import EKNet
    from util.engine.checkpoint import save_atomic

    torch.manual_seed(0)
    model = EKNet(depth=18, height=64, width=64).eval()
    path = tmp_path_factory.mktemp("student") / "s.pth"
    return save_atomic({"format": "cekd-pytorch", "network": "EKNet", "model": model.state_dict()}, path)
