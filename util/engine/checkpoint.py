"""Checkpoints: atomic writes, our self-describing files, the release's plain state dicts.

Our checkpoint file is one dict:
    {"format": "cekd-pytorch", "version": 2, "network": "CENet" | "EKNet",
     "config": {"n_class", "depth", "height", "width"}, "model": state_dict,
     "optimizer", "lr_scheduler", "scaler", "epoch", "step", "best", "history", "args",
     "dataset": the classes' names, colours and ignored id (util/data/info.py)}
`best.pth` holds the first six and "epoch", "args", "dataset" only. The network is rebuilt from
"config"; only the release's `final.pth` (a plain state dict with the release's key names,
see model/release.py) needs its configuration read off its tensors.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from model.release import from_release, infer_config, is_release_format, network_of, to_release, upgrade_v1_keys

from ..data.info import DatasetInfo, info_for_classes
from ..files import atomic_write

FORMAT = "cekd-pytorch"
VERSION = 2  # 1: BoT block layers stored by Sequential index (body.3...)
NETWORK_ROLE = {"CENet": "teacher", "EKNet": "student"}
TRAINER = {"CENet": "trainTeacher.py", "EKNet": "trainStudent.py"}


class CheckpointError(ValueError):
    """A weights file that cannot be used for the requested network."""


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    A process killed at any moment leaves either the old file or the new one, never a torn one;
    a full disk raises DiskFullError naming `path`, with no temporary file left.
    """
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def model_config(model: nn.Module) -> dict[str, int]:
    m = unwrap(model)
    return {"n_class": m.n_class, "depth": m.depth, "height": m.height, "width": m.width}


class Weights(NamedTuple):
    """What a weights file holds: the network, its configuration, its state dict (our key names),
    the kind of file ("training": our last.pth; "weights": our best.pth; "release": a plain state
    dict such as final.pth) and the whole loaded object."""
    network: str
    config: dict[str, int]
    state_dict: dict[str, torch.Tensor]
    kind: str
    raw: dict

    @property
    def dataset(self) -> dict | None:
        """The description of the classes our checkpoints carry; None for a release-format file (or an early
        checkpoint of ours), which names none."""
        return self.raw.get("dataset") if self.kind != "release" else None


def read_weights(path: str | os.PathLike, mmap: bool = False) -> Weights:
    """Read any CEKD weights file on the CPU; CheckpointError (one line naming the file) otherwise.

    `mmap` maps the tensors instead of reading them (cheap when only the metadata is needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head == b"PK\x03\x04"  # torch.save's format; the legacy one is a pickle (b"\x80...")
    try:  # mmap needs the zip format
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as exc:
        size = path.stat().st_size
        if is_zip and not zipfile.is_zipfile(path):
            what = f"a truncated or corrupt PyTorch file ({size} bytes, its zip directory is missing)"
        elif not is_zip and head[:1] != b"\x80":
            what = f"not a PyTorch file ({size} bytes starting with {head!r})"
        else:
            first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
            what = f"a PyTorch file that cannot be read as weights ({type(exc).__name__}: {first})"
        raise CheckpointError(f"cannot read weights file {path}: {what}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or a CEKD-PyTorch checkpoint")
    obj = dict(obj)
    ours = obj.get("format") == FORMAT
    sd = obj.get("model") if ours else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if is_release_format(sd):
        sd = dict(from_release(sd))
    elif not ours or obj.get("version", 1) < VERSION:
        sd = dict(upgrade_v1_keys(sd))
    try:
        network = network_of(sd)
        config = dict(obj["config"]) if ours and "config" in obj else infer_config(sd)
    except ValueError as exc:
        raise CheckpointError(f"{path} {exc}") from None
    kind = ("training" if "optimizer" in obj else "weights") if ours else "release"
    return Weights(network, config, sd, kind, obj)


def _refuse_other_network(path: str | os.PathLike, have: str, want: str) -> None:
    if want != have:
        raise CheckpointError(
            f"{path} holds {have} ({NETWORK_ROLE[have]}) weights, but {want} ({NETWORK_ROLE[want]}) was asked for")


def load_state(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load weights from `path` into `model` strictly; return the file's contents.

    Accepts the release's plain state dicts and our checkpoints. Says clearly when the
    file holds the other network or a different class count, depth or input size.
    """
    w = read_weights(path)
    target = unwrap(model)
    _refuse_other_network(path, w.network, type(target).__name__)
    expected = model_config(target)
    for key, what in (("n_class", "classes"), ("depth", "ResNet depth"),
                      ("height", "input height"), ("width", "input width")):
        if w.config[key] != expected[key]:
            raise CheckpointError(f"{path} holds a {w.network} with {what} {w.config[key]}, "
                                  f"but the model was built with {expected[key]}")
    target.load_state_dict(w.state_dict, strict=True)
    return w.raw


