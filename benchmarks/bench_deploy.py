"""Deployment table of the student (EKNet): depth x backend on the CPU, against the release-equivalent baseline.

Rows: EKNet-18/34/50 x {PyTorch fp32, fp32 channels-last, bf16 autocast + channels-last, torch.compile
bf16 + channels-last; onnxruntime fp32, int8 with uint8 activations (util.export's default), int8 with
int8 activations; OpenVINO fp32, bf16 hint, and the uint8 int8 file} (BACKENDS), each with
- parameters (M) and GFLOP per frame: torch.utils.flop_counter.FlopCounterMode on the PyTorch
  model at batch 1, 2 FLOP per multiply-add (convolutions, matmuls, attention; elementwise ops
  are not counted); the onnxruntime rows reuse the PyTorch count;
- ms per frame at batch 1: median of --iters timed passes after --warmup untimed ones;
- peak memory: every row runs in a fresh subprocess, whose peak resident set size (VmHWM) is
  the row's peak: runtime libraries + weights + activations. The onnxruntime rows' processes
  import numpy and onnxruntime only (no torch), as a deployment would. "run delta" is the peak
  during the passes (VmHWM reset after loading) minus the RSS once loaded;
- speed-up over the baseline: EKNet-50, PyTorch fp32, default memory format (what the release
  runs), measured first in the same run (and again last, to show drift on a busy machine);
- GFLOP/s achieved: GFLOP per frame / seconds per frame.
By default the models are untrained (random weights, seeded): only speed is measured. With
`--weights` (a trained student: our checkpoint or a final.pth) and `--data-dir`, the rows run those
weights (at their depth and size) and each row also gets its test mIoU (at the model size: labels
resized nearest) and its argmax agreement with the PyTorch fp32 row on the same frames. The int8
files are static QDQ quantisations (util/deploy/quantize.py) calibrated on synthetic frames at the
model size (util.data.synthetic), on --calib-data, or on the train split of --data-dir; with
--int8-tune the uint8 file is chosen as `python -m util.export --int8` chooses it (calibration
method and float node groups measured here). The header names the CPU and its bf16/VNNI/AMX flags.

    python benchmarks/bench_deploy.py --depths 18    # 480x640; EKNet-18 rows and the baseline
    python benchmarks/bench_deploy.py --out runs/deploy.json runs/deploy.md
    python benchmarks/bench_deploy.py --weights runs/student18/best.pth --data-dir dataset/MFNet --int8-tune
    python benchmarks/bench_deploy.py --height 64 --width 64 --warmup 0 --iters 1   # a smoke test

This module imports only the standard library (and benchmarks/common.py, which does the same) at the top,
so that a row's subprocess loads nothing but the runtime it measures.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import common

# The table's student depths, a choice among model.encoder.RESNET_DEPTHS (not imported here: model loads torch,
# which the onnxruntime rows' subprocesses must not; tests/benchmarks/test_common.py checks they are ResNet depths).
DEPTHS = (18, 34, 50)
BACKENDS = {  # key: label
    "torch-fp32": "PyTorch fp32",
    "torch-cl": "PyTorch fp32 channels-last",
    "torch-bf16": "PyTorch bf16 autocast, channels-last",
    "torch-compile": "PyTorch torch.compile, bf16, channels-last",
    "ort-fp32": "onnxruntime fp32",
    "ort-int8": "onnxruntime int8 (uint8 act.)",
    "ort-int8-s8": "onnxruntime int8 (int8 act.)",
    "ov-fp32": "OpenVINO fp32",
    "ov-bf16": "OpenVINO bf16 hint",
    "ov-int8": "OpenVINO int8 (uint8 act. file)",
}
ONNX_FILE = {"ort-fp32": "fp32", "ov-fp32": "fp32", "ov-bf16": "fp32", "ort-int8": "int8", "ov-int8": "int8",
             "ort-int8-s8": "int8-s8"}  # the ONNX file each ONNX row loads
BASELINE = (50, "torch-fp32")
ROW_MARK = "BENCH_DEPLOY_ROW "


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--height", type=int, default=480, help="input height (a multiple of 32)")
    ap.add_argument("--width", type=int, default=640, help="input width (a multiple of 32)")
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), choices=DEPTHS, help="student depths")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS),
                    help="backends (the baseline, EKNet-50 PyTorch fp32, always runs)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes per row")
    ap.add_argument("--iters", type=int, default=5, help="timed passes per row (batch 1, median reported)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of both runtimes in every row (0: torch's default here, torch.get_num_threads())")
    ap.add_argument("--calib-data", default=None,
                    help="int8 calibration frames: an MFNet-format folder or thermal frames "
                         "(default: synthetic frames generated at the model size)")
    ap.add_argument("--calib-frames", type=int, default=2,
                    help="calibration frames; the int8 speed does not depend on them (the accuracy columns "
                         "do: use more with --data-dir); onnxruntime's calibrator holds every activation of up "
                         "to 4 frames at once (about 1.3 GiB per frame for EKNet-50 at 480x640)")
    ap.add_argument("--int8-tune", action="store_true",
                    help="choose the uint8 int8 file's calibration method and float node groups by measurement, "
                         "as python -m util.export --int8 does (default: MinMax, everything quantised)")
    ap.add_argument("--weights", default=None,
                    help="a trained student (our checkpoint or final.pth): the rows run it at its depth and size "
                         "(--depths, --height, --width are taken from it); with --data-dir, accuracy columns")
    ap.add_argument("--data-dir", default=None,
                    help="MFNet-format folder: with --weights, each row's test mIoU and argmax agreement with "
                         "PyTorch fp32 on its test split (int8 calibrated on its train split)")
    ap.add_argument("--eval-frames", type=int, default=0, help="test frames for the accuracy columns (0: all)")
    ap.add_argument("--no-recheck", action="store_true", help="do not run the baseline again at the end")
    ap.add_argument("--work-dir", default=None,
                    help="keep the ONNX files and calibration frames here (default: a temporary folder, removed)")
    ap.add_argument("--row-timeout", type=float, default=600, help="seconds before a row's subprocess is killed")
    ap.add_argument("--seed", type=int, default=0, help="weights and inputs")
    ap.add_argument("--out", nargs="+", default=[], metavar="PATH",
                    help="also write the table: .json (header and rows) and/or .md (markdown)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one row, as JSON
    args = ap.parse_args(argv)
    if args.worker is None:
        if args.height % 32 or args.width % 32 or min(args.height, args.width) < 32:
            ap.error("--height and --width must be positive multiples of 32")
        if args.iters < 1 or args.warmup < 0 or args.calib_frames < 1 or args.threads < 0:
            ap.error("--iters and --calib-frames must be at least 1, --warmup and --threads at least 0")
        for out in args.out:
            if Path(out).suffix.lower() not in (".json", ".md"):
                ap.error(f"--out {out}: expected a .json or .md file name")
        if args.data_dir and not args.weights:
            ap.error("--data-dir needs --weights (the accuracy of untrained weights means nothing)")
        if args.weights and not Path(args.weights).is_file():
            ap.error(f"--weights {args.weights}: no such file")
        if args.data_dir and not (Path(args.data_dir) / "test.txt").is_file():
            ap.error(f"--data-dir {args.data_dir}: expected an MFNet-format folder with test.txt")
        if args.eval_frames < 0:
            ap.error("--eval-frames must be at least 0")
    return args


# ----------------------------------------------------------------------------- one row (a subprocess)

def _inference(spec: dict):
    """The row's runtime and model, loaded: a function from a (1, 1, H, W) float32 batch to logits (NumPy)."""
    import numpy as np

    backend, h, w, threads = spec["backend"], spec["height"], spec["width"], spec["threads"]
    if backend.startswith("ort-"):
        from util.deploy.runtimes import import_onnxruntime  # imports no torch

        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(spec["onnx"], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if backend.startswith("ov-"):
        from util.deploy.runtimes import import_openvino, openvino_config

        core = import_openvino().Core()
        model = core.read_model(spec["onnx"])
        model.reshape([1, 1, h, w])
        compiled = core.compile_model(model, "CPU", openvino_config("bf16" if backend == "ov-bf16" else "fp32",
                                                                    threads))
        output = compiled.output(0)
        return lambda x: np.asarray(compiled(x)[output])
    import torch

    torch.set_num_threads(threads)
    if spec.get("weights"):
        from util.engine.checkpoint import build_from_weights

        model = build_from_weights(spec["weights"], expect="EKNet").model.eval()
    else:  # the weights every benchmark gives the seed, and the ONNX files hold
        model = common.random_model("student", spec["depth"], h, w, spec["seed"]).eval()
    channels_last = backend != "torch-fp32"
    bf16 = backend in ("torch-bf16", "torch-compile")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if backend == "torch-compile" else model

    def infer(x):
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return forward(t).logits.float().numpy()
    return infer


def run_row(spec: dict) -> dict:
    """Load one model in one backend, time it, report times and this process's memory; with
    spec["eval_x"], also save its class ids on those frames to spec["pred_out"]."""
    import numpy as np

    x = np.random.default_rng(spec["seed"] + 1).random((1, 1, spec["height"], spec["width"]), dtype=np.float32)
    infer = _inference(spec)
    load_peak, loaded = common.status_kib("VmHWM"), common.status_kib("VmRSS")
    reset = common.reset_peak_rss()
    warmup = max(spec["warmup"], 1 if spec["backend"] == "torch-compile" else 0)  # compiling is not timed
    times = common.time_calls(lambda: infer(x), warmup, spec["iters"])
    run_peak = common.status_kib("VmHWM")
    if spec.get("eval_x"):
        frames = np.load(spec["eval_x"], mmap_mode="r")
        preds = [infer(np.ascontiguousarray(frames[i:i + 1])).argmax(1)[0].astype(np.uint8) for i in range(len(frames))]
        np.save(spec["pred_out"], np.stack(preds))
    peak = max(load_peak or 0, run_peak or 0) or None
    return {"ms_each": times, "peak_rss_mib": peak / 1024 if peak else None,
            "run_delta_mib": (run_peak - loaded) / 1024 if reset and run_peak and loaded else None,
            "torch_imported": "torch" in sys.modules}


def worker_main(spec_json: str) -> None:
    result = run_row(json.loads(spec_json))
    print(ROW_MARK + json.dumps(result), flush=True)


def spawn_row(spec: dict, timeout: float) -> dict:
    """Run one row in a fresh interpreter; its result, or {"error": ...}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=common.ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s (--row-timeout)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(ROW_MARK)]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": f"exit {proc.returncode}: {err[-1][:200] if err else 'no output'}"}
    return json.loads(lines[-1][len(ROW_MARK):])


# ----------------------------------------------------------------------------- preparing (this process)

def count_model(depth: int, args: argparse.Namespace, model=None) -> tuple[object, float, float]:
    """The seeded EKNet (as the rows build it; or `model`), its parameters (M) and GFLOP per frame at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if model is None:
        model = common.random_model("student", depth, args.height, args.width, args.seed).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, args.height, args.width))
    return model, sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 1e9


