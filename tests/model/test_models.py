"""CENet / EKNet: shapes, released-checkpoint compatibility, TEM, gradients, input checks."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import MANIFEST
from model import CENet, EKNet
from model.botnet import MHSA
from model.release import from_release, our_key_to_release, release_key_to_ours, to_release
from model.tem import TEM, tem_linear_width

H, W = 64, 96


def _release_state_dict(network: str, random: bool = True) -> dict:
    """Tensors with exactly the keys and shapes of the released checkpoint: random (for a forward pass), or
    (random=False, fast at full size) each tensor a ramp starting at its own offset, so that any two differ."""
    shapes = json.loads(MANIFEST.read_text())[network]["state_dict"]
    sd = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif random:
            sd[key] = torch.rand(shape) + 0.5 if key.endswith("running_var") else torch.randn(shape) * 0.02
        else:
            ramp = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape) * 1e-7
            sd[key] = ramp + (0.5 + 1e-4 * i)
    return sd


# ResNet-101/152 builds take 15-25 s each on a CPU; they only add depth to the same code path as 50,
# so they run with `pytest -m slow`. The full-size checkpoint test below stays in the default run.
@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow),
                                   pytest.param(152, marks=pytest.mark.slow)])
def test_output_shapes_every_depth(depth):
    top = 512 if depth in (18, 34) else 2048
    teacher, student = CENet(depth=depth, height=H, width=W), EKNet(depth=depth, height=H, width=W)
    out = teacher(torch.rand(2, 4, H, W))
    assert out.logits.shape == (2, 9, H, W)
    assert out.features.shape == (2, top, H // 32, W // 32)
    assert out.hint.shape == (2, top // 8, H // 4, W // 4)
    assert out.edge.shape == out.edge_logit.shape == (2, 1, H // 4, W // 4)
    assert torch.allclose(out.edge, torch.sigmoid(out.edge_logit))
    out = student(torch.rand(2, 1, H, W))
    assert out.logits.shape == (2, 9, H, W)
    assert out.features.shape == (2, top, H // 32, W // 32)
    assert out.hint.shape == (2, top // 8, H // 4, W // 4)
    assert out.edge is None and out.edge_logit is None


def test_class_count_is_a_constructor_argument():
    out = EKNet(n_class=5, depth=18, height=H, width=W)(torch.rand(2, 1, H, W))
    assert out.logits.shape == (2, 5, H, W)


@pytest.mark.parametrize("network,cls", [("teacher", CENet), ("student", EKNet)])
def test_release_checkpoint_loads_strictly_at_full_size(network, cls):
    manifest = json.loads(MANIFEST.read_text())[network]
    model = cls()  # defaults: 9 classes, ResNet-50, 480x640
    assert sum(p.numel() for p in model.parameters()) == manifest["parameters"]
    assert len(model.state_dict()) == len(manifest["state_dict"])
    release = _release_state_dict(network, random=False)
    model.load_state_dict(from_release(release), strict=True)
    back = to_release(model.state_dict())
    assert set(back) == set(release) and all(torch.equal(back[k], v) for k, v in release.items())


# The full-size forward pass (5-10 s a network on a CPU): the strict load above already checks every shape.
@pytest.mark.slow
@pytest.mark.parametrize("network,cls", [("teacher", CENet), ("student", EKNet)])
def test_release_size_forward_pass(network, cls):
    model = cls()
    model.load_state_dict(from_release(_release_state_dict(network)), strict=True)
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(1, cls.in_channels, 480, 640))
    assert out.logits.shape == (1, 9, 480, 640)
    assert out.features.shape == (1, 2048, 15, 20)
    assert out.hint.shape == (1, 256, 120, 160)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("network", ["teacher", "student"])
def test_key_renaming_is_a_bijection_on_release_keys(network):
    keys = list(json.loads(MANIFEST.read_text())[network]["state_dict"])
    ours = [release_key_to_ours(k) for k in keys]
    assert len(set(ours)) == len(keys)
    assert [our_key_to_release(k) for k in ours] == keys
    assert "encoder_thermal.layer4.blocks.0.mhsa.pos_emb.height" in ours
    assert "skip_transform.weight" in ours


def test_tem_linear_width_is_derived_from_size():
    assert tem_linear_width(480, 640) == 80
    assert EKNet(depth=18, height=480, width=640).tem.fc1.in_features == 80
    assert tem_linear_width(96, 128) == 4
    with pytest.raises(ValueError, match="at least 64x64"):
        tem_linear_width(32, 32)


def test_tem_maps_equal_thermal_to_the_predicted_exponent_plus_two():
    tem = TEM(H, W).eval()
    t = torch.rand(2, 1, H, W)
    maps = tem(t)
    exponent = tem.exponent(t)
    x = F.max_pool2d(t, 4)
    x = F.max_pool2d(F.relu(tem.bn1(tem.conv1(x))), 2)
    x = F.max_pool2d(F.relu(tem.bn2(tem.conv2(x))), 2, padding=(1, 0))
    raw = tem.fc2(F.relu(tem.bn3(tem.fc1(x.flatten(1)))))
    assert torch.allclose(exponent.flatten(), raw.flatten() + 2.0)
    for scale, m in zip((2, 4, 8, 16, 32), maps):
        assert m.shape == (2, 1, H // scale, W // scale)
        for b in range(2):
            expected = t[b, 0, ::scale, ::scale] ** exponent[b].item()
            assert torch.allclose(m[b, 0], expected, atol=1e-6)


def test_tem_trains_with_a_batch_of_one():
    tem = TEM(H, W).train()
    before = tem.bn3.running_mean.clone()
    maps = tem(torch.rand(1, 1, H, W))
    maps[0].sum().backward()
    assert torch.equal(tem.bn3.running_mean, before)
    assert tem.fc1.weight.grad is not None


def test_mhsa_matches_the_written_out_formula():
    attn = MHSA(dim=8, fmap_size=(3, 4), heads=2, dim_head=5)
    x = torch.randn(2, 8, 3, 4)
    q, k, v = attn.to_qkv(x).chunk(3, dim=1)
    split = lambda t: t.reshape(2, 2, 5, 12).transpose(-1, -2)  # b, heads, positions, d
    q, k, v = split(q), split(k), split(v)
    emb = (attn.pos_emb.height[:, None] + attn.pos_emb.width[None]).reshape(12, 5)
    logits = q @ k.transpose(-1, -2) * 5 ** -0.5 + q @ emb.T * 5 ** -0.5
    expected = (logits.softmax(-1) @ v).transpose(-1, -2).reshape(2, 10, 3, 4)
    assert torch.allclose(attn(x), expected, atol=1e-5)


@pytest.mark.parametrize("cls", [CENet, EKNet])
def test_gradients_reach_every_parameter(cls):
    model = cls(depth=18, height=H, width=W).train()
    for m in model.modules():  # undo the zero-init of BoT blocks so no gradient is blocked
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    out = model(torch.rand(2, cls.in_channels, H, W))
    loss = out.logits.square().mean() + out.hint.mean() + out.features.mean()
    if out.edge is not None:
        loss = loss + out.edge.mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # A bias right before a BatchNorm in training mode gets an exactly-zero gradient (BN removes it).
    before_bn = {"tem.conv1.bias", "tem.conv2.bias", "ed.conv_in.bias"}
    dead = [n for n, p in model.named_parameters() if n not in before_bn and not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize("cls,channels", [(CENet, 4), (EKNet, 1)])
def test_input_checks_name_expected_and_received_shape(cls, channels):
    model = cls(depth=18, height=H, width=W)
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name} expects input of shape \(B, {channels}, {H}, {W}\), got \(2, 3, {H}, {W}\)"):
        model(torch.rand(2, 3, H, W))
    with pytest.raises(ValueError, match=rf"got \(2, {channels}, 96, 96\)"):
        model(torch.rand(2, channels, 96, 96))
    with pytest.raises(ValueError, match="multiples of 32"):
        cls(depth=18, height=100, width=W)
    with pytest.raises(ValueError, match="resnet depth must be one of"):
        cls(depth=20, height=H, width=W)


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.raises(RuntimeError, match=r"could not load ImageNet weights for resnet18 .*--no-pretrained"):
        EKNet(depth=18, height=H, width=W, pretrained=True)


@pytest.mark.parametrize("cls", [CENet, EKNet])
def test_channels_last_gives_the_same_logits(cls):
    model = cls(depth=18, height=H, width=W).eval()
    x = torch.rand(2, cls.in_channels, H, W)
    with torch.inference_mode():
        ref = model(x).logits
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last)).logits
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
