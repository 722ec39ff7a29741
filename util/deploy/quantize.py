"""Static int8 copies of an exported student (onnxruntime's QDQ quantisation), tuned by measurement.

Default form: uint8 activations (asymmetric) x int8 per-channel weights (symmetric), the operand
pair of x86 int8 dot-product instructions (VNNI, AMX-INT8: unsigned x signed bytes), so that
onnxruntime runs its fast u8s8 kernels. The signed form (int8 activations, `activations="int8"`)
is the right one for targets that need symmetric activations (TensorRT, most NPUs/DSPs, many Arm
int8 kernels) and on x86 CPUs without VNNI, where onnxruntime's u8s8 kernels (VPMADDUBSW) can
saturate and lose accuracy; on VNNI/AMX CPUs it is slower (more conversions around each kernel).

`tune_int8` measures on the machine it runs on: it picks the calibration method (MinMax,
Entropy, Percentile) with the best argmax agreement with fp32 on held-out frames, then leaves
in float the groups of nodes (KEEP_FLOAT_GROUPS) that run faster unquantised, as long as the
agreement stays at `min_agreement` or above.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..data.owned import scratch_dir

ACTIVATIONS = ("uint8", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")
# node groups that may cost more quantised than in float on some CPU (measured by tune_int8)
KEEP_FLOAT_GROUPS = {
    "transposed convolutions": ("ConvTranspose",),  # the decoder's upsampling
    "attention": ("MatMul", "Softmax"),  # BotNet's self-attention (MHSA)
    "resizes and pools": ("Resize", "MaxPool", "AveragePool"),
}
INT8_MIN_AGREEMENT = 0.97


CALIB_CHUNK = 4  # frames whose activations the calibrator holds at once (480x640: hundreds of MiB each)


class _FrameReader:
    """onnxruntime CalibrationDataReader over frames (N, 1, H, W), one at a time; `set_range` lets
    quantize_static calibrate chunk by chunk (CalibStridedMinMax), which bounds its memory."""

    def __init__(self, input_name: str, frames: np.ndarray):
        self.input_name, self.frames = input_name, frames
        self.set_range(0, len(frames))

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(range(start_index, min(end_index, len(self.frames))))

    def get_next(self) -> Optional[dict]:
        i = next(self._items, None)
        return None if i is None else {self.input_name: self.frames[i:i + 1]}


def calib_stride(n: int) -> int:
    """The largest chunk of at most CALIB_CHUNK frames that divides n (onnxruntime needs a divisor)."""
    return max(d for d in range(1, CALIB_CHUNK + 1) if n % d == 0)


def describe_int8(activations: str, method: str, keep_float: Sequence[str]) -> str:
    """e.g. 'QDQ, uint8 activations x int8 per-channel weights, minmax calibration, float: attention'."""
    return (f"QDQ, {activations} activations x int8 per-channel weights, {method} calibration"
            + (f", float: {', '.join(keep_float)}" if keep_float else ""))


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib_frames: np.ndarray,
                  overwrite: bool = False, activations: str = "uint8", method: str = "minmax",
                  keep_float: Sequence[str] = ()) -> Path:
    """Static int8 quantisation (QDQ, per-channel int8 weights; `activations` uint8 or int8) of an
    exported fp32 model, calibrated on `calib_frames` float32 (N, 1, H, W) in [0, 1] with `method`
    (one of CALIB_METHODS); the node groups named in `keep_float` (keys of KEEP_FLOAT_GROUPS) stay float."""
    from .runtimes import import_onnxruntime

    import_onnxruntime()  # first: it keeps onnxruntime's telemetry off, which is read when the library loads
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnxfile import atomic_path, check_new_file, read_metadata, write_metadata
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    check_new_file(out_path, overwrite, "--int8-out")
    if activations not in ACTIVATIONS:
        raise ValueError(f"--int8-activations {activations}: expected one of {', '.join(ACTIVATIONS)}")
    if method not in CALIB_METHODS:
        raise ValueError(f"--calib-method {method}: expected one of {', '.join(CALIB_METHODS)}")
    unknown = [g for g in keep_float if g not in KEEP_FLOAT_GROUPS]
    if unknown:
        raise ValueError(f"keep_float {unknown[0]!r}: expected some of {', '.join(KEEP_FLOAT_GROUPS)}")
    if len(calib_frames) == 0:
        raise ValueError("quantize_int8: no calibration frames")
    info = {"activations": activations, "weights": "int8 per-channel", "format": "QDQ", "calibration": method,
            "keep_float": list(keep_float)}
    metadata = {**read_metadata(fp32_path), "precision": "int8", "int8": json.dumps(info)}
    float_ops = {op for g in keep_float for op in KEEP_FLOAT_GROUPS[g]}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_path) as work, atomic_path(out_path, overwrite) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))  # folds BatchNorms into convolutions, infers shapes
        graph = onnx.load(str(pre)).graph
        # the BatchNorms left (after pooling and in TEM's MLP) stay float: per-channel int8 does not fit them
        exclude = [n.name for n in graph.node if n.op_type == "BatchNormalization" or n.op_type in float_ops]
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            quantize_static(str(pre), str(tmp), _FrameReader(graph.input[0].name, calib_frames.astype(np.float32)),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                              "percentile": CalibrationMethod.Percentile}[method],
                            calibration_providers=["CPUExecutionProvider"],
                            extra_options={"CalibStridedMinMax": calib_stride(len(calib_frames))})
        write_metadata(tmp, metadata)
    return out_path


def tune_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: np.ndarray, held: np.ndarray,
              overwrite: bool = False, activations: str = "uint8", methods: Sequence[str] = CALIB_METHODS,
              search_float: bool = True, min_agreement: float = INT8_MIN_AGREEMENT, reps: int = 5,
              log: Callable[[str], None] = print) -> dict:
    """Write the int8 copy that measures best here (see the module's docstring) and report the trials:
    {"method", "keep_float", "agreement", "int8_ms", "fp32_ms", "methods": {m: agreement},
    "groups": {group: ms with it in float}, "description"}."""
    from .agreement import compare, ms_per_frame
    from .backends import OnnxSegmenter
    from .onnxfile import atomic_path, check_new_file

    out_path = Path(out_path)
    check_new_file(out_path, overwrite, "--int8-out")
    fp32, reference = OnnxSegmenter(fp32_path), {}

    def fp32_logits(x: np.ndarray) -> np.ndarray:  # each held-out frame's fp32 logits, computed once
        key = x.tobytes()
        if key not in reference:
            reference[key] = fp32(x)
        return reference[key]

    def agreement(seg: OnnxSegmenter) -> float:
        return compare(fp32_logits, seg, held)["agreement"]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_path) as work:  # a kill leaves it: the next run for out_path removes it
        def trial(method: str, keep: Sequence[str]) -> tuple[Path, OnnxSegmenter]:
            path = Path(work) / f"trial{len(os.listdir(work))}.onnx"
            quantize_int8(fp32_path, path, calib, True, activations, method, keep)
            return path, OnnxSegmenter(path)

        scores, files = {}, {}
        for method in methods:
            files[method] = trial(method, ())
            scores[method] = agreement(files[method][1])
            log(f"[int8] {method} calibration: argmax agreement {100 * scores[method]:.2f}% with fp32 on "
                f"{len(held)} held-out frame(s)")
        method = max(methods, key=lambda m: scores[m])  # ties: the first listed
        best_path, best_seg = files[method]
        best_keep, best_agree, groups = [], scores[method], {}
        if not search_float:
            fp32_ms, best_ms = ms_per_frame([fp32, best_seg], held, reps)
        else:
            # keeping nodes in float loses no accuracy but for rounding noise: a group may go back to float
            # when the agreement stays at least min_agreement (or, where the all-int8 file is already below
            # that, at most 0.1 point below the all-int8 file's)
            floor = min(min_agreement, best_agree - 0.001)
            tried = {group: trial(method, (group,)) for group in KEEP_FLOAT_GROUPS}
            fp32_ms, best_ms, *group_ms = ms_per_frame([fp32, best_seg, *(seg for _, seg in tried.values())],
                                                       held, reps)
            log(f"[int8] {method}, all quantised: {best_ms:.1f} ms/frame (fp32 {fp32_ms:.1f})")
            helped = {}
            for (group, (path, seg)), ms in zip(tried.items(), group_ms):
                groups[group], agree = ms, agreement(seg)
                faster = ms < 0.97 * best_ms and agree >= floor  # 3%: more than timing noise
                log(f"[int8] {group} in float: {ms:.1f} ms/frame, agreement {100 * agree:.2f}%"
                    + (" (faster: kept in float)" if faster else ""))
                if faster:
                    helped[group] = (path, seg, ms, agree)
            if len(helped) > 1:  # each helped alone: all of them together, timed against each alone
                path, seg = trial(method, list(helped))
                union_ms, *alone_ms = ms_per_frame([seg, *(v[1] for v in helped.values())], held, reps)
                agree = agreement(seg)
                if agree >= floor and union_ms < min(alone_ms):
                    best_path, best_seg, best_ms, best_keep, best_agree = path, seg, union_ms, list(helped), agree
                    helped = {}
                else:  # the union is no better than the best single group
                    fastest = list(helped)[alone_ms.index(min(alone_ms))]
                    helped = {fastest: helped[fastest]}
            if len(helped) == 1:
                (group, (path, seg, ms, agree)), = helped.items()
                best_path, best_seg, best_ms, best_keep, best_agree = path, seg, ms, [group], agree
        with atomic_path(out_path, overwrite) as tmp:  # fsynced; out_path checked again just before
            os.replace(best_path, tmp)
    return {"method": method, "keep_float": best_keep, "agreement": best_agree, "int8_ms": best_ms,
            "fp32_ms": fp32_ms, "methods": scores, "groups": groups, "activations": activations,
            "description": describe_int8(activations, method, best_keep)}