def calibration(args: argparse.Namespace, work: Path):
    """Calibration and held-out frames (N, 1, H, W) and where they come from."""
    from util.deploy.export import calibration_frames

    data = args.calib_data or args.data_dir
    if data is None:
        from util.data.synthetic import generate_dataset

        data = generate_dataset(work / "synthetic", n_frames=8, height=args.height, width=args.width, seed=args.seed)
    calib, held, where = calibration_frames(data, args.height, args.width, args.calib_frames, 2)
    if data not in (args.calib_data, args.data_dir):
        where += " (synthetic, generated at the model size)"
    return calib, held, where


def eval_frames(args: argparse.Namespace, work: Path):
    """The test split of --data-dir at the model size: thermal saved for the rows, labels kept here."""
    import numpy as np

    from util.data.dataset import MFDataset
    from util.data.info import load_dataset_info

    info = load_dataset_info(args.data_dir)
    ds = MFDataset(args.data_dir, "test", args.height, args.width, edges=False, n_class=info.n_class)
    n = len(ds) if not args.eval_frames else min(args.eval_frames, len(ds))
    items = [ds[i] for i in range(n)]
    np.save(work / "eval_x.npy", np.stack([it["image"][3:4].numpy() for it in items]).astype(np.float32))
    return str(work / "eval_x.npy"), np.stack([it["label"].numpy() for it in items]), info


