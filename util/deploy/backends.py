"""Backends that segment batches of thermal frames: PyTorch or onnxruntime, one interface.

A segmenter takes float32 (B, 1, height, width) thermal in [0, 1] (a NumPy array at the model
size) and returns the logits (B, n_class, height, width) as float32 NumPy; `labels` returns the
class ids (B, height, width) uint8. Each carries `height`, `width`, `n_class` and `name` (e.g.
"onnxruntime CPU, int8"), so inference code does not care which one runs.
"""
from __future__ import annotations

import json

import os
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from torch import nn

from ..data.info import info_for_classes
from ..engine.config import parse_device

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pth", ".pt")


class Segmenter(Protocol):
    height: int
    width: int
    n_class: int
    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def labels(self, x: np.ndarray) -> np.ndarray: ...


def _check_batch(x: np.ndarray, height: int, width: int) -> np.ndarray:
    if x.ndim != 4 or x.shape[1:] != (1, height, width):
        raise ValueError(f"expected a thermal batch of shape (B, 1, {height}, {width}), got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class TorchSegmenter:
    """An EKNet (nn.Module) on a torch device, in inference mode, optionally channels-last."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", channels_last: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.height, self.width, self.n_class = model.height, model.width, model.n_class
        self.info = getattr(model, "dataset_info", None) or info_for_classes(model.n_class)
        self.name = f"PyTorch {self.device}, fp32" + (", channels-last" if channels_last else "")

    @torch.inference_mode()
    def _logits(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(_check_batch(x, self.height, self.width)).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return self.model(t).logits

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x).float().cpu().numpy()

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x).argmax(1).to(torch.uint8).cpu().numpy()


class OnnxSegmenter:
    """An exported student (python -m util.export) in an onnxruntime session; size and classes from its metadata."""

    def __init__(self, path: str | os.PathLike, providers: Optional[list] = None, threads: Optional[int] = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path}: cannot load the ONNX model ({str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if "network" not in meta:  # a file from elsewhere: say what it holds, not what it lacks deep inside
            raise ValueError(f"{path}: not a CEKD export (no CEKD metadata); it holds a model with input(s) "
                             f"{[tuple(i.shape) for i in inputs]} and output(s) {[tuple(o.shape) for o in outputs]}; "
                             f"export the student with: python -m util.export")
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 1:
            raise ValueError(f"{path}: expected one thermal input of shape (B, 1, H, W), "
                             f"got {[tuple(i.shape) for i in inputs]}")
        if meta.get("network", "EKNet") != "EKNet":
            raise ValueError(f"{path} holds {meta['network']}; only the EKNet student takes thermal frames alone")
        self.input_name = inputs[0].name
        self.height = _size(meta.get("height"), inputs[0].shape[2], path, "height")
        self.width = _size(meta.get("width"), inputs[0].shape[3], path, "width")
        self.n_class = _size(meta.get("n_class"), outputs[0].shape[1], path, "class count")
        self.precision = meta.get("precision", "fp32")
        try:
            self.info = info_for_classes(self.n_class, json.loads(meta["dataset"]) if "dataset" in meta else None)
        except ValueError as exc:
            raise ValueError(f"{path}: its CEKD metadata does not describe {self.n_class} classes ({exc})") from None
        provider = self.session.get_providers()[0].removesuffix("ExecutionProvider")
        self.name = f"onnxruntime {provider}, {self.precision}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _check_batch(x, self.height, self.width)})[0]

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self(x).argmax(1).astype(np.uint8)


def _size(meta_value: Optional[str], dim: object, path: Path, what: str) -> int:
    value = meta_value if meta_value is not None else dim
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: the {what} is neither in the metadata nor a fixed dimension ({value!r})") from None


def onnx_providers(device: str) -> list:
    """onnxruntime providers for a --device value: 'cpu', 'cuda[:N]' or 'auto' (CUDA when available)."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    dev = parse_device(device)
    if dev.type == "cpu":
        return ["CPUExecutionProvider"]
    if dev.type != "cuda" or not has_cuda:
        raise ValueError(f"--device {device}: this onnxruntime runs on {', '.join(ort.get_available_providers())} "
                         f"only (onnxruntime-gpu brings CUDA)")
    return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]


def load_segmenter(weights: str | os.PathLike, device: str = "auto", channels_last: bool = True,
                   threads: Optional[int] = None) -> Segmenter:
    """The student in `weights`: an .onnx file (onnxruntime) or PyTorch weights (.pth/.pt, our
    checkpoint or a released final.pth). `device`: 'auto', 'cpu' or 'cuda:N'."""
    from ..engine.checkpoint import build_from_weights
    from ..engine.config import parse_device as resolve_device

    suffix = Path(weights).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return OnnxSegmenter(weights, onnx_providers(device), threads)
    if suffix in TORCH_SUFFIXES:
        return TorchSegmenter(build_from_weights(weights, expect="EKNet"), resolve_device(device), channels_last)
    raise ValueError(f"--weights {weights}: expected an .onnx, .pth or .pt file")
