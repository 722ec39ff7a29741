"""Each loss against a loop-based computation of its formula (paper Sec. III-C)."""
import math
from types import SimpleNamespace

import pytest
import torch

from model.losses import (
    check_finite,
    edge_bce,
    hint_loss,
    kd_ce_loss,
    pseudo_label_ce,
    similarity_loss,
    student_loss,
    supervised_student_loss,
    teacher_loss,
)

B, C, N, H, W = 2, 3, 4, 4, 5


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def naive_edge_bce(p, y):
    b_, _, h, w = p.shape
    total = 0.0
    for b in range(b_):
        beta = sum(float(y[b, 0, i, j]) for i in range(h) for j in range(w)) / (h * w)
        for i in range(h):
            for j in range(w):
                x, t = float(p[b, 0, i, j]), float(y[b, 0, i, j])
                total += -(1 - beta) * t * math.log(_sigmoid(x)) - beta * (1 - t) * math.log(1 - _sigmoid(x))
    return total / (b_ * h * w)


def naive_ce(z, label):
    b_, n, h, w = z.shape
    total = 0.0
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                probs = _softmax([float(z[b, c, i, j]) for c in range(n)])
                total -= math.log(probs[int(label[b, i, j])])
    return total / (b_ * h * w)


def naive_sim(fs, ft):
    b_, c_, h, w = fs.shape
    pos = [(i, j) for i in range(h) for j in range(w)]

    def cos(f, b, a, c):
        na = math.sqrt(sum(float(f[b, k, a[0], a[1]]) ** 2 for k in range(c_))) + 1e-8
        nc = math.sqrt(sum(float(f[b, k, c[0], c[1]]) ** 2 for k in range(c_))) + 1e-8
        return sum(float(f[b, k, a[0], a[1]]) * float(f[b, k, c[0], c[1]]) for k in range(c_)) / (na * nc)

    total = sum((cos(ft, b, a, c) - cos(fs, b, a, c)) ** 2 for b in range(b_) for a in pos for c in pos)
    return total / len(pos) ** 2 / b_


def naive_kdce(zs, zt, tau):
    b_, n, h, w = zs.shape
    total = 0.0
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                pt = _softmax([float(zt[b, c, i, j]) / tau for c in range(n)])
                ps = _softmax([float(zs[b, c, i, j]) / tau for c in range(n)])
                total -= sum(pt[c] * math.log(ps[c]) for c in range(n))
    return total / (b_ * h * w)


def naive_pseudo_ce(zs, zt):
    b_, n, h, w = zs.shape
    label = torch.empty(b_, h, w, dtype=torch.long)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                v = [float(zt[b, c, i, j]) for c in range(n)]
                label[b, i, j] = v.index(max(v))
    return naive_ce(zs, label)


def naive_mse(a, b):
    flat_a, flat_b = a.flatten().tolist(), b.flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(flat_a, flat_b)) / len(flat_a)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def _edges(g):
    # different edge densities per image, so a batch-wide beta would give another value
    y = torch.zeros(B, H, W, dtype=torch.long)
    y[0, 1] = 1
    y[1] = (torch.rand(H, W, generator=g) < 0.6).long()
    return y


