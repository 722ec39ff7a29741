"""Deployment table of the student (EKNet): depth x backend on the CPU, against the release-equivalent baseline.

Rows: EKNet-18/34/50 x {PyTorch fp32, PyTorch channels-last, onnxruntime fp32, onnxruntime int8},
each with
- parameters (M) and GFLOP per frame: torch.utils.flop_counter.FlopCounterMode on the PyTorch
  model at batch 1, 2 FLOP per multiply-add (convolutions, matmuls, attention; elementwise ops
  are not counted); the onnxruntime rows reuse the PyTorch count;
- ms per frame at batch 1: median of --iters timed passes after --warmup untimed ones;
- peak memory: every row runs in a fresh subprocess, whose peak resident set size (VmHWM) is
  the row's peak: runtime libraries + weights + activations. The onnxruntime rows' processes
  import numpy and onnxruntime only (no torch), as a deployment would. "run delta" is the peak
  during the passes (VmHWM reset after loading) minus the RSS once loaded;
- speed-up over the baseline: EKNet-50, PyTorch fp32, default memory format (what the release
  runs), measured first in the same run (and again last, to show drift on a busy machine).
The models are untrained (random weights, seeded): only speed is measured. The int8 model is a
static QDQ quantisation (util.deploy.export.quantize_int8) calibrated on synthetic frames at the
model size (util.data.synthetic), or on --calib-data.

    python benchmarks/bench_deploy.py                # 480x640; estimated 5-8 min on a 2-core CPU
    python benchmarks/bench_deploy.py --out runs/deploy.json runs/deploy.md
    python benchmarks/bench_deploy.py --height 64 --width 64 --warmup 0 --iters 1   # a smoke test

This module imports only the standard library at the top, so that a row's subprocess loads
nothing but the runtime it measures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (18, 34, 50)
BACKENDS = {  # key: label
    "torch-fp32": "PyTorch fp32",
    "torch-cl": "PyTorch fp32 channels-last",
    "ort-fp32": "onnxruntime fp32",
    "ort-int8": "onnxruntime int8",
}
BASELINE = (50, "torch-fp32")
N_CLASS = 9
ROW_MARK = "BENCH_DEPLOY_ROW "
MIB = 2 ** 20


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
                    help="calibration frames; the int8 speed does not depend on them, and onnxruntime's "
                         "MinMax calibration keeps every activation of every frame in memory "
                         "(about 1.3 GiB per frame for EKNet-50 at 480x640)")
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
    return args


# ----------------------------------------------------------------------------- one row (a subprocess)

def _status_kib(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:  # Linux: writing 5 resets VmHWM (the peak RSS) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_row(spec: dict) -> dict:
    """Load one model in one backend, time it, report times and this process's memory."""
    import numpy as np

    h, w, threads = spec["height"], spec["width"], spec["threads"]
    x = np.random.default_rng(spec["seed"] + 1).random((1, 1, h, w), dtype=np.float32)
    if spec["backend"].startswith("ort-"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(spec["onnx"], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def infer():
            return session.run(None, {name: x})[0]
    else:
        import torch

        sys.path.insert(0, str(ROOT))
        from model import EKNet

        torch.set_num_threads(threads)
        torch.manual_seed(spec["seed"])  # the weights bench_models.build gives, and the ONNX files hold
        model = EKNet(N_CLASS, spec["depth"], h, w, pretrained=False).eval()
        t = torch.from_numpy(x)
        if spec["backend"] == "torch-cl":
            model = model.to(memory_format=torch.channels_last)
            t = t.contiguous(memory_format=torch.channels_last)

        def infer():
            with torch.inference_mode():
                return model(t).logits
    load_peak, loaded = _status_kib("VmHWM"), _status_kib("VmRSS")
    reset = _reset_peak()
    for _ in range(spec["warmup"]):
        infer()
    times = []
    for _ in range(spec["iters"]):
        t0 = time.perf_counter()
        infer()
        times.append(1000.0 * (time.perf_counter() - t0))
    run_peak = _status_kib("VmHWM")
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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s (--row-timeout)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(ROW_MARK)]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": f"exit {proc.returncode}: {err[-1][:200] if err else 'no output'}"}
    return json.loads(lines[-1][len(ROW_MARK):])


# ----------------------------------------------------------------------------- preparing (this process)

def count_model(depth: int, args: argparse.Namespace) -> tuple[object, float, float]:
    """The seeded EKNet (as the rows build it), its parameters (M) and GFLOP per frame at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model import EKNet

    torch.manual_seed(args.seed)
    model = EKNet(N_CLASS, depth, args.height, args.width, pretrained=False).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, args.height, args.width))
    return model, sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 1e9


def calibration(args: argparse.Namespace, work: Path):
    """Calibration frames (N, 1, H, W) and where they come from."""
    from util.deploy.export import calibration_frames

    data = args.calib_data
    if data is None:
        from util.data.synthetic import generate_dataset

        data = generate_dataset(work / "synthetic", n_frames=8, height=args.height, width=args.width, seed=args.seed)
    calib, _, where = calibration_frames(data, args.height, args.width, args.calib_frames, 1)
    if data != args.calib_data:
        where += " (synthetic, generated at the model size)"
    return calib, where


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict, dict, str]:
    """Per depth: parameters, GFLOP and the ONNX files the onnxruntime rows load."""
    from util.deploy.export import export_onnx, quantize_int8

    depths = sorted(set(args.depths) | {BASELINE[0]})
    stats, files, where = {}, {}, "-"
    calib = None
    if "ort-int8" in args.backends:
        log("calibration frames ...")
        calib, where = calibration(args, work)
    for depth in depths:
        log(f"EKNet-{depth}: counting FLOPs ...")
        model, params, gflop = count_model(depth, args)
        stats[depth] = {"params_m": params, "gflop": gflop}
        if depth not in args.depths:
            continue
        if {"ort-fp32", "ort-int8"} & set(args.backends):
            log(f"EKNet-{depth}: exporting ONNX ...")
            fp32 = export_onnx(model, work / f"eknet{depth}.onnx", overwrite=True)
            files[(depth, "ort-fp32")] = str(fp32)
            if "ort-int8" in args.backends:
                log(f"EKNet-{depth}: int8 quantisation ...")
                int8 = quantize_int8(fp32, work / f"eknet{depth}.int8.onnx", calib, overwrite=True)
                files[(depth, "ort-int8")] = str(int8)
        del model
    return stats, files, where


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_deploy {time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- output

COLUMNS = ["model", "backend", "params M", "GFLOP/frame", "ms/frame", "FPS", "speed-up", "peak RSS MiB",
           "run delta MiB", "note"]


def cells(row: dict) -> list[str]:
    def num(v, spec):
        return "-" if v is None else format(v, spec)
    return [f"EKNet-{row['depth']}", row["label"], num(row["params_m"], ".1f"), num(row["gflop"], ".1f"),
            num(row.get("ms"), ".1f"), num(row.get("fps"), ".2f"),
            "-" if row.get("speedup") is None else f"{row['speedup']:.2f}x",
            num(row.get("peak_rss_mib"), ".0f"), num(row.get("run_delta_mib"), ".0f"), row.get("note", "")]


def text_table(header: list[str], rows: list[dict]) -> str:
    body = [cells(r) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(COLUMNS)]
    rule = "-" * (sum(widths) + 2 * (len(COLUMNS) - 1))

    def line(values):
        return "  ".join(v.ljust(wd) if i in (0, 1, 9) else v.rjust(wd)
                         for i, (v, wd) in enumerate(zip(values, widths))).rstrip()
    return "\n".join([rule, *header, rule, line(COLUMNS), *(line(b) for b in body), rule])


def markdown_table(header: list[str], rows: list[dict]) -> str:
    out = [f"- {h}" for h in header] + ["", "| " + " | ".join(COLUMNS) + " |",
                                        "|" + "|".join("---" if i in (0, 1, 9) else "---:"
                                                       for i in range(len(COLUMNS))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def header_lines(args: argparse.Namespace, threads: int, where: str, load_start: float) -> list[str]:
    import onnx
    import onnxruntime
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_models import device_name

    lines = [
        f"CPU: {device_name(torch.device('cpu'))}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"threads: {threads} in every row (torch.set_num_threads; onnxruntime intra_op_num_threads, "
        f"inter_op 1, CPUExecutionProvider)",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, "
        f"python {platform.python_version()}",
        f"input {args.height}x{args.width}, batch 1, {N_CLASS} classes; {args.warmup} warm-up + {args.iters} timed "
        f"passes per row, median ms",
        "weights: untrained (random init, seeded): only speed is measured, not accuracy",
        f"int8: static QDQ (util.deploy.export.quantize_int8), calibrated on {where}",
        "GFLOP: FlopCounterMode on the PyTorch model, 2 FLOP per multiply-add (conv, matmul, attention); "
        "onnxruntime rows reuse it",
        "memory: a fresh subprocess per row; peak RSS = its VmHWM (libraries + weights + activations; the "
        "onnxruntime rows import no torch); run delta = peak during the passes - RSS once loaded",
        f"speed-up: baseline ms / row ms; baseline = EKNet-50 PyTorch fp32, default memory format (release "
        f"equivalent), measured first{'' if args.no_recheck else ' (and re-run last: drift)'}",
    ]
    if hasattr(os, "getloadavg"):
        lines.append(f"1-min load average at start / end: {load_start:.2f} / {os.getloadavg()[0]:.2f} "
                     f"(other processes on these CPUs slow every row)")
    return lines


# ----------------------------------------------------------------------------- main

def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return []
    sys.path.insert(0, str(ROOT))
    import torch

    threads = args.threads or torch.get_num_threads()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    plan = [BASELINE] + [(d, b) for d in args.depths for b in args.backends if (d, b) != BASELINE]
    if not args.no_recheck:
        plan.append(BASELINE)

    with tempfile.TemporaryDirectory(prefix="bench_deploy.") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stats, files, where = prepare(args, work)
        rows: list[dict] = []
        for i, (depth, backend) in enumerate(plan):
            label = BACKENDS[backend]
            note = "baseline" if i == 0 else ("baseline, re-run last" if (depth, backend) == BASELINE else "")
            log(f"row {i + 1}/{len(plan)}: EKNet-{depth} {label} ...")
            spec = {"depth": depth, "backend": backend, "height": args.height, "width": args.width,
                    "seed": args.seed, "threads": threads, "warmup": args.warmup, "iters": args.iters,
                    "onnx": files.get((depth, backend))}
            result = spawn_row(spec, args.row_timeout)
            row = {"depth": depth, "backend": backend, "label": label, **stats[depth], "note": note, **result}
            if "error" in result:
                row["note"] = f"{note + '; ' if note else ''}error: {result['error']}"
            else:
                row["ms"] = statistics.median(result["ms_each"])
                row["fps"] = 1000.0 / row["ms"]
            rows.append(row)
    base_ms = rows[0].get("ms")
    for row in rows:
        row["speedup"] = base_ms / row["ms"] if base_ms and row.get("ms") else None

    header = header_lines(args, threads, where, load_start)
    print(text_table(header, rows))
    for out in args.out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps({"header": header, "args": vars(args), "rows": rows}, indent=2) + "\n")
        else:
            path.write_text(markdown_table(header, rows))
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
