"""Test-time augmentation (util/engine/tta.py): one unflipped view at scale 1 is the plain evaluation, count
for count; a mirror-symmetric frame gets a mirror-symmetric prediction; the windows of a larger or smaller
scale cover the frame as they should; two processes sum to one."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from model import CENet, EKNet
from util.data.synthetic import generate_dataset
from util.engine.build import seed_everything
from util.engine.loaders import split_loader
from util.engine.loop import evaluate
from util.engine.tta import TTA, scaled_logits, window_starts

SIZE, N_CLASS = 64, 9


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = generate_dataset(tmp_path_factory.mktemp("tta") / "syn", n_frames=24, height=SIZE, width=SIZE, seed=3)
    names = (data / "test.txt").read_text().split()
    (data / "test.txt").write_text("\n".join(names[:5]) + "\n")
    return data


def _student() -> EKNet:
    seed_everything(0)
    return EKNet(N_CLASS, 18, SIZE, SIZE, False).eval()


def _score(model, data, tta=None, rank=0, world_size=1):
    loader = split_loader(data, "test", SIZE, SIZE, N_CLASS, rank=rank, world_size=world_size)
    return evaluate(model, loader, torch.device("cpu"), N_CLASS, show=False, tta=tta)


def test_window_starts_by_hand():
    assert window_starts(64, 64) == [0]
    assert window_starts(80, 64) == [0, 16]  # stride ceil(64 * 2/3) = 43; one more window ends at the edge
    assert window_starts(160, 64) == [0, 43, 86, 96]
    assert window_starts(48, 64) == [0]


@pytest.mark.parametrize("network", ["EKNet", "CENet"])
def test_one_unflipped_view_at_scale_one_is_the_plain_evaluation(data, network):
    seed_everything(0)
    model = (EKNet if network == "EKNet" else CENet)(N_CLASS, 18, SIZE, SIZE, False).eval()
    plain, single = _score(model, data), _score(model, data, TTA((1.0,), flip=False))
    assert int(plain.confusion.mat.sum()) == 5 * SIZE * SIZE
    assert torch.equal(single.confusion.mat, plain.confusion.mat)  # bitwise: every count
    assert single.loss == pytest.approx(plain.loss, rel=1e-5)
    flipped = _score(model, data, TTA((1.0,), flip=True))  # the comparison can fail: another view differs
    assert not torch.equal(flipped.confusion.mat, plain.confusion.mat)


def test_a_symmetric_frame_gets_a_symmetric_prediction():
    model = _student()
    x = torch.rand(2, 1, SIZE, SIZE)
    x = (x + x.flip(-1)) / 2  # mirror-symmetric, exactly
    size = (SIZE, SIZE)

    def forward(t):
        return model(t).logits

    with torch.no_grad():
        plain = forward(x).argmax(1)
        assert not torch.equal(plain, plain.flip(-1))  # the network alone is not symmetric
        mean = TTA((1.0,), flip=True).log_probs(forward, x, size)
        assert torch.equal(mean, mean.flip(-1))
        pred = mean.argmax(1)
        assert torch.equal(pred, pred.flip(-1))
        several = TTA().log_probs(forward, x, size).exp()  # resized views: symmetric up to rounding
        assert torch.allclose(several, several.flip(-1), atol=1e-5)
        assert torch.allclose(several.sum(1), torch.ones(2, *size), atol=1e-5)


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.0, 1.25, 2.0])
def test_windows_and_padding_cover_the_scaled_frame(scale):
    """With a network that copies its input (per pixel), a scale's stitched logits are the resized frame:
    every pixel read, overlaps averaged, padding cut off."""
    x = torch.rand(1, 3, 64, 96)
    seen = []

    def copy(t):
        seen.append(tuple(t.shape[-2:]))
        return t.clone()

    out = scaled_logits(copy, x, scale)
    h, w = round(64 * scale), round(96 * scale)
    expected = x if scale == 1.0 else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    assert out.shape == (1, 3, h, w)
    assert torch.allclose(out, expected, atol=1e-6)
    assert set(seen) == {(64, 96)}  # the network always reads its own input size
    assert len(seen) == len(window_starts(max(h, 64), 64)) * len(window_starts(max(w, 96), 96))


def test_bad_scales_are_refused():
    for scales in ((), (0.0,), (1.0, -1.0), (float("nan"),)):
        with pytest.raises(ValueError, match="TTA scales must be positive"):
            TTA(scales)


def _worker(rank: int, world_size: int, data, init_file, out_dir) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        ev = _score(_student(), data, TTA(), rank, world_size)
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"matrix": ev.confusion.mat.tolist(), "loss": ev.loss}))
    finally:
        dist.destroy_process_group()


def test_tta_under_two_processes_sums_to_one_process(data, tmp_path):
    mp.start_processes(_worker, args=(2, data, tmp_path / "rendezvous", tmp_path), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.set_num_threads(1)
    whole = _score(_student(), data, TTA())
    assert int(whole.confusion.mat.sum()) == 5 * SIZE * SIZE
    for r in ranks:
        assert torch.equal(torch.tensor(r["matrix"]), whole.confusion.mat)
        assert r["loss"] == pytest.approx(whole.loss, rel=1e-6)