def test_edge_bce_both_modes(g):
    logit = torch.randn(B, 1, H, W, generator=g) * 2
    y = _edges(g)
    prob = torch.sigmoid(logit)
    yf = y.unsqueeze(1).float()
    assert edge_bce(logit, y).item() == pytest.approx(naive_edge_bce(logit, yf), rel=1e-5)
    assert edge_bce(prob, y).item() == pytest.approx(naive_edge_bce(prob, yf), rel=1e-5)
    # (B,1,H,W) float target is the same as (B,H,W) int target
    assert edge_bce(logit, yf).item() == pytest.approx(edge_bce(logit, y).item(), rel=1e-6)
    # beta is per image: a batch-wide beta gives a different value
    beta_all = yf.mean()
    batch_beta = (-(1 - beta_all) * yf * torch.nn.functional.logsigmoid(logit)
                  - beta_all * (1 - yf) * torch.nn.functional.logsigmoid(-logit)).mean()
    assert abs(edge_bce(logit, y).item() - batch_beta.item()) > 1e-4

    label = torch.randint(0, N, (B, H, W), generator=g)
    z = torch.randn(B, N, H, W, generator=g)
    rel = teacher_loss(z, label, prob, logit, y, edge_mode="release")
    lo = teacher_loss(z, label, prob, logit, y, edge_mode="logit")
    assert set(rel) == {"ce", "edge", "total"}
    assert rel["ce"].item() == pytest.approx(naive_ce(z, label), rel=1e-5)
    assert rel["edge"].item() == pytest.approx(naive_edge_bce(prob, yf), rel=1e-5)
    assert lo["edge"].item() == pytest.approx(naive_edge_bce(logit, yf), rel=1e-5)
    assert rel["total"].item() == pytest.approx(rel["ce"].item() + rel["edge"].item(), rel=1e-6)


def test_teacher_loss_without_edges_and_bad_mode(g):
    label = torch.randint(0, N, (B, H, W), generator=g, dtype=torch.long).to(torch.uint8)
    z = torch.randn(B, N, H, W, generator=g)
    out = teacher_loss(z, label, None, None, None)
    assert set(out) == {"ce", "total"} and out["total"] is out["ce"]
    with pytest.raises(ValueError):
        teacher_loss(z, label, None, None, None, edge_mode="sigmoid")
    with pytest.raises(ValueError):
        teacher_loss(z, label, torch.rand(B, 1, H, W), None, _edges(g), edge_mode="logit")


def test_student_terms_match_loops(g):
    fs, ft = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
    zs, zt = torch.randn(B, N, H, W, generator=g) * 3, torch.randn(B, N, H, W, generator=g) * 3
    hs, ht = torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g)
    assert similarity_loss(fs, ft).item() == pytest.approx(naive_sim(fs, ft), rel=1e-4)
    assert kd_ce_loss(zs, zt, tau=6.0).item() == pytest.approx(naive_kdce(zs, zt, 6.0), rel=1e-5)
    assert kd_ce_loss(zs, zt, tau=1.0).item() == pytest.approx(naive_kdce(zs, zt, 1.0), rel=1e-5)
    assert hint_loss(hs, ht).item() == pytest.approx(naive_mse(hs, ht), rel=1e-5)
    assert pseudo_label_ce(zs, zt).item() == pytest.approx(naive_pseudo_ce(zs, zt), rel=1e-5)
    assert similarity_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-10)


def _outs(g, requires_grad):
    def t(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)
    return SimpleNamespace(features=t(B, C, 2, 3), logits=t(B, N, H, W), hint=t(B, C, 2, 2))


def test_student_loss_total_and_gradients(g):
    s, t = _outs(g, True), _outs(g, True)
    w = {"sim": 0.5, "kdce": 2.0, "hint": 3.0, "seg": 0.25}
    out = student_loss(s, t, weights=w, tau=6.0)
    assert set(out) == {"sim", "kdce", "hint", "seg", "total"}
    expect = sum(w[k] * out[k].item() for k in ("sim", "kdce", "hint", "seg"))
    assert out["total"].item() == pytest.approx(expect, rel=1e-6)
    assert out["sim"].item() == pytest.approx(naive_sim(s.features.detach(), t.features.detach()), rel=1e-4)
    assert out["kdce"].item() == pytest.approx(naive_kdce(s.logits.detach(), t.logits.detach(), 6.0), rel=1e-5)
    out["total"].backward()
    for name in ("features", "logits", "hint"):
        assert getattr(t, name).grad is None, f"teacher {name} got a gradient"
        grad = getattr(s, name).grad
        assert grad is not None and grad.abs().sum() > 0, f"student {name} got no gradient"


