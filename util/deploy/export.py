"""Export the student (EKNet) to ONNX, optionally with a static int8 copy, and check both.

    python -m util.export --weights runs/student/best.pth --out student.onnx
    python -m util.export --weights final.pth --out student.onnx --int8 --calib-data dataset/MFNet

The ONNX model has one input `thermal` (B, 1, H, W) float32 in [0, 1] and one output `logits`
(B, n_class, H, W), with a dynamic batch dimension. Its metadata (metadata_props) holds network,
n_class, depth, height, width and precision (fp32 or int8). The TorchScript-based exporter
(torch.onnx.export(..., dynamo=False)) is used: the dynamo exporter gives the same graph
numerically but takes about 8x longer and needs onnxscript.
After writing, the file is run with onnxruntime (CPU) against PyTorch on random thermal inputs;
the int8 copy is compared with the fp32 model on held-out frames.
"""
from __future__ import annotations

import json

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..options import ArgumentParser, integer, number

OPSETS = range(14, 21)  # scaled_dot_product_attention needs 14; the TorchScript exporter stops at 20
DEFAULT_OPSET = 17


class LogitsOnly(nn.Module):
    """The network with its logits as the only output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def check_new_file(path: Path, overwrite: bool, option: str) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds (removed otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
    try:
        yield Path(tmp)
        check_new_file(path, overwrite, "output")  # it may have appeared meanwhile
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_metadata(model: nn.Module, precision: str = "fp32") -> dict[str, str]:
    from ..data.info import info_for_classes

    info = getattr(model, "dataset_info", None) or info_for_classes(model.n_class)
    return {"network": type(model).__name__, "n_class": str(model.n_class), "depth": str(model.depth),
            "height": str(model.height), "width": str(model.width), "precision": precision,
            "dataset": json.dumps(info.to_dict()),
            "input": "thermal (B, 1, height, width) float32 in [0, 1]", "output": "logits (B, n_class, height, width)"}


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with `metadata` and check the file."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write `model` (an EKNet, any depth and size; put in eval mode on the CPU) as ONNX with its
    logits as the only output, a dynamic batch dimension and metadata; atomically, never over an
    existing file unless `overwrite`."""
    path = Path(path)
    if opset not in OPSETS:
        raise ValueError(f"--opset {opset}: expected {OPSETS.start} to {OPSETS.stop - 1}")
    check_new_file(path, overwrite, "--out")
    model = model.cpu().float().eval()
    example = torch.rand(2, 1, model.height, model.width)
    with atomic_path(path, overwrite) as tmp, warnings.catch_warnings():
        # TracerWarnings come from the input-shape checks (the fixed H and W), not from the batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(LogitsOnly(model), (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["thermal"], output_names=["logits"],
                          dynamic_axes={"thermal": {0: "batch"}, "logits": {0: "batch"}})
        write_metadata(tmp, model_metadata(model))
    return path


