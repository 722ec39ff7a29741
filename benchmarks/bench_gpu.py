"""One-call GPU benchmark of CENet (teacher) and EKNet (student): inference and training, against the release.

Rows, in this order (a global time budget skips the rest once spent):
- inference at batch 1, per network (student first): fp32 release-equivalent (eager, contiguous,
  cudnn.benchmark off, torch's default TF32 settings), fp32, bf16 autocast, channels-last,
  bf16 + channels-last (these four with cudnn.benchmark on);
- one training step at --batch-size with the trainers' real tasks (trainTeacher.TeacherTask: CE +
  edge BCE; trainStudent.DistillTask: the four CEKD terms against a frozen CENet, whose forward
  is timed too), SGD: fp32 release-equivalent, --amp bf16, --amp fp16 with a GradScaler,
  bf16 + channels-last;
- last, torch.compile inference rows (fp32; bf16 + channels-last), where compilation works.
Each row: ms per frame (inference) or per step (training), median over the timed passes, each
timed with CUDA events and a synchronisation; frames or images/s; speed-up over its group's
release-equivalent row; peak torch.cuda.max_memory_allocated (reset before the row: weights,
optimiser state, activations, not the allocator's cache); for inference, max |logits - fp32
release logits| and argmax agreement on the same input and weights. A failing row shows its error.
Weights are random (seeded): speed does not depend on them.

    python benchmarks/bench_gpu.py                                   # 480x640, ResNet-50, under 8 min on an H100
    python benchmarks/bench_gpu.py --json runs/bench_gpu.json --budget-s 300

Without a CUDA device it stops at once ("bench_gpu.py needs a CUDA GPU"). `--cpu-dry-run`
(tests only) runs the same rows on the CPU, to check the code paths at a tiny size.
"""
from __future__ import annotations

import argparse
import copy
import gc
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

import common
from model.encoder import RESNET_DEPTHS

NEEDS_GPU = "bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)"


@dataclass(frozen=True)
class Row:
    phase: str          # "infer" or "train"
    network: str        # "student" or "teacher"
    setting: str        # what the table shows
    amp: str = "none"   # util.engine.loop.autocast's names: none, bf16, fp16
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False
    baseline: bool = False  # the release-equivalent row of its (phase, network) group
    graphs: bool = False    # inference replayed as CUDA graphs (util.deploy.cudagraph, as --backend cudagraph)
    depth: Optional[int] = None  # another ResNet depth than --depth (the compact student's rows)
    fused_sgd: bool = False
    epoch: bool = False     # one real trainer epoch, loader included (trainTeacher.py on synthetic frames)


GRAPH_ROWS = [("CUDA graphs fp32 + channels-last", "none"), ("CUDA graphs bf16 + channels-last", "bf16"),
              ("CUDA graphs fp16 + channels-last", "fp16")]


