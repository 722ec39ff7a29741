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
import copy
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import CENet, EKNet  # noqa: E402
from model.encoder import RESNET_DEPTHS  # noqa: E402
from trainStudent import DistillTask, SupervisedTask  # noqa: E402
from trainTeacher import TeacherTask  # noqa: E402
from util.data.mfnet import N_CLASS  # noqa: E402
from util.engine.loop import autocast, model_inputs, train_step  # noqa: E402

NETWORKS = ("teacher", "student")
MODES = ("fp32", "amp", "channels-last", "amp+channels-last")
GIB = 1024 ** 3


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


# ----------------------------------------------------------------------------- device helpers

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return device


def amp_dtype(device: torch.device) -> str:
    """The autocast precision 'amp' means on this device (util.engine.autocast's names)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a phase: CUDA allocator peak, or the process's peak RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rss_resettable = device.type == "cpu" and self._reset_rss_peak()

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:  # Linux: writing 5 resets VmHWM (the peak RSS) to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _vm_hwm() -> Optional[int]:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def describe(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated during the phase (tensors only, no allocator cache)"
        if self.rss_resettable:
            return ("process peak RSS during the phase (VmHWM reset and malloc_trim before each phase; "
                    "includes every live model)")
        return "process peak RSS so far (ru_maxrss, never resets: only increases are informative)"

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.rss_resettable:
            self._trim_heap()
            self._reset_rss_peak()

    @staticmethod
    def _trim_heap() -> None:
        """Give memory freed by earlier phases back to the OS, so it is not counted again (glibc)."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.rss_resettable:
            hwm = self._vm_hwm()
            if hwm is not None:
                return hwm
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- building

def build(network: str, args: argparse.Namespace, device: torch.device) -> nn.Module:
    """A randomly initialised network (seeded, so every mode of a run sees the same weights)."""
    torch.manual_seed(args.seed)
    cls = CENet if network == "teacher" else EKNet
    return cls(N_CLASS, args.depth, args.height, args.width, pretrained=False).to(device)


def for_mode(base: nn.Module, channels_last: bool) -> nn.Module:
    """A copy of `base` for one mode (training changes the weights; the base stays the fp32 reference)."""
    model = copy.deepcopy(base)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def make_input(batch: int, in_channels: int, args: argparse.Namespace, device: torch.device,
               channels_last: bool, seed_offset: int = 0) -> dict:
    """A random batch laid out as util.engine.to_device leaves it: image_full (RGB-T), inputs
    (what the network reads), label, edge (1/4 resolution)."""
    g = torch.Generator().manual_seed(args.seed + 1 + seed_offset)
    h, w = args.height, args.width
    image = torch.rand(batch, 4, h, w, generator=g).to(device)
    label = torch.randint(0, N_CLASS, (batch, h, w), generator=g).to(device)
    edge = (torch.rand(batch, 1, h // 4, w // 4, generator=g) < 0.1).float().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {"image_full": image.contiguous(memory_format=fmt),
            "inputs": model_inputs(image, in_channels).contiguous(memory_format=fmt),
            "label": label, "edge": edge}


# ----------------------------------------------------------------------------- timing

def time_inference(model: nn.Module, batch: dict, device: torch.device, amp: str,
                   warmup: int, iters: int) -> tuple[list[float], torch.Tensor]:
    """Milliseconds of each timed pass at batch 1 (eval, inference_mode) and the logits of the input."""
    model.eval()
    x = batch["inputs"]
    times = []
    with torch.inference_mode(), autocast(device, amp):
        for _ in range(warmup):
            model(x)
        for _ in range(iters):
            sync(device)
            t0 = time.perf_counter()
            logits = model(x).logits
            sync(device)
            times.append(1000.0 * (time.perf_counter() - t0))
    return times, logits.float()


def time_train_step(model: nn.Module, task, batch: dict, device: torch.device, amp: str,
                    warmup: int, iters: int) -> list[float]:
    """Seconds of each timed step: forward + loss + backward + SGD step (the trainers' optimiser settings)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def step() -> None:
        train_step(model, task, batch, optimizer, device, amp, scaler, where="benchmark step")

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure(phase: Callable, memory: PeakMemory):
    memory.start()
    result = phase()
    return result, memory.peak_bytes()


# ----------------------------------------------------------------------------- output

def header_lines(args: argparse.Namespace, device: torch.device, amp: str, memory: PeakMemory,
                 load_at_start: float) -> list[str]:
    lines = [
        f"device: {device} = {device_name(device)}",
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
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        lines.append(f"1-min load average at start / end: {load_at_start:.2f} / {os.getloadavg()[0]:.2f} "
                     f"(other processes on these CPUs slow every row)")
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


def print_table(header: list[str], rows: list[dict]) -> None:
    cols = ["network", "mode", "infer ms/frame", "FPS", "train img/s", "infer mem GiB", "train mem GiB",
            "max |Δlogits| vs fp32", "argmax agree %"]
    cells = [fmt_row(r) for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    rule = "-" * (sum(widths) + 2 * (len(cols) - 1))
    print(rule)
    for line in header:
        print(line)
    print(rule)
    print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    for r in cells:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(rule)


# ----------------------------------------------------------------------------- main

def main(argv: Optional[list[str]] = None) -> list[dict]:
    if argv is None:
        argv = sys.argv[1:]
    if "--deploy-table" in argv:  # the student's depth x backend table lives in bench_deploy.py
        import bench_deploy

        return bench_deploy.main([a for a in argv if a != "--deploy-table"])
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    amp = amp_dtype(device)
    modes = args.modes or list(MODES)
    if "fp32" not in modes:  # the reference for the logits comparison
        modes = ["fp32", *modes]
    memory = PeakMemory(device)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

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
            model = for_mode(base, cl)
            one = make_input(1, model.in_channels, args, device, cl)
            (times, logits), infer_peak = measure(
                lambda: time_inference(model, one, device, mode_amp, args.warmup, args.iters), memory)
            ms = statistics.median(times)
            row = {"network": network, "mode": mode, "amp_dtype": mode_amp, "channels_last": cl,
                   "infer_ms": ms, "fps": 1000.0 / ms, "infer_ms_each": times, "infer_peak_gib": infer_peak / GIB,
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
                batch = make_input(args.batch_size, model.in_channels, args, device, cl, seed_offset=1)
                steps, train_peak = measure(
                    lambda: time_train_step(model, task, batch, device, mode_amp, args.train_warmup,
                                            args.train_iters), memory)
                row.update(train_img_s=args.batch_size / statistics.median(steps), train_s_each=steps,
                           train_peak_gib=train_peak / GIB)
                del batch, task
            rows.append(row)
            del model
        del base, teacher

    header = header_lines(args, device, amp, memory, load_at_start)
    print_table(header, rows)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"header": header, "args": vars(args), "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
