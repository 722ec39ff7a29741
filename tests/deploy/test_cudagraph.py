"""CUDA-graph inference (util/deploy/cudagraph.py): the per-batch-size capture, its fallbacks and its static
buffers, checked on the CPU with a stand-in capture that keeps the same contract as torch.cuda.graph (the
output lives in one tensor the replay overwrites; the input is read from one buffer)."""
import pytest
import torch

from util.deploy.cudagraph import GraphRunner


def stand_in_capture(forward, static_input):
    static_output = forward(static_input)

    def replay():
        static_output.copy_(forward(static_input))
        return static_output
    return replay


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU()).eval()


@torch.inference_mode()
def test_one_graph_per_batch_size_results_as_eager():
    model = net()
    runner = GraphRunner(model, stand_in_capture)
    xs = [torch.rand(b, 1, 8, 8) for b in (1, 3, 1, 2)]  # the last, smaller batch of a stream, then another
    outs = [runner(x) for x in xs]
    for x, out in zip(xs, outs):  # each result kept intact by the later replays (a clone of the static output)
        assert torch.equal(out, model(x))
    assert runner.describe() == {"captured_batches": [1, 2, 3], "eager_batches": 0, "max_graphs": 4, "fallback": None}
    assert outs[0].data_ptr() != outs[2].data_ptr()


@torch.inference_mode()
def test_beyond_max_graphs_runs_eagerly():
    model = net()
    runner = GraphRunner(model, stand_in_capture, max_graphs=2)
    for b in (1, 2, 3, 3, 1):
        x = torch.rand(b, 1, 8, 8)
        assert torch.equal(runner(x), model(x))
    assert runner.describe()["captured_batches"] == [1, 2] and runner.eager_batches == 2


@torch.inference_mode()
def test_a_failed_capture_falls_back_and_says_why():
    model = net()

    def failing(forward, static_input):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
    runner = GraphRunner(model, failing)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(runner(x), model(x)) and torch.equal(runner(x), model(x))
    d = runner.describe()
    assert d["captured_batches"] == [] and d["eager_batches"] == 2
    assert d["fallback"] == "RuntimeError: operation not permitted when stream is capturing"


@torch.inference_mode()
def test_memory_format_is_part_of_the_key():
    model = net()
    runner = GraphRunner(model, stand_in_capture)
    x = torch.rand(1, 3, 8, 8)
    conv = torch.nn.Conv2d(3, 3, 1).eval()
    runner.forward = conv
    runner(x), runner(x.contiguous(memory_format=torch.channels_last))
    assert len(runner.graphs) == 2


@pytest.mark.cuda
@torch.inference_mode()
def test_cuda_graphs_match_eager_on_the_gpu():
    from model import EKNet
    from util.data.info import MFNET
    from util.deploy.backends import TorchSegmenter

    torch.manual_seed(0)
    model = EKNet(9, 18, 64, 96, pretrained=False).eval()
    x = torch.rand(3, 1, 64, 96).numpy()
    ref = TorchSegmenter(model, MFNET, "cuda", channels_last=False)(x)
    for precision, tol in (("fp32", 1e-3), ("bf16", None), ("fp16", None)):
        seg = TorchSegmenter(model, MFNET, "cuda", True, precision, graphs=True)
        for batch in (1, 3, 1, 2):  # captured per batch size, replayed
            out = seg(x[:batch])
            assert out.shape == (batch, 9, 64, 96)
            agree = (out.argmax(1) == ref[:batch].argmax(1)).mean()
            assert agree >= 0.98, (precision, batch, agree)
            if tol:
                assert abs(out - ref[:batch]).max() <= tol * max(1.0, abs(ref).max())
        assert seg.graphs.describe()["captured_batches"] == [1, 2, 3] and seg.graphs.fallback is None