class Loaded(NamedTuple):
    """A network built from a weights file, and what its classes are (names, colours, ignored id)."""
    model: nn.Module
    info: DatasetInfo


def build_from_weights(path: str | os.PathLike, expect: str | None = None, **overrides: Any) -> Loaded:
    """Build the network a weights file holds (from its stored config, or its tensors), load it, and
    say what its classes are: the description our checkpoints carry, else (a release-format file)
    MFNet's for 9 classes or generic names (`info_for_classes`)."""
    return build_network(read_weights(path), path, expect, **overrides)


def build_network(w: Weights, path: str | os.PathLike, expect: str | None = None, **overrides: Any) -> Loaded:
    """`build_from_weights` of weights already read (`read_weights(path)`), for a caller that also needs
    the file's other contents (e.g. whether it names its classes: `w.dataset`)."""
    from model import CENet, EKNet

    if expect is not None:
        _refuse_other_network(path, w.network, expect)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file (seconds at ResNet-50)
        model = {"CENet": CENet, "EKNet": EKNet}[w.network](**{**w.config, **overrides})
    wanted = model.state_dict()
    model.load_state_dict({k: v.to(wanted[k].dtype) if k in wanted else v for k, v in w.state_dict.items()},
                          strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor that is not in state dicts (none today) would have no values
        raise RuntimeError(f"{path}: {w.network} tensors not filled from the file: {', '.join(left)}")
    return Loaded(model, info_for_classes(model.n_class, w.dataset))


def read_training_checkpoint(path: str | os.PathLike, network: str, mmap: bool = False) -> dict:
    """Our last.pth of a `network` run, ready to resume; one line saying what the file is otherwise."""
    try:
        w = read_weights(path, mmap)
    except CheckpointError as exc:
        raise CheckpointError(f"--resume: {exc}; expected a run's last.pth") from None
    role, script = NETWORK_ROLE[network], TRAINER[network]
    if w.kind == "release":
        raise CheckpointError(f"--resume {path}: holds plain {w.network} weights (a final.pth or released file), "
                              f"not a training checkpoint; resume from the run's last.pth")
    if w.kind == "weights":
        raise CheckpointError(f"--resume {path}: holds the best {w.network} weights only (a best.pth); "
                              f"resume from the run's last.pth")
    if w.network != network:
        raise CheckpointError(f"--resume {path}: is a {w.network} ({NETWORK_ROLE[w.network]}) run, "
                              f"but {script} resumes {network} ({role}) runs")
    missing = [k for k in ("lr_scheduler", "epoch", "step", "best", "history", "args") if k not in w.raw]
    if missing:
        raise CheckpointError(f"--resume {path}: training checkpoint lacks {', '.join(missing)}")
    return {**w.raw, "model": w.state_dict}


def first_non_finite(model: nn.Module) -> str | None:
    """Name of the first parameter or buffer holding NaN or inf, or None when all are finite."""
    tensors = list(unwrap(model).state_dict().items())
    floats = [(k, v) for k, v in tensors if v.is_floating_point()]
    if not floats or bool(torch.stack([torch.isfinite(v).all() for _, v in floats]).all()):
        return None
    return next(k for k, v in floats if not torch.isfinite(v).all())


def export_release(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the weights as a plain state dict with the release's key names (like `final.pth`)."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return save_atomic(to_release(sd), path)
