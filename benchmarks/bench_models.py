"""Speed and memory of CENet (teacher) and EKNet (student) under fp32, autocast and channels-last.

For each network and mode it measures
- inference: batch 1, eval mode, torch.inference_mode, after warm-up: ms/frame (median of the
  timed passes, robust to a busy machine) and FPS;
- one training step at --batch-size: forward, the real loss (model/losses.py, through the
  trainers' Task classes), backward, SGD step: images/s (median step). The student's default loss is the
  distillation loss against a frozen CENet whose forward pass (under no_grad) is part of
  the step, as in trainStudent.py; --student-loss gt uses plain CE on a label instead;
- peak memory of each phase: CUDA max_memory_allocated, or on the CPU the process's peak
  resident set size (VmHWM, reset per phase where Linux allows; else ru_maxrss, which
  only ever grows);
- max |logits - fp32 logits| on the same input and weights, and how many pixels keep the
  fp32 argmax, so a reader sees which settings change results.
Weights are random (no download); speed does not depend on them.

    python benchmarks/bench_models.py --device cpu --networks student --iters 5 --train-iters 2
    python benchmarks/bench_models.py --device cuda --json runs/bench.json
"""
from __future__ import annotations

import argparse
import functools
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

import common
from model.encoder import RESNET_DEPTHS
from trainStudent import DistillTask, SupervisedTask
from trainTeacher import TeacherTask
from util.data.mfnet import N_CLASS
from util.engine.loop import autocast, train_step

NETWORKS = ("teacher", "student")
MODES = ("fp32", "amp", "channels-last", "amp+channels-last")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--height", type=int, default=480, help="input height (a multiple of 32)")
    ap.add_argument("--width", type=int, default=640, help="input width (a multiple of 32)")
    ap.add_argument("--depth", type=int, default=50, choices=RESNET_DEPTHS, help="ResNet depth")
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS,
                    help="teacher: CENet (RGB-T), student: EKNet (thermal)")
    ap.add_argument("--modes", nargs="+", default=None, choices=MODES,
                    help="default: all the device supports (amp: bf16 on the CPU; on CUDA bf16 where "
                         "supported, else fp16); fp32 always runs, as the reference for the logits")
    ap.add_argument("--warmup", type=int, default=5, help="untimed inference passes")
    ap.add_argument("--iters", type=int, default=20, help="timed inference passes (batch 1)")
    ap.add_argument("--train-warmup", type=int, default=1, help="untimed training steps")
    ap.add_argument("--train-iters", type=int, default=5, help="timed training steps")
    ap.add_argument("--batch-size", type=int, default=2, help="training batch size")
    ap.add_argument("--student-loss", default="distill", choices=("distill", "gt"),
                    help="distill: the four CEKD terms against a frozen teacher (its forward is timed too); "
                         "gt: plain CE on a label (cheaper, the no-distillation baseline)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--no-train", action="store_true", help="inference only")
    ap.add_argument("--seed", type=int, default=0, help="weights and inputs")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the header and rows here")
    ap.add_argument("--deploy-table", action="store_true",
                    help="instead: the student's depth x backend deployment table (benchmarks/bench_deploy.py; "
                         "its options follow)")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.train_iters < 1:
        ap.error("--iters and --train-iters must be at least 1")
    if args.batch_size < 2 and "student" in args.networks and not args.no_train:
        ap.error("--batch-size must be at least 2 to train the student (TEM's BatchNorm1d needs 2 samples)")
    return args




# ----------------------------------------------------------------------------- device

def amp_dtype(device: torch.device) -> str:
    """The autocast precision 'amp' means on this device (util.engine.autocast's names)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16"




# ----------------------------------------------------------------------------- building

def build(network: str, args: argparse.Namespace, device: torch.device) -> nn.Module:
    """A randomly initialised network (seeded, so every mode of a run sees the same weights)."""
    return common.random_model(network, args.depth, args.height, args.width, args.seed).to(device)


# ----------------------------------------------------------------------------- timing

def time_inference(model: nn.Module, batch: dict, device: torch.device, amp: str,
                   warmup: int, iters: int) -> tuple[list[float], torch.Tensor]:
    """Milliseconds of each timed pass at batch 1 (eval, inference_mode) and the logits of the input."""
    model.eval()
    x = batch["inputs"]
    out = {}

    def forward() -> None:
        out["logits"] = model(x).logits

    with torch.inference_mode(), autocast(device, amp):
        times = common.time_calls(forward, warmup, iters, lambda fn: common.call_ms(fn, device))
    return times, out["logits"].float()


def time_train_step(model: nn.Module, task, batch: dict, device: torch.device, amp: str,
                    warmup: int, iters: int) -> list[float]:
    """Seconds of each timed step: forward + loss + backward + SGD step (the trainers' optimiser settings)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def step() -> None:
        train_step(model, task, batch, optimizer, device, amp, scaler, where="benchmark step")

    return [ms / 1000.0 for ms in common.time_calls(step, warmup, iters, lambda fn: common.call_ms(fn, device))]


def measure(phase: Callable, memory: common.PeakMemory):
    memory.start()
    result = phase()
    return result, memory.peak_bytes()


# ----------------------------------------------------------------------------- output

def header_lines(args: argparse.Namespace, device: torch.device, amp: str, memory: common.PeakMemory,
                 load_at_start: float) -> list[str]:
    lines = [
        f"device: {device} = {common.device_name(device)}",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}",
        f"input {args.height}x{args.width}, ResNet-{args.depth}, {N_CLASS} classes, random weights; "
        f"amp = {amp} autocast",
        f"inference: batch 1, {args.warmup} warm-up + {args.iters} timed passes (median; each in --json)",
    ]
    if not args.no_train:
        student = ("distillation loss, frozen teacher forward included" if args.student_loss == "distill"
                   else "CE on a label (--student-loss gt)")
        lines.append(f"training: batch {args.batch_size}, {args.train_warmup} warm-up + {args.train_iters} timed "
                     f"steps (median), SGD; teacher: CE + edge BCE; student: {student}")
    if device.type == "cuda":
        lines.append(f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
                     f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                     f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} (fp32 convs may use TF32)")
    load = common.load_line(load_at_start)
    if device.type == "cpu" and load:
        lines.append(load)
    lines.append(f"mem: {memory.describe()}")
    lines.append("max |Δlogits| and argmax agreement: vs this run's fp32 logits (same weights, same input)")
    return lines