def plan(networks: list[str], train: bool, compile_rows: bool, small_depth: int = 18, epoch: bool = True
         ) -> list[Row]:
    infer = [("fp32, release-equivalent", "none", False, False, True), ("fp32", "none", False, True, False),
             ("bf16 autocast", "bf16", False, True, False), ("channels-last", "none", True, True, False),
             ("bf16 + channels-last", "bf16", True, True, False)]
    steps = [("fp32, release-equivalent", "none", False, False, True), ("bf16 autocast", "bf16", False, True, False),
             ("fp16 autocast + GradScaler", "fp16", False, True, False),
             ("bf16 + channels-last", "bf16", True, True, False)]
    rows = []
    for net in networks:
        rows += [Row("infer", net, s, a, cl, b, baseline=base) for s, a, cl, b, base in infer]
        rows += [Row("infer", net, s, a, True, False, graphs=True) for s, a in GRAPH_ROWS]
        if net == "student" and small_depth:
            rows += [Row("infer", net, f"ResNet-{small_depth}: {s}", a, True, False, graphs=True, depth=small_depth)
                     for s, a in GRAPH_ROWS[1:]]
        if train:
            rows += [Row("train", net, s, a, cl, b, baseline=base) for s, a, cl, b, base in steps]
            rows.append(Row("train", net, "bf16 + channels-last + fused SGD", "bf16", True, True, fused_sgd=True))
    if train and compile_rows:
        for net in networks:
            rows.append(Row("train", net, "compile + bf16 + channels-last + fused SGD (--fast)", "bf16", True, True,
                            compile=True, fused_sgd=True))
    if train and epoch and "teacher" in networks:
        rows += [Row("train", "teacher", "real epoch, fp32 (trainTeacher.py, loader included)", epoch=True),
                 Row("train", "teacher", "real epoch, --fast (trainTeacher.py, loader included)", "bf16", True,
                     compile=compile_rows, fused_sgd=True, epoch=True)]
    if compile_rows:
        for net in networks:
            rows += [Row("infer", net, "compile fp32", compile=True),
                     Row("infer", net, "compile bf16 + channels-last", "bf16", True, compile=True)]
    return rows


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--height", type=int, default=480, help="input height (a multiple of 32)")
    ap.add_argument("--width", type=int, default=640, help="input width (a multiple of 32)")
    ap.add_argument("--depth", type=int, default=50, choices=RESNET_DEPTHS, help="ResNet depth")
    ap.add_argument("--networks", nargs="+", default=["student", "teacher"], choices=("student", "teacher"))
    ap.add_argument("--warmup", type=int, default=10, help="untimed inference passes per row")
    ap.add_argument("--iters", type=int, default=50, help="timed inference passes per row (batch 1)")
    ap.add_argument("--train-warmup", type=int, default=3, help="untimed training steps per row")
    ap.add_argument("--train-iters", type=int, default=10, help="timed training steps per row")
    ap.add_argument("--batch-size", type=int, default=2, help="training batch size (the release's: 2)")
    ap.add_argument("--student-loss", default="distill", choices=("distill", "gt"),
                    help="distill: trainStudent.DistillTask (frozen teacher forward timed too); "
                         "gt: trainStudent.SupervisedTask (CE on labels)")
    ap.add_argument("--no-train", action="store_true", help="inference rows only")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--small-depth", type=int, default=18, choices=(0, *RESNET_DEPTHS),
                    help="also the CUDA-graph rows of a student of this depth (0: none)")
    ap.add_argument("--no-epoch", action="store_true", help="skip the real trainer epoch rows")
    ap.add_argument("--epoch-steps", type=int, default=30, help="training steps of a real epoch row")
    ap.add_argument("--budget-s", type=float, default=400,
                    help="no row starts after this many seconds (counted from the CUDA check; skipped rows are listed)")
    ap.add_argument("--compile-reserve-s", type=float, default=180,
                    help="a torch.compile row starts only while this much of the budget is left")
    ap.add_argument("--seed", type=int, default=0, help="weights and inputs")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the header and rows here")
    ap.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)  # tests: the rows on the CPU
    args = ap.parse_args(argv)
    if args.iters < 1 or args.train_iters < 1 or args.warmup < 0 or args.train_warmup < 0:
        ap.error("--iters and --train-iters must be at least 1, the warm-ups at least 0")
    if args.height % 32 or args.width % 32 or min(args.height, args.width) < 32:
        ap.error("--height and --width must be positive multiples of 32")
    if args.batch_size < 2 and "student" in args.networks and not args.no_train:
        ap.error("--batch-size must be at least 2 to train the student (TEM's BatchNorm1d needs 2 samples)")
    return args


# ----------------------------------------------------------------------------- timing

def timed_ms(fn, device: torch.device) -> float:
    """Milliseconds of one call: CUDA events around it and a synchronisation (perf_counter on the CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    return common.call_ms(fn)


def row_model(base: nn.Module, row: Row, device: torch.device) -> nn.Module:
    """A copy of the CPU base network on the device, in the row's memory format."""
    return common.for_mode(base, row.channels_last).to(device)