class _FrameReader:
    """onnxruntime CalibrationDataReader over frames (N, 1, H, W), one at a time."""

    def __init__(self, input_name: str, frames: np.ndarray):
        self._items = iter([{input_name: frames[i:i + 1]} for i in range(len(frames))])

    def get_next(self) -> Optional[dict]:
        return next(self._items, None)


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib_frames: np.ndarray,
                  overwrite: bool = False) -> Path:
    """Static int8 quantisation (QDQ, int8 activations and per-channel int8 weights, MinMax ranges)
    of an exported fp32 model, calibrated on `calib_frames` float32 (N, 1, H, W) in [0, 1]."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    check_new_file(out_path, overwrite, "--int8-out")
    if len(calib_frames) == 0:
        raise ValueError("quantize_int8: no calibration frames")
    metadata = {**read_metadata(fp32_path), "precision": "int8"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as work, atomic_path(out_path, overwrite) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))  # folds BatchNorms into convolutions, infers shapes
        graph = onnx.load(str(pre)).graph
        # the BatchNorms left (after pooling and in TEM's MLP) stay float: per-channel int8 does not fit them
        keep_float = [n.name for n in graph.node if n.op_type == "BatchNormalization"]
        quantize_static(str(pre), str(tmp), _FrameReader(graph.input[0].name, calib_frames.astype(np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
        write_metadata(tmp, metadata)
    return out_path


def compare(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
            inputs: np.ndarray, batch_size: int = 1) -> dict[str, float]:
    """Logits of two segmenters on `inputs` (N, 1, H, W) in batches: the largest absolute difference,
    that relative to the largest reference logit, and the argmax (label) agreement over all pixels."""
    max_abs, max_ref, agree, total = 0.0, 0.0, 0, 0
    for i in range(0, len(inputs), batch_size):
        a, b = reference(inputs[i:i + batch_size]), candidate(inputs[i:i + batch_size])
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        max_ref = max(max_ref, float(np.abs(a).max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += a.shape[0] * a.shape[2] * a.shape[3]
    return {"frames": len(inputs), "batch_size": batch_size, "max_abs_diff": max_abs,
            "relative_diff": max_abs / max_ref if max_ref > 0 else max_abs, "agreement": agree / total}


def format_comparison(title: str, r: dict[str, float]) -> str:
    return (f"{title}: {r['frames']} frame(s), batch {r['batch_size']}: max|Δlogits| {r['max_abs_diff']:.3g} "
            f"(relative {r['relative_diff']:.3g}), argmax agreement {100 * r['agreement']:.2f}%")


def random_thermal(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, height, width), dtype=np.float32)


def _spread(items: Sequence, n: int) -> list:
    """Up to `n` items evenly spread over `items` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _mfnet_thermal(data_dir: Path, split: str, n: int) -> list[np.ndarray]:
    from ..data.check import IMAGE_DIR, load_image_file, read_split

    names = _spread(read_split(data_dir, split), n)
    return [load_image_file(data_dir / IMAGE_DIR / f"{name}.png")[..., 3].astype(np.float32) / 255.0 for name in names]


def _own_thermal(path: Path, n: int, thermal_range: Optional[Sequence[float]]) -> list[np.ndarray]:
    """Up to `n` frames spread over a video, an image file or a folder, read as `--input` reads them."""
    from .frames import is_video, iter_images, iter_video, list_frames, video_info

    if is_video(path):
        keep = set(_spread(range(video_info(path).frames), n))
        frames = (f for i, f in enumerate(iter_video(path, thermal_range)) if i in keep)
    else:
        frames = iter_images(_spread(list_frames(path), n), thermal_range)
    out = []
    for f in frames:
        if f.thermal is None:
            print(f"skipped: {f.error}", flush=True)
        else:
            out.append(f.thermal)
    return out


