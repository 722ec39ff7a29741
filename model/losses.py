"""Training losses of CEKD (paper section III-C; what the networks learn from).

Teacher CENet: L = CE(logits, label) + L_edge (auto-weighted BCE on the edge map).
Student EKNet: L = L_sim + L_kdce + L_hint + L_seg (the paper's figure calls L_hint
"L_edge": it is the MSE between the edge-aware hint features). Ground-truth labels are
not used by the student; teacher tensors are detached here.

Every loss is computed in float32 with autocast switched off, so callers may run the
forward pass under torch.autocast.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

EDGE_MODES = ("release", "logit")
# The student's distillation terms, in the order of --loss-weights SIM KDCE HINT SEG (weight 1 each
# in the release), then the optional cross-entropy on the ground truth (weight 0 by default: the
# release does not use labels for the student).
STUDENT_TERMS = ("sim", "kdce", "hint", "seg")
OPTIONAL_TERMS = ("gt",)


class _Outputs(Protocol):
    features: Tensor  # (B, C, h, w), skip5
    logits: Tensor    # (B, n_class, H, W)
    hint: Tensor      # (B, 256, H/4, W/4)


@contextmanager
def _fp32(t: Tensor) -> Iterator[None]:
    # .float() alone is not enough: autocast would run matmul/einsum in half precision.
    with torch.autocast(device_type=t.device.type, enabled=False):
        yield


def edge_bce(p: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """L_edge: auto-weighted binary cross-entropy of an edge map.

    Per image beta = mean(target); loss = mean(-(1-beta) y logsigmoid(p) - beta (1-y) logsigmoid(-p)).
    ``p`` is used as given. The release passes the edge head's sigmoid *output* (so a
    sigmoid is applied twice, and the loss can never reach 0); the corrected variant passes
    the pre-sigmoid logit. The caller chooses. ``target`` is a {0, 1} map, (B,H,W) or
    (B,1,H,W), any dtype; ``p`` is (B,1,H,W) or (B,H,W). ``valid`` (same shape as the target,
    1 = counts) leaves pixels near an ignored label out of beta and of the mean.
    """
    with _fp32(p):
        p = p.float()
        y = target.detach().float()
        if y.ndim == 3:
            y = y.unsqueeze(1)
        if p.ndim == 3:
            p = p.unsqueeze(1)
        if p.shape != y.shape:
            raise ValueError(f"edge_bce: prediction {tuple(p.shape)} and target {tuple(y.shape)} differ")
        if valid is None:
            beta = y.mean(dim=tuple(range(1, y.ndim)), keepdim=True)
            loss = -(1 - beta) * y * F.logsigmoid(p) - beta * (1 - y) * F.logsigmoid(-p)
            return loss.mean()
        v = valid.detach().float().reshape(y.shape)
        dims = tuple(range(1, y.ndim))
        beta = (y * v).sum(dim=dims, keepdim=True) / v.sum(dim=dims, keepdim=True).clamp(min=1)
        loss = -(1 - beta) * y * F.logsigmoid(p) - beta * (1 - y) * F.logsigmoid(-p)
        return (loss * v).sum() / v.sum().clamp(min=1)


def teacher_loss(
    logits: Tensor,
    label: Tensor,
    edge_prob: Tensor | None,
    edge_logit: Tensor | None,
    edge_target: Tensor | None,
    edge_mode: str = "release",
    ignore_index: int | None = None,
    edge_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Teacher loss: CE(logits, label) + L_edge.

    ``edge_mode="release"`` feeds ``edge_prob`` (the head's sigmoid output) to
    :func:`edge_bce`, as the released code does; ``"logit"`` feeds ``edge_logit``.
    With ``edge_target=None`` there is no edge term: the dict has only "ce" and "total".
    MFNet ignores no label (class 0 "unlabeled" is a class); a dataset's ``ignore_index`` is left
    out of the CE, and ``edge_valid`` leaves the edge pixels next to it out of L_edge.
    """
    if edge_mode not in EDGE_MODES:
        raise ValueError(f"edge_mode must be one of {EDGE_MODES}, got {edge_mode!r}")
    ce = label_ce(logits, label, ignore_index)
    out = {"ce": ce}
    total = ce
    if edge_target is not None:
        p = edge_prob if edge_mode == "release" else edge_logit
        if p is None:
            raise ValueError(f"edge_mode={edge_mode!r} needs the edge {'prob' if edge_mode == 'release' else 'logit'}")
        out["edge"] = edge_bce(p, edge_target, edge_valid)
        total = total + out["edge"]
    out["total"] = total
    return out