def run_infer(row: Row, bases: dict, args, device: torch.device, refs: dict, memory) -> dict:
    from util.data.info import MFNET
    from util.deploy.backends import TorchSegmenter
    from util.engine.loop import autocast

    model = row_model(bases[(row.network, row.depth or args.depth)], row, device).eval()
    x = common.make_input(1, model.in_channels, args, device, row.channels_last)["inputs"]
    note = ""
    if row.compile:
        torch._dynamo.reset()
        model = torch.compile(model)

    out = {}
    if row.graphs:  # what run_demo_student.py --backend cudagraph runs
        precision = {"none": "fp32", "bf16": "bf16", "fp16": "fp16" if device.type == "cuda" else "bf16"}[row.amp]
        seg = TorchSegmenter(model, MFNET, device, True, precision, graphs=device.type == "cuda")
        run = seg.graphs or seg._forward

        def forward():
            out["logits"] = run(x)
    else:
        def forward():
            out["logits"] = model(x).logits

    with torch.inference_mode(), (autocast(device, "none") if row.graphs else autocast(device, row.amp)):
        if row.compile:  # the first call compiles
            note = f"compiled in {timed_ms(forward, device) / 1000:.0f} s"
        common.time_calls(forward, args.warmup, 0)
        warm_peak = memory.peak_bytes() / common.GIB
        memory.start()
        times = common.time_calls(forward, 0, args.iters, lambda fn: timed_ms(fn, device))
    if row.graphs and device.type == "cuda" and seg.graphs.fallback:
        note = f"graph capture failed, eager: {seg.graphs.fallback}"
    logits = out["logits"].float().cpu()
    result = {"ms_each": times, "note": note, "warm_peak_gib": warm_peak}
    other_network = row.depth not in (None, args.depth)  # no reference logits to compare with
    if row.baseline:
        refs[row.network] = logits
    elif row.network in refs and not other_network:
        ref = refs[row.network]
        result["max_abs_dlogits"] = (logits - ref).abs().max().item()
        result["argmax_agree_pct"] = 100.0 * (logits.argmax(1) == ref.argmax(1)).float().mean().item()
    return result


def run_train(row: Row, bases: dict, args, device: torch.device, memory) -> dict:
    from trainStudent import DistillTask, SupervisedTask
    from trainTeacher import TeacherTask
    from util.engine.loop import train_step

    if row.epoch:
        return run_epoch(row, args, device)
    model = row_model(bases[(row.network, args.depth)], row, device).train()
    note = ""
    if row.compile:
        torch._dynamo.reset()
        model = torch.compile(model)
    if row.network == "teacher":
        task = TeacherTask("release")
    elif args.student_loss == "distill":  # as trainStudent.py: frozen CENet, default layout, fed image_full
        task = DistillTask(copy.deepcopy(bases[("teacher", args.depth)]).to(device))
    else:
        task = SupervisedTask()
    batch = common.make_input(args.batch_size, 4 if row.network == "teacher" else 1, args, device,
                              row.channels_last, seed_offset=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4,
                                **({"fused": True} if row.fused_sgd else {}))
    scaler = torch.amp.GradScaler(device.type) if row.amp == "fp16" else None

    def step():  # as train_one_epoch with --sync-every > 1: no finite check (no host sync) inside the step
        train_step(model, task, batch, optimizer, device, row.amp, scaler, where="benchmark step",
                   check=not (row.compile or row.fused_sgd))

    if row.compile:
        note = f"compiled in {timed_ms(step, device) / 1000:.0f} s"
    common.time_calls(step, args.train_warmup, 0)
    warm_peak = memory.peak_bytes() / common.GIB
    memory.start()
    times = common.time_calls(step, 0, args.train_iters, lambda fn: timed_ms(fn, device))
    return {"ms_each": times, "note": note, "warm_peak_gib": warm_peak}


