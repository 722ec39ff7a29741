"""Export the student (EKNet) to ONNX, optionally with a static int8 copy, and check both.

    python -m util.export --weights runs/student/best.pth --out student.onnx
    python -m util.export --weights final.pth --out student.onnx --int8 --calib-data dataset/MFNet

The ONNX model has one input `thermal` (B, 1, H, W) float32 in [0, 1] and one output `logits`
(B, n_class, H, W), with a dynamic batch dimension. Its metadata (metadata_props) holds network,
n_class, depth, height, width and precision (fp32 or int8). The TorchScript-based exporter
(torch.onnx.export(..., dynamo=False)) is used: the dynamo exporter gives the same graph
numerically but takes about 8x longer and needs onnxscript.
After writing, the file is run with onnxruntime (CPU) against PyTorch on random thermal inputs;
the int8 copy (util/deploy/quantize.py: uint8 activations x int8 per-channel weights, calibration
method and float node groups chosen by measurement here) is compared with the fp32 model on
held-out frames, in argmax agreement and in ms/frame on this machine. Beside the files, NAME.card.json and
NAME.MODEL_CARD.md (util/engine/card.py) say what they are: the network and classes, the source weights
(and their card's sha256), the opset, those agreements and speeds, and each file's sha256.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..data.info import DatasetInfo
from ..data.layout import split_path
from ..data.rosbag import is_bag
from ..engine.card import (
    CARD_JSON,
    CARD_MD,
    check_against_card,
    command_line,
    environment,
    file_entries,
    teacher_facts,
    write_card,
)
from ..options import ArgumentParser, LowHigh, integer, number, one_of
from .agreement import agreement_percent, compare, format_comparison, random_thermal
from .cpu import cpu_info
from .onnxfile import atomic_path, check_new_file, read_metadata, write_metadata
from .quantize import (
    ACTIVATIONS,
    CALIB_METHODS,
    INT8_MIN_AGREEMENT,
    quantize_int8,  # noqa: F401  (the export API: util.deploy.export.quantize_int8)
    tune_int8,
)
from .sources import open_source, spread

OPSETS = range(14, 21)  # scaled_dot_product_attention needs 14; the TorchScript exporter stops at 20
DEFAULT_OPSET = 17


class LogitsOnly(nn.Module):
    """The network with its logits as the only output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def model_metadata(model: nn.Module, info: DatasetInfo, precision: str = "fp32") -> dict[str, str]:
    """What an exported file says of itself: the network's size and its classes (`info`)."""
    if info.n_class != model.n_class:
        raise ValueError(f"the dataset description has {info.n_class} classes, the {type(model).__name__} "
                         f"{model.n_class}")
    return {"network": type(model).__name__, "n_class": str(model.n_class), "depth": str(model.depth),
            "height": str(model.height), "width": str(model.width), "precision": precision,
            "dataset": json.dumps(info.to_dict()),
            "input": "thermal (B, 1, height, width) float32 in [0, 1]", "output": "logits (B, n_class, height, width)"}


def export_onnx(model: nn.Module, path: str | os.PathLike, info: DatasetInfo, opset: int = DEFAULT_OPSET,
                overwrite: bool = False) -> Path:
    """Write `model` (an EKNet, any depth and size; exported in eval mode, in float32 on the CPU) as
    ONNX with its logits as the only output, a dynamic batch dimension and metadata (with its
    classes, `info`: build_from_weights returns them with the model); atomically,
    never over an existing file unless `overwrite`. `model` is left as it was found: every module's
    mode, its weights, device and dtype (a model elsewhere than float32 on the CPU is exported from a copy)."""
    path = Path(path)
    if opset not in OPSETS:
        raise ValueError(f"--opset {opset}: expected {OPSETS.start} to {OPSETS.stop - 1}")
    check_new_file(path, overwrite, "--out")
    metadata = model_metadata(model, info)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
        model = copy.deepcopy(model).cpu().float()  # the caller's model keeps its device and dtype
    modes = {m: m.training for m in model.modules()}
    example = torch.rand(2, 1, model.height, model.width)
    try:
        wrapper = LogitsOnly(model.eval()).eval()  # the exporter restores the wrapper's mode onto the tree
        with atomic_path(path, overwrite) as tmp, warnings.catch_warnings():
            # TracerWarnings come from the input-shape checks (the fixed H and W), not from the batch size.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["thermal"], output_names=["logits"],
                              dynamic_axes={"thermal": {0: "batch"}, "logits": {0: "batch"}})
            write_metadata(tmp, metadata)
    finally:
        for module, training in modes.items():
            module.training = training
    return path


