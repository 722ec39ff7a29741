"""Sharded evaluation is exact: two processes, each scoring its shard of a split, sum to the confusion
matrix and mean loss of one process scoring the whole split.

The processes use gloo on the CPU, started by torch.multiprocessing with a file rendezvous in the test's
folder (no network port). Both score one frame per batch, so every frame's forward pass is the same
computation in either setting and the matrices must be equal, count for count.
"""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model import EKNet
from util.data.synthetic import generate_dataset
from util.engine.build import seed_everything
from util.engine.loaders import split_loader
from util.engine.loop import evaluate

SIZE, N_CLASS = 64, 9


def _model() -> EKNet:
    seed_everything(0)
    return EKNet(N_CLASS, 18, SIZE, SIZE, False).eval()


def _score(data, rank: int = 0, world_size: int = 1) -> dict:
    loader = split_loader(data, "test", SIZE, SIZE, N_CLASS, rank=rank, world_size=world_size)
    ev = evaluate(_model(), loader, torch.device("cpu"), N_CLASS, show=False)
    return {"matrix": ev.confusion.mat.tolist(), "loss": ev.loss, "frames": len(loader.sampler)}


def _worker(rank: int, world_size: int, data, init_file, out_dir) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        (out_dir / f"rank{rank}.json").write_text(json.dumps(_score(data, rank, world_size)))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = generate_dataset(tmp_path_factory.mktemp("shard") / "syn", n_frames=24, height=SIZE, width=SIZE, seed=1)
    names = (data / "test.txt").read_text().split()
    (data / "test.txt").write_text("\n".join(names[:5]) + "\n")  # uneven shards: 3 and 2 frames
    return data


def test_two_processes_sum_to_the_one_process_confusion_matrix(data, tmp_path):
    n_test = len((data / "test.txt").read_text().split())
    assert n_test == 5  # uneven shards: the sampler must neither pad nor drop a frame

    mp.start_processes(_worker, args=(2, data, tmp_path / "rendezvous", tmp_path), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.set_num_threads(1)
    whole = _score(data)

    assert [r["frames"] for r in ranks] == [(n_test + 1) // 2, n_test // 2]
    expected = torch.tensor(whole["matrix"])
    assert int(expected.sum()) == n_test * SIZE * SIZE
    for r in ranks:  # every process ends with the sum over both shards
        assert torch.equal(torch.tensor(r["matrix"]), expected)
        assert r["loss"] == pytest.approx(whole["loss"], rel=1e-6)