def run_epoch(row: Row, args, device: torch.device) -> dict:
    """Two epochs of trainTeacher.py (--epoch-steps steps each) on synthetic frames at the benchmark's size; the
    second epoch's images/s as the trainer reports it (loader, copies and logging included; the first epoch
    compiles and warms up). Reported as ms per step of --batch-size."""
    import json
    import tempfile
    from pathlib import Path

    import trainTeacher
    from util.data.synthetic import generate_dataset

    root = Path(tempfile.mkdtemp(prefix="bench-gpu-epoch-"))
    frames = 2 * args.batch_size * args.epoch_steps + 8
    data = generate_dataset(root / "data", n_frames=frames, height=args.height, width=args.width, seed=args.seed)
    extra = (["--amp", "bf16", "--channels-last", "--fused-sgd", "--sync-every", "50"]  # --fast's options
             + (["--compile"] if row.compile else [])) if row.fused_sgd else []
    trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(root / "runs"), "--run-name", "r", "--epochs", "2",
                      "--depth", str(args.depth), "--height", str(args.height), "--width", str(args.width),
                      "--batch-size", str(args.batch_size), "--no-pretrained", "--workers", "4", "--no-progress",
                      "--device", str(device), "--max-steps-per-epoch", str(args.epoch_steps), "--eval-splits",
                      "test", "--image-every", "0", *extra])
    history = json.loads((root / "runs" / "r" / "results.json").read_text())["history"]
    per_s = history[-1]["images_per_s"]
    return {"ms_each": [1000.0 * args.batch_size / per_s], "note": f"{frames} frames, {args.epoch_steps} steps/epoch",
            "warm_peak_gib": None}


# ----------------------------------------------------------------------------- output

COLUMNS = ["phase", "network", "setting", "ms", "frames|img/s", "speed-up", "warm-up peak GiB", "steady peak GiB",
           "max |Δlogits|", "argmax agree %", "note"]


def cells(r: dict) -> list[str]:
    def num(v, spec):
        return "-" if v is None else format(v, spec)
    phase = "infer b1" if r["phase"] == "infer" else f"train b{r['batch']}"
    diff = "(ref)" if r["baseline"] and r["phase"] == "infer" else num(r.get("max_abs_dlogits"), ".2e")
    agree = "(ref)" if r["baseline"] and r["phase"] == "infer" else num(r.get("argmax_agree_pct"), ".2f")
    return [phase, r["network"], r["setting"], num(r.get("ms"), ".2f"), num(r.get("per_s"), ".1f"),
            "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x", num(r.get("warm_peak_gib"), ".2f"),
            num(r.get("peak_gib"), ".2f"),
            diff, agree, r.get("note", "")]


def print_table(header: list[str], rows: list[dict]) -> None:
    print(common.text_table(header, COLUMNS, [cells(r) for r in rows], left=(0, 1, 2, 10)))


