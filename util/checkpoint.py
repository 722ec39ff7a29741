"""Checkpoints: atomic writes, and one loader for released state dicts and our own files.

Our checkpoint file is one dict:
    {"format": "cekd-pytorch", "network": "CENet" | "EKNet",
     "config": {"n_class", "depth", "height", "width"}, "model": state_dict,
     "optimizer", "lr_scheduler", "scaler", "epoch", "step", "best_miou", "args"}
The release's `final.pth` is a plain state dict with the release's key names
(see model/keymap.py). `load_state` reads both.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from model.keymap import from_release, is_release_format, to_release

FORMAT = "cekd-pytorch"
NETWORK_ROLE = {"CENet": "teacher", "EKNet": "student"}
# layer3 block count -> ResNet depth, for each block type (BasicBlock: 18/34, Bottleneck: 50+)
_DEPTH_BY_LAYER3 = {("basic", 2): 18, ("basic", 6): 34, ("bottleneck", 6): 50,
                    ("bottleneck", 23): 101, ("bottleneck", 36): 152}


class CheckpointError(ValueError):
    """A weights file that cannot be used for the requested network."""


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    A process killed at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def model_config(model: nn.Module) -> dict[str, int]:
    m = unwrap(model)
    return {"n_class": m.n_class, "depth": m.depth, "height": m.height, "width": m.width}


def read_weights_file(path: str | os.PathLike) -> dict:
    """Load a .pth file on the CPU with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict or a CEKD-PyTorch checkpoint")
    return dict(obj)


def state_dict_of(obj: Mapping, path: str | os.PathLike = "<memory>") -> dict[str, torch.Tensor]:
    """The model state dict with our key names, from our checkpoint or a (release) state dict."""
    sd = obj["model"] if obj.get("format") == FORMAT else obj
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(from_release(sd)) if is_release_format(sd) else sd


def network_of(sd: Mapping[str, torch.Tensor]) -> str:
    """'CENet' or 'EKNet', from the keys of a state dict with our names."""
    if any(k.startswith("encoder_rgb.") for k in sd):
        return "CENet"
    if any(k.startswith("tem.") for k in sd):
        return "EKNet"
    raise CheckpointError("state dict holds neither CENet (teacher) nor EKNet (student) weights")


def infer_config(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """n_class, ResNet depth and input size of the network a state dict (our names) belongs to."""
    n_class = sd["deconv1.1.bn3.weight"].shape[0]
    kind = "bottleneck" if "encoder_thermal.layer3.0.conv3.weight" in sd else "basic"
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder_thermal.layer3.")})
    depth = _DEPTH_BY_LAYER3.get((kind, n_blocks))
    if depth is None:
        raise CheckpointError(f"unrecognised ResNet encoder: {kind} blocks, {n_blocks} in layer3")
    h = sd["encoder_thermal.layer4.blocks.0.body.3.pos_emb.height"].shape[0] * 16
    w = sd["encoder_thermal.layer4.blocks.0.body.3.pos_emb.width"].shape[0] * 16
    return {"n_class": n_class, "depth": depth, "height": h, "width": w}


def load_state(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load weights from `path` into `model` strictly; return the file's contents.

    Accepts the release's plain state dicts and our checkpoints. Says clearly when the
    file holds the other network or a different class count, depth or input size.
    """
    obj = read_weights_file(path)
    sd = state_dict_of(obj, path)
    target = unwrap(model)
    want, have = type(target).__name__, network_of(sd)
    if want != have:
        raise CheckpointError(
            f"{path} holds {have} ({NETWORK_ROLE[have]}) weights, but {want} ({NETWORK_ROLE[want]}) was asked for")
    got, expected = infer_config(sd), model_config(target)
    for key, what in (("n_class", "classes"), ("depth", "ResNet depth"),
                      ("height", "input height"), ("width", "input width")):
        if got[key] != expected[key]:
            raise CheckpointError(
                f"{path} holds a {have} with {what} {got[key]}, but the model was built with {expected[key]}")
    target.load_state_dict(sd, strict=True)
    return obj


def build_from_weights(path: str | os.PathLike, expect: str | None = None, **overrides: Any) -> nn.Module:
    """Build the network a weights file holds (its class, depth, size) and load it."""
    from model import CENet, EKNet

    obj = read_weights_file(path)
    sd = state_dict_of(obj, path)
    have = network_of(sd)
    if expect is not None and expect != have:
        raise CheckpointError(
            f"{path} holds {have} ({NETWORK_ROLE[have]}) weights, but {expect} ({NETWORK_ROLE[expect]}) was asked for")
    cfg = {**infer_config(sd), **overrides}
    model = {"CENet": CENet, "EKNet": EKNet}[have](**cfg)
    model.load_state_dict(sd, strict=True)
    return model


def export_release(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the weights as a plain state dict with the release's key names (like `final.pth`)."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return save_atomic(to_release(sd), path)