def write_int8(args: argparse.Namespace, fp32: Path, out: Path, calib, held, activations: str) -> Path:
    from util.deploy.quantize import quantize_int8, tune_int8

    if args.int8_tune and activations == "uint8":
        tune_int8(fp32, out, calib, held, overwrite=True, log=log)
        return out
    return quantize_int8(fp32, out, calib, overwrite=True, activations=activations)


def prepare(args: argparse.Namespace, work: Path, loaded=None) -> tuple[dict, dict, str]:
    """Per depth: parameters, GFLOP and the ONNX files the ONNX rows load (`loaded`: the --weights student
    and its classes, for its depth)."""
    from util.data.info import info_for_classes
    from util.deploy.export import export_onnx

    depths = sorted(set(args.depths) | {BASELINE[0]})
    stats, files, where = {}, {}, "-"
    calib = held = None
    kinds = {ONNX_FILE[b] for b in args.backends if b in ONNX_FILE}
    if kinds & {"int8", "int8-s8"}:
        log("calibration frames ...")
        calib, held, where = calibration(args, work)
    for depth in depths:
        log(f"EKNet-{depth}: counting FLOPs ...")
        trained = loaded.model if loaded is not None and depth in args.depths else None
        model, params, gflop = count_model(depth, args, trained)
        stats[depth] = {"params_m": params, "gflop": gflop}
        if depth not in args.depths or not kinds:
            continue
        log(f"EKNet-{depth}: exporting ONNX ...")
        info = loaded.info if trained is not None else info_for_classes(model.n_class)  # random weights: generic
        fp32 = export_onnx(model, work / f"eknet{depth}.onnx", info, overwrite=True)
        files[(depth, "fp32")] = str(fp32)
        for kind, activations in (("int8", "uint8"), ("int8-s8", "int8")):
            if kind in kinds:
                log(f"EKNet-{depth}: int8 quantisation, {activations} activations ...")
                files[(depth, kind)] = str(write_int8(args, fp32, work / f"eknet{depth}.{kind}.onnx", calib, held,
                                                      activations))
        del model
    return stats, files, where


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_deploy {time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- output

COLUMNS = ["model", "backend", "params M", "GFLOP/frame", "ms/frame", "FPS", "speed-up", "GFLOP/s", "peak RSS MiB",
           "run delta MiB", "test mIoU %", "agreement %", "note"]
LEFT = (0, 1, len(COLUMNS) - 1)  # left-justified columns


def cells(row: dict) -> list[str]:
    def num(v, spec, scale=1.0):
        return "-" if v is None else format(scale * v, spec)
    return [f"EKNet-{row['depth']}", row["label"], num(row["params_m"], ".1f"), num(row["gflop"], ".1f"),
            num(row.get("ms"), ".1f"), num(row.get("fps"), ".2f"),
            "-" if row.get("speedup") is None else f"{row['speedup']:.2f}x", num(row.get("gflops"), ".0f"),
            num(row.get("peak_rss_mib"), ".0f"), num(row.get("run_delta_mib"), ".0f"),
            num(row.get("miou"), ".2f", 100.0), num(row.get("agreement"), ".2f", 100.0), row.get("note", "")]


def text_table(header: list[str], rows: list[dict]) -> str:
    return common.text_table(header, COLUMNS, [cells(r) for r in rows], LEFT)


def markdown_table(header: list[str], rows: list[dict]) -> str:
    out = [f"- {h}" for h in header] + ["", "| " + " | ".join(COLUMNS) + " |",
                                        "|" + "|".join("---" if i in LEFT else "---:"
                                                       for i in range(len(COLUMNS))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def header_lines(args: argparse.Namespace, threads: int, where: str, load_start: float, n_class: int,
                 eval_frames: Optional[int] = None) -> list[str]:
    import onnx
    import onnxruntime
    import torch

    from util.deploy.cpu import cpu_info
    from util.deploy.runtimes import import_openvino

    try:
        openvino = f", openvino {import_openvino().__version__.split('-')[0]}"
    except ImportError:
        openvino = ", no openvino"
    cpu = cpu_info()
    if args.weights:
        weights = (f"weights: {args.weights} (EKNet-{args.depths[0]}); the baseline untrained (random, seeded)"
                   + (f"; accuracy on {eval_frames} test frames of {args.data_dir} at the model size (labels "
                      f"resized nearest), agreement = argmax agreement with PyTorch fp32" if eval_frames else ""))
    else:
        weights = "weights: untrained (random init, seeded): only speed is measured, not accuracy"
    lines = [
        f"CPU: {cpu.describe()} (native bf16: {'yes' if cpu.native_bf16 else 'no'}, VNNI: "
        f"{'yes' if cpu.vnni else 'no'}, AMX: {'yes' if cpu.amx else 'no'}); torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}",
        f"threads: {threads} in every row (torch.set_num_threads; onnxruntime intra_op_num_threads, "
        f"inter_op 1; OpenVINO INFERENCE_NUM_THREADS, latency hint)",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}{openvino}, "
        f"python {platform.python_version()}",
        f"input {args.height}x{args.width}, batch 1, {n_class} "
        f"classes; {args.warmup} warm-up + {args.iters} timed passes per row, median ms (torch.compile: "
        f"compiled in an untimed pass)",
        weights,
        f"int8: static QDQ, int8 per-channel weights, uint8 or int8 activations (util/deploy/quantize.py"
        f"{', uint8 file tuned as util.export does' if args.int8_tune else ', MinMax'}), calibrated on {where}; "
        f"OpenVINO int8 runs the uint8 file",
        "GFLOP: FlopCounterMode on the PyTorch model, 2 FLOP per multiply-add (conv, matmul, attention); "
        "the ONNX rows reuse it; GFLOP/s = GFLOP per frame / s per frame",
        "memory: a fresh subprocess per row; peak RSS = its VmHWM (libraries + weights + activations; the "
        "onnxruntime and OpenVINO rows import no torch); run delta = peak during the passes - RSS once loaded",
        f"speed-up: baseline ms / row ms; baseline = EKNet-50 PyTorch fp32, default memory format (release "
        f"equivalent), measured first{'' if args.no_recheck else ' (and re-run last: drift)'}",
    ]
    load = common.load_line(load_start)
    if load:
        lines.append(load)
    return lines


# ----------------------------------------------------------------------------- main

def use_weights(args: argparse.Namespace):
    """--weights: the student and its classes (build_from_weights); the rows run it at its own depth and size
    (--depths, --height and --width follow it)."""
    from util.engine.checkpoint import build_from_weights

    loaded = build_from_weights(args.weights, expect="EKNet")
    model = loaded.model.eval()
    args.depths, args.height, args.width = [model.depth], model.height, model.width
    if args.data_dir and "torch-fp32" not in args.backends:
        args.backends = ["torch-fp32", *args.backends]  # the reference of the agreement column
    log(f"--weights {args.weights}: EKNet-{model.depth} at {args.height}x{args.width}")
    return loaded


def add_accuracy(rows: list[dict], labels, info, work: Path) -> None:
    """Each row's test mIoU and argmax agreement with the PyTorch fp32 row of its depth (from its saved class ids)."""
    import numpy as np

    from util.engine.metrics import metrics_from_confusion

    preds = {id(r): work / r["pred_file"] for r in rows if r.get("pred_file") and (work / r["pred_file"]).is_file()}
    reference = {r["depth"]: np.load(preds[id(r)]) for r in rows if r["backend"] == "torch-fp32" and id(r) in preds}
    n = info.n_class
    for row in rows:
        if id(row) not in preds:
            continue
        pred = np.load(preds[id(row)]).astype(np.int64)
        valid = (labels >= 0) & (labels < n)
        mat = np.bincount(n * labels[valid] + pred[valid], minlength=n * n).reshape(n, n)
        row["miou"] = metrics_from_confusion(mat, info.ignore_index)["miou"]
        if row["depth"] in reference:
            row["agreement"] = float((pred == reference[row["depth"]]).mean())


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return []
    import torch

    from util.data.mfnet import N_CLASS

    loaded = use_weights(args) if args.weights else None
    threads = args.threads or torch.get_num_threads()
    load_start = common.load_average()
    plan = [BASELINE] + [(d, b) for d in args.depths for b in args.backends if (d, b) != BASELINE]
    if not args.no_recheck:
        plan.append(BASELINE)

    with tempfile.TemporaryDirectory(prefix="bench_deploy.") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stats, files, where = prepare(args, work, loaded)
        eval_x, labels, info = eval_frames(args, work) if args.data_dir else (None, None, None)
        rows: list[dict] = []
        for i, (depth, backend) in enumerate(plan):
            label = BACKENDS[backend]
            note = "baseline" if i == 0 else ("baseline, re-run last" if (depth, backend) == BASELINE else "")
            log(f"row {i + 1}/{len(plan)}: EKNet-{depth} {label} ...")
            ours = args.weights and depth in args.depths
            spec = {"depth": depth, "backend": backend, "height": args.height, "width": args.width,
                    "seed": args.seed, "threads": threads, "warmup": args.warmup, "iters": args.iters,
                    "onnx": files.get((depth, ONNX_FILE.get(backend))), "weights": args.weights if ours else None,
                    "eval_x": eval_x if ours else None, "pred_out": str(work / f"pred{i}.npy")}
            result = spawn_row(spec, args.row_timeout)
            row = {"depth": depth, "backend": backend, "label": label, **stats[depth], "note": note, **result}
            if "error" in result:
                row["note"] = f"{note + '; ' if note else ''}error: {result['error']}"
            else:
                row["ms"] = statistics.median(result["ms_each"])
                row["fps"] = 1000.0 / row["ms"]
                row["gflops"] = row["gflop"] / (row["ms"] / 1000.0)
                row["pred_file"] = f"pred{i}.npy" if spec["eval_x"] else None
            rows.append(row)
        if eval_x:
            add_accuracy(rows, labels, info, work)
    base_ms = rows[0].get("ms")
    for row in rows:
        row["speedup"] = base_ms / row["ms"] if base_ms and row.get("ms") else None

    header = header_lines(args, threads, where, load_start, loaded.model.n_class if loaded else N_CLASS,
                          None if labels is None else len(labels))
    print(text_table(header, rows))
    for out in args.out:
        path = Path(out)
        if path.suffix.lower() == ".json":
            common.write_results(path, header, {k: v for k, v in vars(args).items() if k != "trained"}, rows)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            from util.files import atomic_write

            atomic_write(path, lambda f: f.write(markdown_table(header, rows)))
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