def tf32_flags() -> str:
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, get in (("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                          ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)):
            try:
                parts.append(f"{name}={get()}")
            except Exception:  # noqa: BLE001 - a renamed flag must not stop the benchmark
                pass
    return ", ".join(parts) or "unknown"


def header_lines(args, device: torch.device, memory, n_skipped: int, seconds: float) -> list[str]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        card = (f"GPU: {torch.cuda.get_device_name(device)} (compute capability {props.major}.{props.minor}, "
                f"{props.total_memory / common.GIB:.0f} GiB)")
    else:
        card = f"CPU DRY RUN (--cpu-dry-run; no GPU figures): {common.device_name(device)}"
    student = ("trainStudent.DistillTask, frozen CENet forward included" if args.student_loss == "distill"
               else "trainStudent.SupervisedTask")
    lines = [
        card,
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"python {platform.python_version()}",
        f"input {args.height}x{args.width}, ResNet-{args.depth}, random weights (seeded): speed only",
        f"inference: batch 1, {args.warmup} warm-up + {args.iters} timed passes; training: batch {args.batch_size}, "
        f"{args.train_warmup} warm-up + {args.train_iters} timed steps, SGD; teacher: trainTeacher.TeacherTask, "
        f"student: {student}",
        f"ms: median, each pass/step {'between CUDA events, synchronised' if device.type == 'cuda' else 'perf_counter'}"
        f"; frames|img/s = 1000 * batch / ms",
        f"release-equivalent rows: fp32, eager, contiguous, cudnn.benchmark off; torch defaults {tf32_flags()} "
        f"(fp32 convolutions may use TF32); other rows cudnn.benchmark on",
        "speed-up: over the release-equivalent row of the same phase and network",
        f"peak GiB: {memory.describe()}; warm-up: from the row's start through its warm-up passes (cuDNN's "
        f"algorithm trials, graph capture, compilation); steady: the timed passes only",
        "CUDA graphs rows: util.deploy.backends.TorchSegmenter(graphs=True) as --backend cudagraph runs it, "
        "cudnn.benchmark off; real epoch rows: ms per step from the 2nd epoch's images/s (trainTeacher.py)",
        "max |Δlogits|, argmax agree: vs the release-equivalent fp32 logits (same weights, same input)",
        f"time budget {args.budget_s:.0f} s (compile rows need {args.compile_reserve_s:.0f} s of it left); "
        f"{n_skipped} row(s) skipped; total {seconds:.0f} s",
    ]
    return lines


# ----------------------------------------------------------------------------- main

def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    if not (args.cpu_dry_run or torch.cuda.is_available()):
        raise SystemExit(NEEDS_GPU)
    t0 = time.perf_counter()  # the time budget counts from here
    device = torch.device("cpu") if args.cpu_dry_run else torch.device("cuda", torch.cuda.current_device())
    memory = common.PeakMemory(device)
    rows_plan = plan(args.networks, not args.no_train, not args.no_compile, args.small_depth, not args.no_epoch)
    needed = set(args.networks) | ({"teacher"} if "student" in args.networks and not args.no_train
                                   and args.student_loss == "distill" else set())
    bases = {(net, depth): common.random_model(net, depth, args.height, args.width, args.seed)
             for net in sorted(needed) for depth in {args.depth, *([args.small_depth] if net == "student"
                                                                    and args.small_depth else [])}}
    refs: dict = {}
    rows: list[dict] = []
    skipped = 0
    for i, row in enumerate(rows_plan):
        left = args.budget_s - (time.perf_counter() - t0)
        entry = {**asdict(row), "batch": 1 if row.phase == "infer" else args.batch_size}
        if left <= (args.compile_reserve_s if row.compile else 0):
            entry["note"] = "skipped: time budget (--budget-s)"
            skipped += 1
            rows.append(entry)
            continue
        print(f"[bench_gpu {time.perf_counter() - t0:5.0f} s] {i + 1}/{len(rows_plan)} {row.phase} {row.network} "
              f"{row.setting} ...", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = row.cudnn_benchmark
        memory.start()
        try:
            result = (run_infer(row, bases, args, device, refs, memory) if row.phase == "infer"
                      else run_train(row, bases, args, device, memory))
            ms = statistics.median(result["ms_each"])
            entry.update(result, ms=ms, per_s=1000.0 * entry["batch"] / ms, peak_gib=memory.peak_bytes() / common.GIB)
        except Exception as exc:  # noqa: BLE001 - one row's failure is a result, shown in the table
            first = (str(exc).strip().splitlines() or [""])[0]
            entry["note"] = f"error: {type(exc).__name__}: {first[:160]}"
        rows.append(entry)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = {(r["phase"], r["network"]): r.get("ms") for r in rows if r["baseline"]}
    for r in rows:
        b = base.get((r["phase"], r["network"]))
        r["speedup"] = b / r["ms"] if b and r.get("ms") else None

    header = header_lines(args, device, memory, skipped, time.perf_counter() - t0)
    print_table(header, rows)
    if args.json:
        common.write_results(args.json, header, vars(args), rows)
    return rows


if __name__ == "__main__":
    main()