def _similarity(f: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, hw, hw) cosine similarity between positions."""
    norm = f.pow(2).sum(dim=1, keepdim=True).sqrt().detach() + 1e-8
    f = (f / norm).flatten(2)
    return f.transpose(1, 2) @ f


def similarity_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """L_sim: pairwise-similarity distillation, sum((S_T - S_S)^2) / (hw)^2 / B."""
    if f_s.shape[0] != f_t.shape[0] or f_s.shape[2:] != f_t.shape[2:]:
        raise ValueError(f"similarity_loss: student {tuple(f_s.shape)} vs teacher {tuple(f_t.shape)}")
    with _fp32(f_s):
        b, hw = f_s.shape[0], f_s.shape[2] * f_s.shape[3]
        diff = _similarity(f_t.detach().float()) - _similarity(f_s.float())
        return diff.pow(2).sum() / hw**2 / b


def kd_ce_loss(z_s: Tensor, z_t: Tensor, tau: float = 6.0) -> Tensor:
    """L_kdce: -mean over batch and pixels of sum_c softmax(z_T/tau) log_softmax(z_S/tau) (no tau^2)."""
    with _fp32(z_s):
        p_t = F.softmax(z_t.detach().float() / tau, dim=1)
        return -(p_t * F.log_softmax(z_s.float() / tau, dim=1)).sum(dim=1).mean()


def hint_loss(h_s: Tensor, h_t: Tensor) -> Tensor:
    """L_hint (the figure's L_edge): MSE between the edge-aware hint features."""
    with _fp32(h_s):
        return F.mse_loss(h_s.float(), h_t.detach().float())


def pseudo_label_ce(z_s: Tensor, z_t: Tensor) -> Tensor:
    """L_seg: CE of the student logits against the teacher's argmax prediction."""
    with _fp32(z_s):
        return F.cross_entropy(z_s.float(), z_t.detach().argmax(dim=1))


def student_loss(
    out_s: _Outputs,
    out_t: _Outputs,
    weights: Mapping[str, float] | None = None,
    tau: float = 6.0,
    label: Tensor | None = None,
    ignore_index: int | None = None,
    adapter: Callable[[Tensor], Tensor] | None = None,
    labelled: Tensor | None = None,
) -> dict[str, Tensor]:
    """Student loss: the weighted sum of the terms in STUDENT_TERMS and, when weighted above 0,
    OPTIONAL_TERMS ("gt": CE against ``label``, ``ignore_index`` left out).

    ``weights`` maps term names to weights; a missing distillation term weighs 1, a missing
    optional one 0. ``adapter`` maps the student's hint to the teacher's width when they differ
    (a student of another ResNet family than its teacher). ``labelled`` (bool per frame, for
    batches that mix in frames without labels): the gt term is the CE averaged over the pixels of
    the labelled frames only, and 0 for a batch without any; the distillation terms read every frame.
    """
    weights = dict(weights or {})
    unknown = set(weights) - set(STUDENT_TERMS) - set(OPTIONAL_TERMS)
    if unknown:
        raise ValueError(f"unknown student loss term(s) {sorted(unknown)}; known: {STUDENT_TERMS + OPTIONAL_TERMS}")
    hint_s = out_s.hint if adapter is None else adapter(out_s.hint)
    terms = {
        "sim": similarity_loss(out_s.features, out_t.features),
        "kdce": kd_ce_loss(out_s.logits, out_t.logits, tau),
        "hint": hint_loss(hint_s, out_t.hint),
        "seg": pseudo_label_ce(out_s.logits, out_t.logits),
    }
    if weights.get("gt", 0.0) > 0:
        if label is None:
            raise ValueError("the gt term needs the ground-truth label")
        terms["gt"] = _labelled_ce(out_s, label, ignore_index, labelled)
    terms["total"] = sum(weights.get(k, 1.0) * v for k, v in terms.items())
    return terms


def _labelled_ce(out_s: _Outputs, label: Tensor, ignore_index: int | None, labelled: Tensor | None) -> Tensor:
    """The gt term: CE on every frame, or (``labelled`` given) on the labelled frames alone."""
    if labelled is None or bool(labelled.all()):
        return supervised_student_loss(out_s, label, ignore_index)["ce"]
    if not bool(labelled.any()):
        return out_s.logits.float().sum() * 0.0  # no labelled frame in this batch
    keep = labelled.to(out_s.logits.device)
    with _fp32(out_s.logits):
        return F.cross_entropy(out_s.logits[keep].float(), label[keep].long(), ignore_index=_ignore(ignore_index))


def _ignore(ignore_index: int | None) -> int:
    """F.cross_entropy's ignore_index for a dataset's ignored label (its default, -100, ignores nothing here)."""
    return -100 if ignore_index is None else ignore_index


def has_valid_pixel(label: Tensor, ignore_index: int | None) -> bool:
    """Whether any pixel of `label` is not the ignored class (one device sync when one is ignored)."""
    return ignore_index is None or bool((label != ignore_index).any())


def label_ce(logits: Tensor, label: Tensor, ignore_index: int | None = None) -> Tensor:
    """CE(logits, label), the mean over the pixels not of `ignore_index`, in float32.

    A batch whose every pixel is ignored would make that mean 0/0 (NaN): it gives a zero loss that
    is still a function of the logits, so that backward runs and every gradient is exactly 0.
    Batches with a valid pixel take the very same operations as a plain F.cross_entropy."""
    with _fp32(logits):
        if not has_valid_pixel(label, ignore_index):
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), label.long(), ignore_index=_ignore(ignore_index))