def fmt_row(row: dict) -> list[str]:
    def num(v, spec):
        return "-" if v is None else format(v, spec)
    diff = "(ref)" if row["mode"] == "fp32" else num(row["max_abs_dlogits"], ".2e")
    agree = "(ref)" if row["mode"] == "fp32" else num(row["argmax_agree_pct"], ".2f")
    return [row["network"], row["mode"], num(row["infer_ms"], ".1f"), num(row["fps"], ".2f"),
            num(row["train_img_s"], ".3f"),
            num(row["infer_peak_gib"], ".2f"), num(row["train_peak_gib"], ".2f"), diff, agree]


COLUMNS = ["network", "mode", "infer ms/frame", "FPS", "train img/s", "infer mem GiB", "train mem GiB",
           "max |Δlogits| vs fp32", "argmax agree %"]


def print_table(header: list[str], rows: list[dict]) -> None:
    print(common.text_table(header, COLUMNS, [fmt_row(r) for r in rows], left=(0, 1)))


# ----------------------------------------------------------------------------- main

def main(argv: Optional[list[str]] = None) -> list[dict]:
    if argv is None:
        argv = sys.argv[1:]
    if "--deploy-table" in argv:
        return deploy_table([a for a in argv if a != "--deploy-table"])
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = common.resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    amp = amp_dtype(device)
    modes = args.modes or list(MODES)
    if "fp32" not in modes:  # the reference for the logits comparison
        modes = ["fp32", *modes]
    memory = common.PeakMemory(device)
    load_at_start = common.load_average()

    rows = []
    for network in args.networks:
        base = build(network, args, device)
        teacher = None
        if network == "student" and not args.no_train and args.student_loss == "distill":
            # as trainStudent.py: a frozen CENet, weights in the default layout, fed image_full
            teacher = build("teacher", args, device).eval().requires_grad_(False)
        ref_logits = None
        for mode in modes:
            cl, mode_amp = "channels-last" in mode, (amp if "amp" in mode else "none")
            print(f"[{network} {mode}] inference ...", file=sys.stderr, flush=True)
            model = common.for_mode(base, cl)
            one = common.make_input(1, model.in_channels, args, device, cl)
            (times, logits), infer_peak = measure(
                functools.partial(time_inference, model, one, device, mode_amp, args.warmup, args.iters), memory)
            ms = statistics.median(times)
            row = {"network": network, "mode": mode, "amp_dtype": mode_amp, "channels_last": cl,
                   "infer_ms": ms, "fps": 1000.0 / ms, "infer_ms_each": times,
                   "infer_peak_gib": infer_peak / common.GIB,
                   "train_img_s": None, "train_s_each": None, "train_peak_gib": None,
                   "max_abs_dlogits": None, "argmax_agree_pct": None}
            logits = logits.cpu()
            if mode == "fp32":
                ref_logits = logits
                row["max_abs_logit"] = logits.abs().max().item()
            else:
                row["max_abs_dlogits"] = (logits - ref_logits).abs().max().item()
                row["argmax_agree_pct"] = 100.0 * (logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
            del one, logits
            if not args.no_train:
                print(f"[{network} {mode}] training ...", file=sys.stderr, flush=True)
                if network == "teacher":
                    task = TeacherTask("release")
                elif teacher is not None:
                    task = DistillTask(teacher)
                else:
                    task = SupervisedTask()
                batch = common.make_input(args.batch_size, model.in_channels, args, device, cl, seed_offset=1)
                steps, train_peak = measure(
                    functools.partial(time_train_step, model, task, batch, device, mode_amp, args.train_warmup,
                                      args.train_iters), memory)
                row.update(train_img_s=args.batch_size / statistics.median(steps), train_s_each=steps,
                           train_peak_gib=train_peak / common.GIB)
                del batch, task
            rows.append(row)
            del model
        del base, teacher

    header = header_lines(args, device, amp, memory, load_at_start)
    print_table(header, rows)
    if args.json:
        common.write_results(args.json, header, vars(args), rows)
    return rows


def deploy_table(argv: list[str]) -> list[dict]:
    """--deploy-table: the student's depth x backend table is bench_deploy.py's; it runs as its own process with the
    other options (its table on stdout, its rows in its --out files), and its exit status is kept."""
    code = subprocess.call([sys.executable, str(Path(__file__).resolve().parent / "bench_deploy.py"), *argv])
    if code:
        raise SystemExit(code)
    return []


if __name__ == "__main__":
    main()
