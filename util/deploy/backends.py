"""Backends that segment batches of thermal frames: PyTorch, onnxruntime or OpenVINO, one interface.

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

from ..data.info import DatasetInfo, info_for_classes
from ..engine.config import parse_device
from .cudagraph import GraphRunner
from .onnxfile import check_external_data, declared_size
from .runtimes import keep_signal_stack

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pth", ".pt")
PRECISIONS = ("fp32", "bf16")  # what every backend runs
TORCH_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # fp16: CUDA only


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
    """An EKNet (nn.Module) on a torch device, in inference mode, optionally channels-last.

    `precision` "bf16": bfloat16 autocast (always with channels-last), the fast path of CPUs with
    native bf16 (see cpu.py) and of recent GPUs; "fp16": float16 autocast (CUDA only). The logits
    come back as float32. `graphs` (CUDA only) replays each batch size as a captured CUDA graph
    (cudagraph.py): the same kernels without the launch overhead that dominates at batch 1."""

    def __init__(self, model: nn.Module, info: DatasetInfo, device: torch.device | str = "cpu",
                 channels_last: bool = True, precision: str = "fp32", graphs: bool = False):
        self.device = torch.device(device)
        allowed = tuple(TORCH_PRECISIONS) if self.device.type == "cuda" else PRECISIONS
        if precision not in allowed:
            raise ValueError(f"--precision {precision}: expected one of {', '.join(allowed)} on {self.device}")
        if graphs and self.device.type != "cuda":
            raise ValueError(f"--backend cudagraph: CUDA graphs need a CUDA device (not {self.device})")
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.channels_last = channels_last or precision != "fp32"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.height, self.width, self.n_class = model.height, model.width, model.n_class
        self.info = info  # the classes' names and colours (build_from_weights returns them with the model)
        self.graphs = GraphRunner(self._forward) if graphs else None
        kind = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[precision]
        self.name = (f"PyTorch {self.device}{', CUDA graphs' if graphs else ''}, {kind}"
                     + (", channels-last" if self.channels_last else ""))

    def _forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = TORCH_PRECISIONS[self.precision]
        # no autocast weight cache under graphs: a cached cast made during capture would be freed after it
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None,
                            cache_enabled=self.graphs is None):
            return self.model(t).logits

    @torch.inference_mode()
    def _logits(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(_check_batch(x, self.height, self.width)).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return (self.graphs or self._forward)(t)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x).float().cpu().numpy()

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x).argmax(1).to(torch.uint8).cpu().numpy()


class OnnxSegmenter:
    """An exported student (python -m util.export) in an onnxruntime session; size and classes from its metadata."""

    def __init__(self, path: str | os.PathLike, providers: Optional[list] = None, threads: Optional[int] = None):
        from .runtimes import import_onnxruntime

        ort = import_onnxruntime()
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
        self.input_name = inputs[0].name
        self.height, self.width, self.n_class, self.precision, self.info = student_facts(
            path, meta, [list(i.shape) for i in inputs], [list(o.shape) for o in outputs])
        provider = self.session.get_providers()[0].removesuffix("ExecutionProvider")
        self.name = f"onnxruntime {provider}, {self.precision}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _check_batch(x, self.height, self.width)})[0]

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self(x).argmax(1).astype(np.uint8)


def student_facts(path: Path, meta: dict[str, str], input_shapes: list[list], output_shapes: list[list]
                  ) -> tuple[int, int, int, str, DatasetInfo]:
    """(height, width, n_class, precision, dataset info) of an exported student, from its metadata and
    its input/output shapes; ValueError naming the file when it is not an EKNet of ours."""
    if "network" not in meta:  # a file from elsewhere: say what it holds, not what it lacks deep inside
        raise ValueError(f"{path}: not a CEKD export (no CEKD metadata); it holds a model with input(s) "
                         f"{[tuple(s) for s in input_shapes]} and output(s) {[tuple(s) for s in output_shapes]}; "
                         f"export the student with: python -m util.export")
    if len(input_shapes) != 1 or len(input_shapes[0]) != 4 or input_shapes[0][1] != 1:
        raise ValueError(f"{path}: expected one thermal input of shape (B, 1, H, W), "
                         f"got {[tuple(s) for s in input_shapes]}")
    if meta.get("network", "EKNet") != "EKNet":
        raise ValueError(f"{path} holds {meta['network']}; only the EKNet student takes thermal frames alone")
    height = declared_size(meta, "height", input_shapes[0][2], path, "input height")
    width = declared_size(meta, "width", input_shapes[0][3], path, "input width")
    n_class = declared_size(meta, "n_class", output_shapes[0][1], path, "output channel count (classes)")
    try:
        info = info_for_classes(n_class, json.loads(meta["dataset"]) if "dataset" in meta else None)
    except ValueError as exc:
        raise ValueError(f"{path}: its CEKD metadata does not describe {n_class} classes ({exc})") from None
    return height, width, n_class, meta.get("precision", "fp32"), info


class OpenVinoSegmenter:
    """An exported student (fp32, or an int8 QDQ file as it is) compiled by OpenVINO for the CPU.

    `precision` is OpenVINO's INFERENCE_PRECISION_HINT for what runs in floating point: "fp32", or
    "bf16" (fast on CPUs with native bf16, see cpu.py). The model is compiled for each batch size
    met (static shapes run faster than a dynamic batch). Nothing is written outside: no model cache,
    and no telemetry (runtimes.py)."""

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", threads: Optional[int] = None):
        from .onnxfile import read_metadata
        from .runtimes import import_openvino, openvino_config

        path = Path(path)
        if precision not in PRECISIONS:
            raise ValueError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        try:
            ov = import_openvino()
        except ImportError:
            raise ValueError("--backend openvino: the openvino package is not installed "
                             "(pip install openvino)") from None
        check_external_data(path)  # OpenVINO's own refusal names no reason
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
            meta = read_metadata(path)
        except Exception as exc:  # OpenVINO and onnx raise their own exception types for bad files
            raise ValueError(f"{path}: cannot load the ONNX model ({str(exc).splitlines()[0][:200]})") from None

        def dims(shape) -> list:
            return [d.get_length() if d.is_static else None for d in shape]
        self.height, self.width, self.n_class, file_precision, self.info = student_facts(
            path, meta, [dims(i.get_partial_shape()) for i in self.model.inputs],
            [dims(o.get_partial_shape()) for o in self.model.outputs])
        self.precision = precision
        self.config = openvino_config(precision, threads)
        self._compiled: dict[int, object] = {}
        kind = f"{file_precision} file, {precision} hint" if file_precision == "int8" else precision
        self.name = f"OpenVINO CPU, {kind}"

    def _compiled_for(self, batch: int):
        if batch not in self._compiled:
            model = self.model.clone()
            model.reshape([batch, 1, self.height, self.width])
            with keep_signal_stack():  # see runtimes.keep_signal_stack
                self._compiled[batch] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[batch]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_batch(x, self.height, self.width)
        compiled = self._compiled_for(len(x))
        return np.asarray(compiled(x)[compiled.output(0)], dtype=np.float32)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self(x).argmax(1).astype(np.uint8)


def onnx_providers(device: str) -> list:
    """onnxruntime providers for a --device value: 'cpu', 'cuda[:N]' or 'auto' (CUDA when available)."""
    from .runtimes import import_onnxruntime

    ort = import_onnxruntime()

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