def test_student_loss_terms_are_named(g):
    s, t = _outs(g, False), _outs(g, False)
    only_hint = student_loss(s, t, weights={"sim": 0, "kdce": 0, "seg": 0})  # a missing term weighs 1
    assert only_hint["total"].item() == pytest.approx(only_hint["hint"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown student loss term"):
        student_loss(s, t, weights={"edge": 1.0})


def test_supervised_student_loss(g):
    s = _outs(g, False)
    label = torch.randint(0, N, (B, H, W), generator=g)
    out = supervised_student_loss(s, label)
    assert set(out) == {"ce", "total"}
    assert out["ce"].item() == pytest.approx(naive_ce(s.logits, label), rel=1e-5)


def test_losses_are_float32_under_autocast(g):
    s, t = _outs(g, False), _outs(g, False)
    ref = student_loss(s, t)
    half = lambda o: SimpleNamespace(**{k: v.bfloat16() for k, v in vars(o).items()})  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = student_loss(half(s), half(t))
        edge = edge_bce(torch.randn(B, 1, H, W, generator=g).bfloat16(), _edges(g))
    for k, v in out.items():
        assert v.dtype == torch.float32, k
        assert v.item() == pytest.approx(ref[k].item(), rel=0.05, abs=1e-3), k
    assert edge.dtype == torch.float32


def test_check_finite():
    check_finite({"ce": torch.tensor(1.0), "edge": 0.5, "total": torch.tensor(1.5)}, "epoch 0 step 0")
    with pytest.raises(FloatingPointError) as info:
        check_finite({"sim": torch.tensor(0.1), "kdce": torch.tensor(float("nan")),
                      "total": torch.tensor(float("inf"))}, "epoch 3 step 120")
    msg = str(info.value)
    assert "epoch 3 step 120" in msg and "kdce" in msg and "total=inf" in msg and "sim" not in msg
    assert "\n" not in msg
    with pytest.raises(FloatingPointError, match="edge"):
        check_finite({"edge": float("-inf")}, "x")


# ---------------------------------------------------------------- issue 16, class 4: a batch of the ignored class only
def _all_ignored(g):
    logits = torch.randn(1, N, H, W, generator=g).requires_grad_(True)
    return logits, torch.full((1, H, W), 2, dtype=torch.long)  # every pixel is class 2, the ignored one


def _zero_loss_and_gradient(loss, *inputs):
    loss.backward()
    assert loss.item() == 0.0
    for x in inputs:
        assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


def test_label_losses_of_an_all_ignored_batch_are_zero_with_zero_gradient(g):
    logits, label = _all_ignored(g)
    edge_p = torch.rand(1, 1, H, W, generator=g).requires_grad_(True)
    out = teacher_loss(logits, label, edge_p, None, torch.ones(1, H, W), "release", ignore_index=2,
                       edge_valid=torch.zeros(1, 1, H, W))
    assert out["ce"].item() == 0.0 and out["edge"].item() == 0.0
    _zero_loss_and_gradient(out["total"], logits, edge_p)
    logits, label = _all_ignored(g)
    _zero_loss_and_gradient(supervised_student_loss(SimpleNamespace(logits=logits), label, 2)["total"], logits)
    s, t = _outs(g, True), _outs(g, False)
    ce = student_loss(s, t, {"sim": 0, "kdce": 0, "hint": 0, "seg": 0, "gt": 1.0}, label=label[:, :, :].expand(B, H, W),
                      ignore_index=2)
    assert ce["gt"].item() == 0.0 and math.isfinite(ce["total"].item())


def test_a_batch_with_valid_pixels_keeps_the_plain_cross_entropy_bitwise(g):
    logits = torch.randn(B, N, H, W, generator=g)
    label = torch.randint(0, N, (B, H, W), generator=g)
    label[0] = 2  # the first image is all ignored, the second is not
    plain = torch.nn.functional.cross_entropy(logits, label, ignore_index=2)
    assert torch.equal(supervised_student_loss(SimpleNamespace(logits=logits), label, 2)["ce"], plain)
    assert torch.equal(teacher_loss(logits, label, None, None, None, ignore_index=2)["ce"], plain)