def calibration_frames(data: str | os.PathLike, height: int, width: int, n_calib: int, n_held: int,
                       thermal_range: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Calibration and held-out frames (N, 1, height, width) and where they come from.

    An MFNet-format folder: thermal of its train split / of its val (else test) split. Otherwise
    frames of a folder, image or video (as `--input` reads them), a quarter (at most `n_held`)
    held out, evenly spread."""
    from .inference import to_model_input

    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--calib-data {data}: no such file or folder")
    held_split = next((s for s in ("val", "test") if (data / f"{s}.txt").is_file()), None)
    if (data / "train.txt").is_file() and held_split:
        calib, held = _mfnet_thermal(data, "train", n_calib), _mfnet_thermal(data, held_split, n_held)
        where = f"{len(calib)} train / {len(held)} {held_split} frames of {data}"
    else:
        frames = _own_thermal(data, n_calib + n_held, thermal_range)
        if len(frames) < 2:
            raise ValueError(f"--calib-data {data}: expected at least 2 readable thermal frames "
                             f"(calibration and held-out), found {len(frames)}")
        held_idx = set(_spread(range(len(frames)), min(n_held, max(1, len(frames) // 4))))
        held = [f for i, f in enumerate(frames) if i in held_idx]
        calib = [f for i, f in enumerate(frames) if i not in held_idx][:n_calib]
        where = f"{len(calib)} calibration / {len(held)} held-out frames of {data}"
    return (np.stack([to_model_input(f, height, width) for f in calib]),
            np.stack([to_model_input(f, height, width) for f in held]), where)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m util.export", description="Export the CEKD student (EKNet) to ONNX, optionally also int8.")
    p.add_argument("--weights", required=True, help="our student checkpoint (best.pth, last.pth, final.pth) "
                   "or the released Student_model/final.pth")
    p.add_argument("--out", required=True, help="the ONNX file to write, e.g. student.onnx")
    p.add_argument("--opset", type=integer(OPSETS.start, OPSETS.stop - 1), default=DEFAULT_OPSET, help=f"ONNX opset ({OPSETS.start}-{OPSETS.stop - 1})")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--int8", action="store_true", help="also write a static int8 copy (needs --calib-data)")
    p.add_argument("--int8-out", default=None, help="the int8 file (default: OUT with .int8.onnx)")
    p.add_argument("--calib-data", default=None, help="MFNet-format folder (train split calibrates, val is "
                   "held out), or a folder, image or video of thermal frames (as --input of run_demo_student.py)")
    p.add_argument("--calib-frames", type=integer(1), default=32, help="frames to calibrate on")
    p.add_argument("--heldout-frames", type=integer(1), default=16, help="frames to compare int8 with fp32 on")
    p.add_argument("--thermal-range", type=number(), nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="fixed raw-value range for 16-bit calibration frames (default: per-frame min-max)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> tuple[Path, Optional[Path]]:
    """The output paths; one-line errors for every bad option, before any work."""
    from .frames import check_thermal_range

    out = Path(args.out)
    if Path(args.weights).suffix.lower() == ".onnx":
        raise ValueError(f"--weights {args.weights}: holds an ONNX model; python -m util.export exports PyTorch "
                         f"weights (best.pth, last.pth, final.pth)")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: expected a file name ending in .onnx")
    check_new_file(out, args.overwrite, "--out")
    if args.opset not in OPSETS:
        raise ValueError(f"--opset {args.opset}: expected {OPSETS.start} to {OPSETS.stop - 1}")
    check_thermal_range(args.thermal_range)
    if not args.int8:
        return out, None
    int8_out = Path(args.int8_out) if args.int8_out else out.with_name(out.stem + ".int8.onnx")
    if int8_out.resolve() == out.resolve():
        raise ValueError(f"--int8-out {int8_out}: must differ from --out")
    check_new_file(int8_out, args.overwrite, "--int8-out")
    if not args.calib_data:
        raise ValueError("--int8 needs --calib-data (an MFNet-format folder or thermal frames)")
    if not Path(args.calib_data).exists():
        raise FileNotFoundError(f"--calib-data {args.calib_data}: no such file or folder")
    if args.calib_frames < 1 or args.heldout_frames < 1:
        raise ValueError("--calib-frames and --heldout-frames: expected at least 1")
    return out, int8_out


def run(args: argparse.Namespace) -> dict:
    from .backends import OnnxSegmenter, TorchSegmenter
    from ..engine.checkpoint import build_from_weights

    out, int8_out = check_args(args)
    model = build_from_weights(args.weights, expect="EKNet")
    cfg = model_metadata(model)
    print(f"[export] EKNet-{cfg['depth']} {cfg['height']}x{cfg['width']}, {cfg['n_class']} classes, "
          f"from {args.weights}", flush=True)
    if int8_out is not None:  # every input is read before any output is written
        calib, held, where = calibration_frames(args.calib_data, model.height, model.width, args.calib_frames,
                                                args.heldout_frames, args.thermal_range)
    export_onnx(model, out, args.opset, args.overwrite)
    print(f"[export] wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {args.opset})", flush=True)
    torch_seg, fp32 = TorchSegmenter(model, "cpu", channels_last=False), OnnxSegmenter(out)
    result = {"out": str(out), "metadata": read_metadata(out), "checks": []}
    for n, batch in ((1, 1), (4, 2)):
        r = compare(torch_seg, fp32, random_thermal(n, model.height, model.width, seed=n), batch)
        print(format_comparison("[export] onnxruntime CPU vs PyTorch, random thermal", r), flush=True)
        result["checks"].append(r)
    if int8_out is not None:
        print(f"[export] int8: calibrating on {where}", flush=True)
        try:
            quantize_int8(out, int8_out, calib, args.overwrite)
        except BaseException:
            out.unlink(missing_ok=True)  # all outputs or none: the fp32 file written above goes too
            raise
        r = compare(fp32, OnnxSegmenter(int8_out), held, batch_size=1)
        print(f"[export] wrote {int8_out} ({int8_out.stat().st_size / 2**20:.1f} MiB)", flush=True)
        print(format_comparison("[export] int8 vs fp32 (onnxruntime CPU), held-out frames", r), flush=True)
        result.update({"int8_out": str(int8_out), "int8_vs_fp32": r, "calibration": where})
    return result


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    try:
        return run(args)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
