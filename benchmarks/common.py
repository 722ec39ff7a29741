"""What the benchmark scripts share, in one place (no benchmark script imports another):

- the repository root put on sys.path when this module is imported, so `python benchmarks/x.py` imports the project;
- the device: resolve_device, sync, device_name (CUDA card, or the CPU as util.deploy.cpu.cpu_info reads it),
  cpu_name, load_average / load_line;
- timing: call_ms (one call, synchronised on CUDA) and time_calls (warm-up passes, then timed ones);
- memory: GIB, status_kib / reset_peak_rss (/proc/self: VmHWM and its reset) and PeakMemory (per phase);
- models and inputs: random_model (the seeded random-weight CENet or EKNet every benchmark times), for_mode,
  make_input;
- output: text_table (header lines and aligned columns between rules) and write_results (the --json file);
- the experiments' run_stage (a training run, skipped when its results exist).

Only the standard library is imported at the top: bench_deploy.py's row subprocesses import this module and must
load nothing but the runtime they measure. torch and the project's modules are imported where they are used.
"""
from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 2 ** 30


# ----------------------------------------------------------------------------- device

def resolve_device(name: str):
    """--device auto, cpu, cuda or cuda:N as a torch.device; exits with one line when CUDA is asked for but absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return device


def sync(device) -> None:
    """Wait for a CUDA device's queued work (nothing to do elsewhere, or for device None)."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def device_name(device) -> str:
    """The CUDA card's name, or the CPU model with its logical CPU count."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    from util.deploy.cpu import cpu_info

    return f"{cpu_info().model} ({os.cpu_count()} logical CPUs)"


def cpu_name() -> str:
    """The CPU model and torch's thread count, for the record of an experiment."""
    import torch

    from util.deploy.cpu import cpu_info

    return f"{cpu_info().model} ({torch.get_num_threads()} threads)"


def load_average() -> float:
    """The 1-minute load average (nan where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def load_line(at_start: float) -> Optional[str]:
    """The header line with the load average at the start and now (None where the system has none)."""
    if not hasattr(os, "getloadavg"):
        return None
    return (f"1-min load average at start / end: {at_start:.2f} / {load_average():.2f} "
            f"(other processes on these CPUs slow every row)")


# ----------------------------------------------------------------------------- timing

def call_ms(fn: Callable[[], object], device=None, clock: Callable[[], float] = time.perf_counter) -> float:
    """Milliseconds of one call of fn by `clock`; on a CUDA device synchronised before and after."""
    sync(device)
    t0 = clock()
    fn()
    sync(device)
    return 1000.0 * (clock() - t0)


def time_calls(fn: Callable[[], object], warmup: int, iters: int,
               timer: Callable[[Callable[[], object]], float] = call_ms) -> list[float]:
    """Call fn `warmup` times untimed, then `iters` times, each timed by timer(fn): those times (report the median,
    robust to a busy machine)."""
    for _ in range(warmup):
        fn()
    return [timer(fn) for _ in range(iters)]


# ----------------------------------------------------------------------------- memory

def status_kib(key: str) -> Optional[int]:
    """A KiB field of /proc/self/status ("VmHWM": peak resident set, "VmRSS": resident now); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM (the peak RSS) to the current RSS; False where Linux does not allow it."""
    try:  # Linux: writing 5 to clear_refs does it
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a phase: CUDA allocator peak, or the process's peak RSS on the CPU."""

    def __init__(self, device):
        self.device = device
        self.rss_resettable = device.type == "cpu" and reset_peak_rss()

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
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.rss_resettable:
            self._trim_heap()
            reset_peak_rss()

    @staticmethod
    def _trim_heap() -> None:
        """Give memory freed by earlier phases back to the OS, so it is not counted again (glibc)."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            import torch

            return torch.cuda.max_memory_allocated(self.device)
        if self.rss_resettable:
            hwm = status_kib("VmHWM")
            if hwm is not None:
                return hwm * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- models and inputs

def random_model(network: str, depth: int, height: int, width: int, seed: int):
    """The randomly initialised CENet ("teacher") or EKNet ("student") for seed, on the CPU: every benchmark and
    every row of one seed gets the same weights. MFNet's class count (util.data.mfnet.N_CLASS)."""
    import torch

    from model import CENet, EKNet
    from util.data.mfnet import N_CLASS

    torch.manual_seed(seed)
    cls = CENet if network == "teacher" else EKNet
    return cls(N_CLASS, depth, height, width, pretrained=False)


def for_mode(base, channels_last: bool):
    """A copy of `base` for one mode (training changes the weights; the base stays the fp32 reference)."""
    import torch

    model = copy.deepcopy(base)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def make_input(batch: int, in_channels: int, args, device, channels_last: bool, seed_offset: int = 0) -> dict:
    """A random batch (args.height x args.width, seeded by args.seed) laid out as util.engine.to_device leaves it:
    image_full (RGB-T), inputs (what the network reads), label, edge (1/4 resolution)."""
    import torch

    from util.data.mfnet import N_CLASS
    from util.engine.loop import model_inputs

    g = torch.Generator().manual_seed(args.seed + 1 + seed_offset)
    h, w = args.height, args.width
    image = torch.rand(batch, 4, h, w, generator=g).to(device)
    label = torch.randint(0, N_CLASS, (batch, h, w), generator=g).to(device)
    edge = (torch.rand(batch, 1, h // 4, w // 4, generator=g) < 0.1).float().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {"image_full": image.contiguous(memory_format=fmt),
            "inputs": model_inputs(image, in_channels).contiguous(memory_format=fmt),
            "label": label, "edge": edge}


# ----------------------------------------------------------------------------- output

def text_table(header: list[str], columns: list[str], body: list[list[str]], left: tuple[int, ...]) -> str:
    """A rule, the header lines, a rule, the column names and the body rows aligned (columns `left` left-justified,
    the others right-justified), a rule; no trailing spaces."""
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    rule = "-" * (sum(widths) + 2 * (len(columns) - 1))

    def line(values: list[str]) -> str:
        cells = (v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
        return "  ".join(cells).rstrip()
    return "\n".join([rule, *header, rule, line(columns), *(line(b) for b in body), rule])


def write_results(path, header: list[str], settings: dict, rows: list[dict]) -> Path:
    """Write {"header", "args", "rows"} as indented JSON to path (its folder made) and say so on stdout."""
    path = Path(path)
    from util.files import atomic_write  # standard library only, like this module

    text = json.dumps({"header": header, "args": settings, "rows": rows}, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text))
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- experiments

def run_stage(name: str, cfg, out: Path, seconds: dict[str, float]) -> dict:
    """The results.json of run `out/name`, trained first (trainTeacher.main for a TeacherConfig, else
    trainStudent.main) unless it exists, so an interrupted experiment continues; the training time goes to
    seconds[name]."""
    from util.engine.folders import RESULTS

    done = out / name / RESULTS
    if not done.is_file():
        import trainStudent
        import trainTeacher
        from util.engine import TeacherConfig, resolve

        t = time.perf_counter()
        print(f"== {name}: ResNet-{cfg.depth}, {cfg.epochs} epochs", flush=True)
        (trainTeacher if isinstance(cfg, TeacherConfig) else trainStudent).main(resolve(cfg))
        seconds[name] = time.perf_counter() - t
    return json.loads(done.read_text())