def supervised_student_loss(out_s: _Outputs, label: Tensor, ignore_index: int | None = None) -> dict[str, Tensor]:
    """Plain CE on ground truth, for the student trained without distillation (baseline)."""
    ce = label_ce(out_s.logits, label, ignore_index)
    return {"ce": ce, "total": ce}


def non_finite_terms(losses: Mapping[str, Tensor | float]) -> list[str]:
    """"name=value" of every NaN/inf term (one device sync when all are finite)."""
    tensors = [v.detach().float().reshape(-1) for v in losses.values() if isinstance(v, Tensor)]
    ok = all(math.isfinite(float(v)) for v in losses.values() if not isinstance(v, Tensor))
    if ok and tensors:
        ok = bool(torch.isfinite(torch.cat([t.to(tensors[0].device) for t in tensors])).all())
    if ok:
        return []
    values = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in losses.items()}
    return [f"{k}={v:g}" for k, v in values.items() if not math.isfinite(v)]


def check_finite(losses: Mapping[str, Tensor | float], where: str,
                 agree: Callable[[bool], bool] | None = None) -> None:
    """Raise FloatingPointError naming every NaN/inf term, its value and ``where``.

    ``agree(ok)`` turns this process's verdict into everyone's (distributed training), so that
    all processes raise together when any one of them saw a non-finite loss."""
    bad = non_finite_terms(losses)
    ok = not bad if agree is None else agree(not bad)
    if not ok:
        raise FloatingPointError(f"non-finite loss at {where}: {', '.join(bad) or 'on another process'}")