def _mfnet_thermal(data_dir: Path, split: str, n: int) -> list[np.ndarray]:
    from ..data.layout import IMAGE_DIR, load_image_file, read_split

    names = spread(read_split(data_dir, split), n)
    return [load_image_file(data_dir / IMAGE_DIR / f"{name}.png")[..., 3].astype(np.float32) / 255.0 for name in names]


def _own_thermal(path: Path, n: int, thermal_range: Optional[Sequence[float]], topic: Optional[str] = None
                 ) -> list[np.ndarray]:
    """Up to `n` frames spread over a video, an image file, a folder or a ROS bag's thermal topic, read through
    the sources of `--input` (sources.py)."""
    source = open_source(str(path), topic, "--calib-data", need_frames=False, topic_option="--calib-topic")
    out = []
    try:
        for f in source.spread(n, thermal_range):
            if f.thermal is None:
                print(f"skipped: {f.error}", flush=True)
            else:
                out.append(f.thermal)
    finally:
        source.close()
    return out


def calibration_frames(data: str | os.PathLike, height: int, width: int, n_calib: int, n_held: int,
                       thermal_range: Optional[Sequence[float]] = None, topic: Optional[str] = None
                       ) -> tuple[np.ndarray, np.ndarray, str]:
    """Calibration and held-out frames (N, 1, height, width) and where they come from (`topic`: a bag's
    thermal topic, when it has several).

    An MFNet-format folder: thermal of its train split / of its val (else test) split. A folder with a
    train split alone (an unlabeled set, e.g. from `python -m util.convert rosbag`) or a folder, image,
    video or ROS bag (as `--input` reads them, sources.py): its frames, a quarter (at most `n_held`) held out,
    evenly spread."""
    from .predictor import to_model_input

    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--calib-data {data}: no such file or folder")
    held_split = next((s for s in ("val", "test") if split_path(data, s).is_file()), None)
    if split_path(data, "train").is_file() and held_split:
        calib, held = _mfnet_thermal(data, "train", n_calib), _mfnet_thermal(data, held_split, n_held)
        where = f"{len(calib)} train / {len(held)} {held_split} frames of {data}"
    else:
        if split_path(data, "train").is_file():  # an unlabeled set (a robot's recording), or a train split alone
            frames, what = _mfnet_thermal(data, "train", n_calib + n_held), "train frames"
        else:
            frames, what = _own_thermal(data, n_calib + n_held, thermal_range, topic), "frames"
        if len(frames) < 2:
            raise ValueError(f"--calib-data {data}: expected at least 2 readable thermal frames "
                             f"(calibration and held-out), found {len(frames)}")
        held_idx = set(spread(range(len(frames)), min(n_held, max(1, len(frames) // 4))))
        held = [f for i, f in enumerate(frames) if i in held_idx]
        calib = [f for i, f in enumerate(frames) if i not in held_idx][:n_calib]
        where = f"{len(calib)} calibration / {len(held)} held-out {what} of {data}"
    return (np.stack([to_model_input(f, height, width) for f in calib]),
            np.stack([to_model_input(f, height, width) for f in held]), where)


@dataclass(frozen=True)
class ExportOptions:
    """What an export is asked to do: python -m util.export's options as plain values (parse_args gives them)."""
    weights: str
    out: str
    opset: int = DEFAULT_OPSET
    overwrite: bool = False
    int8: bool = False
    int8_out: Optional[str] = None
    calib_data: Optional[str] = None
    calib_topic: Optional[str] = None
    calib_frames: int = 32
    heldout_frames: int = 16
    int8_activations: str = "uint8"
    calib_method: str = "auto"
    keep_float: str = "auto"
    min_agreement: float = INT8_MIN_AGREEMENT
    thermal_range: Optional[Sequence[float]] = None


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
                   "held out), an unlabeled set (e.g. from python -m util.convert rosbag), or a folder, image, "
                   "video or ROS bag of thermal frames (as --input of run_demo_student.py)")
    p.add_argument("--calib-topic", default=None,
                   help="with a ROS bag --calib-data: its thermal image topic (default: the only single-channel one)")
    p.add_argument("--calib-frames", type=integer(1), default=32, help="frames to calibrate on")
    p.add_argument("--heldout-frames", type=integer(1), default=16, help="frames to compare int8 with fp32 on")
    p.add_argument("--int8-activations", type=one_of(ACTIVATIONS), default="uint8",
                   help="uint8 or int8; uint8 (default): uint8 activations x int8 weights, the fast pair of x86 VNNI/AMX "
                        "kernels; int8: symmetric activations, for targets that need them (TensorRT, NPUs, "
                        "Arm) and x86 CPUs without VNNI, where uint8 x int8 kernels can saturate")
    p.add_argument("--calib-method", type=one_of(("auto",) + CALIB_METHODS), default="auto",
                   help="auto, minmax, entropy or percentile: activation ranges; auto: the one whose int8 file agrees best with fp32 on the "
                        "held-out frames")
    p.add_argument("--keep-float", type=one_of(("auto", "none")), default="auto",
                   help="auto or none; auto: leave in float the node groups (transposed convolutions, attention, resizes "
                        "and pools) that run faster unquantised on this machine; none: quantise all")
    p.add_argument("--min-agreement", type=agreement_percent, default=INT8_MIN_AGREEMENT, metavar="PERCENT",
                   help=f"with --keep-float auto, a node group is left in float only if the argmax agreement "
                        f"with fp32 stays at least this (default {100 * INT8_MIN_AGREEMENT:g})")
    p.add_argument("--thermal-range", type=number(), action=LowHigh, default=None,
                   help="fixed raw-value range for 16-bit calibration frames (default: the training data's thermal_range "
                        "when the weights carry one, else per-frame min-max)")
    return p.parse_args(argv)


def check_options(opts: ExportOptions) -> tuple[Path, Optional[Path]]:
    """The output paths; one-line errors for every bad option, before any work."""
    out = Path(opts.out)
    if Path(opts.weights).suffix.lower() == ".onnx":
        raise ValueError(f"--weights {opts.weights}: holds an ONNX model; python -m util.export exports PyTorch "
                         f"weights (best.pth, last.pth, final.pth)")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: expected a file name ending in .onnx")
    check_new_file(out, opts.overwrite, "--out")
    for card in card_files(out):
        check_new_file(card, opts.overwrite, "--out's card")
    if not opts.int8:
        return out, None
    int8_out = Path(opts.int8_out) if opts.int8_out else out.with_name(out.stem + ".int8.onnx")
    if int8_out.resolve() == out.resolve():
        raise ValueError(f"--int8-out {int8_out}: must differ from --out")
    check_new_file(int8_out, opts.overwrite, "--int8-out")
    if int8_out.parent.resolve() != out.parent.resolve():
        for card in card_files(int8_out):
            check_new_file(card, opts.overwrite, "--int8-out's card")
    if not opts.calib_data:
        raise ValueError("--int8 needs --calib-data (an MFNet-format folder or thermal frames)")
    if not Path(opts.calib_data).exists():
        raise FileNotFoundError(f"--calib-data {opts.calib_data}: no such file or folder")
    if opts.calib_topic is not None and not is_bag(opts.calib_data):
        raise ValueError(f"--calib-topic: only with a ROS bag --calib-data (got {opts.calib_data})")
    return out, int8_out


def card_files(onnx_path: Path) -> tuple[Path, Path]:
    """The card of an exported file: NAME.card.json and NAME.MODEL_CARD.md beside NAME.onnx."""
    return onnx_path.with_name(f"{onnx_path.stem}.{CARD_JSON}"), onnx_path.with_name(f"{onnx_path.stem}.{CARD_MD}")


def write_export_cards(opts: ExportOptions, out: Path, int8_out: Optional[Path], model: nn.Module,
                       info: DatasetInfo, result: dict) -> list[Path]:
    """The card of the ONNX files (one per folder they are in), with the checks `run` made."""
    export = {"opset": opts.opset, "onnxruntime_vs_pytorch_random_thermal": result["checks"]}
    if int8_out is not None:
        tuned = result["int8"]
        export["int8"] = {"calibration": result["calibration"], "description": tuned["description"],
                          "vs_fp32_held_out": result["int8_vs_fp32"], "int8_ms_per_frame": tuned["int8_ms"],
                          "fp32_ms_per_frame": tuned["fp32_ms"], "timed_on": cpu_info().describe(),
                          "runtime": "onnxruntime CPU, batch 1"}
    card = {"role": "export", "summary": f"EKNet exported to ONNX by python -m util.export from {opts.weights}",
            "network": {"name": "EKNet", "n_class": model.n_class, "depth": model.depth, "height": model.height,
                        "width": model.width, "input": "thermal (B, 1, height, width) float32 in [0, 1]"},
            "classes": list(info.class_names), "dataset": info.to_dict(), "source": teacher_facts(opts.weights),
            "export": export, "command": command_line(), "environment": environment()}
    written = []
    files = [out] + ([int8_out] if int8_out is not None else [])
    for folder in dict.fromkeys(f.parent for f in files):
        here = [f.name for f in files if f.parent == folder]
        first = next(f for f in files if f.parent == folder)
        written += write_card(folder, {**card, "files": file_entries(folder, here)}, stem=first.stem)
    return written


def run(opts: ExportOptions) -> dict:
    from ..data.frames import frame_scaling
    from ..engine.checkpoint import build_from_weights
    from .backends import OnnxSegmenter, TorchSegmenter

    out, int8_out = check_options(opts)
    check_against_card(opts.weights)
    model, info = build_from_weights(opts.weights, expect="EKNet")
    cfg = model_metadata(model, info)
    print(f"[export] EKNet-{cfg['depth']} {cfg['height']}x{cfg['width']}, {cfg['n_class']} classes, "
          f"from {opts.weights}", flush=True)
    if int8_out is not None:  # every input is read before any output is written
        # own 16-bit frames are scaled as the demo will scale them: --thermal-range, else the training data's range
        calib, held, where = calibration_frames(opts.calib_data, model.height, model.width, opts.calib_frames,
                                                opts.heldout_frames,
                                                frame_scaling(opts.thermal_range, info.thermal_range), opts.calib_topic)
    export_onnx(model, out, info, opts.opset, opts.overwrite)
    print(f"[export] wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {opts.opset})", flush=True)
    torch_seg, fp32 = TorchSegmenter(model, info, "cpu", channels_last=False), OnnxSegmenter(out)
    result = {"out": str(out), "metadata": read_metadata(out), "checks": []}
    for n, batch in ((1, 1), (4, 2)):
        r = compare(torch_seg, fp32, random_thermal(n, model.height, model.width, seed=n), batch)
        print(format_comparison("[export] onnxruntime CPU vs PyTorch, random thermal", r), flush=True)
        result["checks"].append(r)
    if int8_out is not None:
        print(f"[export] int8: calibrating on {where}", flush=True)
        methods = CALIB_METHODS if opts.calib_method == "auto" else (opts.calib_method,)
        try:
            tuned = tune_int8(out, int8_out, calib, held, opts.overwrite, opts.int8_activations, methods,
                              opts.keep_float == "auto", opts.min_agreement,
                              log=lambda line: print(f"[export] {line}", flush=True))
        except BaseException:
            out.unlink(missing_ok=True)  # all outputs or none: the fp32 file written above goes too
            raise
        r = compare(fp32, OnnxSegmenter(int8_out), held, batch_size=1)
        print(f"[export] wrote {int8_out} ({int8_out.stat().st_size / 2**20:.1f} MiB; {tuned['description']})",
              flush=True)
        print(format_comparison("[export] int8 vs fp32 (onnxruntime CPU), held-out frames", r), flush=True)
        if r["agreement"] < opts.min_agreement:
            print(f"[export] note: the int8 file agrees with fp32 on {100 * r['agreement']:.2f}% of the held-out "
                  f"pixels, below {100 * opts.min_agreement:g}% (--min-agreement; run_demo_student.py --backend auto "
                  f"takes int8 files from 97% by default); more --calib-frames may help", flush=True)
        print(f"[export] int8 {tuned['int8_ms']:.1f} ms/frame vs fp32 {tuned['fp32_ms']:.1f} ms/frame "
              f"({tuned['fp32_ms'] / tuned['int8_ms']:.2f}x), onnxruntime CPU, batch 1, on this machine "
              f"({cpu_info().describe()})", flush=True)
        result.update({"int8_out": str(int8_out), "int8_vs_fp32": r, "calibration": where, "int8": tuned})
    result["cards"] = [str(p) for p in write_export_cards(opts, out, int8_out, model, info, result)]
    print(f"[export] model card {result['cards'][1]} (python -m util.card {result['cards'][0]} checks the files)",
          flush=True)
    return result


def main(argv: Optional[list[str]] = None) -> dict:
    opts = ExportOptions(**vars(parse_args(argv)))
    try:
        return run(opts)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
