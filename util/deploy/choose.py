"""Which inference path runs the student: `--backend auto|torch|cudagraph|onnxruntime|openvino` and
`--precision auto|fp32|bf16|fp16` of `run_demo_student.py --input`.

The paths a weights file offers (a *route*: backend, precision, file):
- PyTorch weights (.pth/.pt): PyTorch fp32, and PyTorch bf16 autocast + channels-last where the
  device has native bf16 (CPU: cpu.py; CUDA: torch.cuda.is_bf16_supported()). On a CUDA device
  also the same network replayed as CUDA graphs (`cudagraph`, cudagraph.py) in fp32, bf16 and fp16
  autocast: at batch 1 a GPU mostly waits for kernel launches, which the graphs remove.
- an .onnx file: onnxruntime (the file as it is, fp32 or int8) and, on the CPU, OpenVINO with an
  fp32 hint and, with native bf16, a bf16 hint; the int8 copy written beside it by
  `python -m util.export --int8` (NAME.int8.onnx) is offered too.
`--backend auto` times every path on a few frames of the input (batch 1, interleaved) and takes
the fastest whose argmax agreement with the fp32 model is at least `--min-agreement` (default 99%,
97% for int8 files). The choice is cached per (weights files' content, machine, options) in the project's
cache folder (util.files.cache_dir), so the next start skips the timing. A cached choice is a hint,
never an order: it is taken only when it names one of the paths these weights and options offer
now (the same file, by content and place) and that path loads; otherwise it is ignored and the
paths are timed again. An explicit backend takes `--precision auto` as bf16 where native, else
fp32, without timing.
"""
from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from ..data.frames import Frame
from ..engine.checkpoint import Loaded
from ..files import atomic_write, cache_dir, sha256_file
from .agreement import compare, ms_per_frame
from .backends import ONNX_SUFFIXES, TORCH_SUFFIXES, OnnxSegmenter, OpenVinoSegmenter, Segmenter, TorchSegmenter
from .cpu import cpu_info

BACKEND_CHOICES = ("auto", "torch", "cudagraph", "onnxruntime", "openvino")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
MIN_AGREEMENT = 0.99
INT8_MIN_AGREEMENT = 0.97
TIMED_FRAMES = 3  # frames of the input used to choose
TIMED_PASSES = 5  # per path (cycling through the frames), after one untimed pass; the median counts
CACHE_VERSION = 2  # 2: keyed by the files' content, the key stored in the entry
LABELS = {"torch": "PyTorch", "cudagraph": "PyTorch CUDA graphs", "onnxruntime": "onnxruntime",
          "openvino": "OpenVINO"}
TORCH_BACKENDS = ("torch", "cudagraph")


@dataclass(frozen=True)
class Route:
    backend: str  # torch, cudagraph, onnxruntime or openvino
    precision: str  # fp32, bf16 or fp16 (CUDA): what runs in floating point (an int8 file's float parts)
    weights: str
    int8: bool = False

    def label(self) -> str:
        if self.backend == "onnxruntime":
            return f"onnxruntime, {'int8' if self.int8 else 'fp32'}"
        return f"{LABELS[self.backend]}, " + ("int8, " if self.int8 else "") + self.precision


def int8_sibling(path: Path) -> Optional[Path]:
    """NAME.int8.onnx beside NAME.onnx (as python -m util.export --int8 writes it), if there."""
    if path.name.lower().endswith(".int8.onnx"):
        return None
    sibling = path.with_name(path.stem + ".int8.onnx")
    return sibling if sibling.is_file() else None


def fp32_sibling(path: Path) -> Optional[Path]:
    """NAME.onnx beside NAME.int8.onnx, if there."""
    if not path.name.lower().endswith(".int8.onnx"):
        return None
    sibling = path.with_name(path.name[:-len(".int8.onnx")] + ".onnx")
    return sibling if sibling.is_file() else None


def _is_int8(path: Path) -> bool:
    from .onnxfile import read_metadata

    try:
        return read_metadata(path).get("precision") == "int8"
    except Exception:  # unreadable: the backend reports it when it loads the file
        return False


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_info().native_bf16


def routes(weights: str | os.PathLike, device: torch.device, backend: str = "auto",
           precision: str = "auto") -> list[Route]:
    """The paths to consider for `weights` under --backend/--precision; ValueError for a combination
    that cannot run (one line naming the option)."""
    from .runtimes import openvino_available

    path = Path(weights)
    suffix, bf16, cuda = path.suffix.lower(), native_bf16(device), device.type == "cuda"
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"--backend {backend}: expected one of {', '.join(BACKEND_CHOICES)}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"--precision {precision}: expected one of {', '.join(PRECISION_CHOICES)}")
    if backend == "cudagraph" and not cuda:
        raise ValueError(f"--backend cudagraph: CUDA graphs need a CUDA device; pass --device cuda (not {device})")
    if precision == "fp16" and not (cuda and suffix in TORCH_SUFFIXES):
        raise ValueError("--precision fp16: runs PyTorch weights on a CUDA device only; use fp32 or bf16 here")

    def precisions(measured: bool, graphs: bool = False) -> list[str]:
        if precision != "auto":
            return [precision]
        if not measured:
            return ["bf16" if bf16 else "fp32"]
        return ["fp32"] + (["bf16"] if bf16 else []) + (["fp16"] if graphs else [])

    if suffix in TORCH_SUFFIXES:
        if backend not in ("auto", *TORCH_BACKENDS):
            raise ValueError(f"--backend {backend}: {path} holds PyTorch weights; export them first "
                             f"(python -m util.export --weights {path} --out student.onnx) and pass the .onnx file")
        names = [backend] if backend != "auto" else ["torch", "cudagraph"] if cuda else ["torch"]
        return [Route(b, p, str(path)) for b in names for p in precisions(backend == "auto", b == "cudagraph")]
    if suffix not in ONNX_SUFFIXES:
        raise ValueError(f"--weights {path}: expected an .onnx, .pth or .pt file")
    if backend in TORCH_BACKENDS:
        raise ValueError(f"--backend {backend}: {path} is an ONNX file; use --backend onnxruntime or openvino, "
                         f"or pass PyTorch weights")
    if backend == "onnxruntime" and precision == "bf16":
        raise ValueError("--precision bf16: onnxruntime runs the file as it is (fp32 or int8); "
                         "use --backend openvino (or torch with PyTorch weights) for bf16")
    if backend == "openvino":
        if device.type != "cpu":
            raise ValueError(f"--backend openvino: runs on the CPU here; pass --device cpu (not {device})")
        if not openvino_available():
            raise ValueError("--backend openvino: the openvino package is not installed (pip install openvino)")
    files = [path] + ([int8_sibling(path)] if backend == "auto" and int8_sibling(path) else [])
    out = []
    for f in files:
        int8 = _is_int8(f)
        if backend in ("auto", "onnxruntime") and precision != "bf16":
            out.append(Route("onnxruntime", "fp32", str(f), int8))
        if backend == "openvino" or (backend == "auto" and device.type == "cpu" and openvino_available()):
            out += [Route("openvino", p, str(f), int8) for p in precisions(backend == "auto")]
    return out


def reference_route(weights: str | os.PathLike) -> Route:
    """What agreement is measured against: the fp32 model (PyTorch, or the fp32 ONNX file in
    onnxruntime; for an int8 file without its fp32 file beside it, the int8 file itself)."""
    path = Path(weights)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return Route("torch", "fp32", str(path))
    fp32 = fp32_sibling(path) if _is_int8(path) else path
    return Route("onnxruntime", "fp32", str(fp32 or path), fp32 is None)


def build(route: Route, device: torch.device, load_torch: Callable[[], Loaded],
          channels_last: bool = True, threads: Optional[int] = None,
          cache: Optional[dict] = None) -> Segmenter:
    """The segmenter of a route (`cache` shares one loaded PyTorch model between routes)."""
    from .backends import onnx_providers

    if route.backend in TORCH_BACKENDS:
        cache = {} if cache is None else cache
        if "model" not in cache:
            cache["model"] = load_torch()
        model, info = cache["model"]
        return TorchSegmenter(model, info, device, channels_last, route.precision, graphs=route.backend == "cudagraph")
    if route.backend == "openvino":
        return OpenVinoSegmenter(route.weights, route.precision, threads)
    return OnnxSegmenter(route.weights, onnx_providers(str(device)), threads)


def threshold(route: Route, min_agreement: Optional[float]) -> float:
    if min_agreement is not None:
        return min_agreement
    return INT8_MIN_AGREEMENT if route.int8 else MIN_AGREEMENT


def measure(candidates: dict[Route, Segmenter], reference: Segmenter, frames: np.ndarray,
            min_agreement: Optional[float]) -> list[dict]:
    """One row per route: ms/frame (batch 1, timed interleaved), argmax agreement with `reference`."""
    times = ms_per_frame(list(candidates.values()), frames, TIMED_PASSES, warmup=1)
    ref = {i: reference(frames[i:i + 1]) for i in range(len(frames))}
    rows = []
    for (route, seg), ms in zip(candidates.items(), times):
        agree = float(np.mean([compare(lambda _, i=i: ref[i], seg, frames[i:i + 1])["agreement"]
                               for i in range(len(frames))]))  # frames of one size: the pixel mean
        rows.append({**asdict(route), "path": seg.name, "ms_per_frame": ms, "agreement": agree,
                     "min_agreement": threshold(route, min_agreement), "ok": agree >= threshold(route, min_agreement)})
    return rows


def pick(rows: list[dict]) -> dict:
    """The fastest row that agrees enough (the first row, the fp32 path, when none does)."""
    ok = [r for r in rows if r["ok"]]
    return min(ok, key=lambda r: r["ms_per_frame"]) if ok else rows[0]


def format_table(rows: list[dict], chosen: dict) -> list[str]:
    width = max(len(r["path"]) for r in rows)
    lines = [f"{'path'.ljust(width)}  ms/frame  agreement (min)"]
    for r in rows:
        mark = "  <- chosen" if r is chosen else ("" if r["ok"] else "  (agrees too little)")
        lines.append(f"{r['path'].ljust(width)}  {r['ms_per_frame']:8.1f}  {100 * r['agreement']:8.2f}% "
                     f"({100 * r['min_agreement']:g}%){mark}")
    return lines


# ----------------------------------------------------------------------------- the cached choice

def cache_key(weights: str | os.PathLike, device: torch.device, backend: str, precision: str,
              min_agreement: Optional[float]) -> dict:
    """What a choice depends on: the weights files' content (and place), this machine and these options."""
    path = Path(weights).resolve()
    files = [p for p in (path, int8_sibling(path), fp32_sibling(path)) if p is not None and p.is_file()]
    return {"files": [[str(p), sha256_file(p)] for p in files], "machine": cpu_info().key(),
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "versions": _versions(),
            "backend": backend, "precision": precision, "min_agreement": min_agreement}


def cache_file(key: dict) -> Path:
    """Where the choice for `key` (cache_key) lives."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"deploy-{digest}.json"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"torch": torch.__version__}
    for name in ("onnxruntime", "openvino"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def read_cached(path: Path, key: dict, candidates: list[Route]) -> Optional[tuple[Route, dict]]:
    """The cached choice as one of `candidates` (the paths this run offers) and its entry, or None:
    absent, unreadable, of another version or key, or naming a path that is not a candidate (another
    file, a backend or precision these weights cannot take, one that does not exist)."""
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != CACHE_VERSION or doc.get("key") != json.loads(json.dumps(key)):
            return None
        c = doc["chosen"]
        wanted = (c["backend"], c["precision"], bool(c["int8"]), Path(c["weights"]).resolve())
        route = next((r for r in candidates
                      if (r.backend, r.precision, r.int8, Path(r.weights).resolve()) == wanted), None)
        return (route, doc) if route is not None else None
    except Exception:  # absent or malformed: measure again
        return None


def write_cached(path: Path, key: dict, chosen: dict, table: list[dict]) -> None:
    """Atomically; a cache folder that cannot be written is not an error (the next start measures again)."""
    try:
        atomic_write(path, lambda f: json.dump({"version": CACHE_VERSION, "key": key, "chosen": chosen,
                                                "table": table}, f, indent=1))
    except OSError:
        pass


# ----------------------------------------------------------------------------- the demo's entry

def sample_frames(frames: Iterable[Frame], n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """The first `n` usable frames (N, 1, height, width) of an input, for timing and agreement; random
    thermal when it has none."""
    from .agreement import random_thermal
    from .predictor import to_model_input

    try:
        out = [to_model_input(f.thermal, height, width) for f in itertools.islice(
            (f for f in frames if f.thermal is not None), n)]
    finally:
        if hasattr(frames, "close"):  # a generator over a file: let go of it now
            frames.close()
    return np.stack(out) if out else random_thermal(n, height, width, seed)


def open_segmenter(weights: str, device: torch.device, backend: str, precision: str,
                   min_agreement: Optional[float], load_torch: Callable[[], Loaded],
                   sample: Callable[[int, int], np.ndarray], channels_last: bool = True,
                   log: Callable[[str], None] = print) -> tuple[Segmenter, dict]:
    """The segmenter to run and what summary.json records about the choice ("inference")."""
    candidates = routes(weights, device, backend, precision)
    how = "options" if len(candidates) == 1 else "auto"
    record: dict = {"chosen_by": how, "backend_option": backend, "precision_option": precision}
    shared: dict = {}
    if len(candidates) == 1:
        route = candidates[0]
        return build(route, device, load_torch, channels_last, cache=shared), {**record, **asdict(route)}
    key = cache_key(weights, device, backend, precision, min_agreement)
    cached_at = cache_file(key)
    hit = read_cached(cached_at, key, candidates)
    if hit is not None:
        route, doc = hit
        c = doc["chosen"]
        try:
            seg = build(route, device, load_torch, channels_last, cache=shared)
        except Exception as exc:  # noqa: BLE001 - a hint that does not load is dropped, never obeyed
            log(f"auto: the cached choice ({route.label()}) does not load here "
                f"({(str(exc).splitlines() or [''])[0][:160]}); timing again")
        else:
            log(f"auto: {c['path']} ({c['ms_per_frame']:.1f} ms/frame, agreement {100 * c['agreement']:.2f}% when "
                f"measured; cached in {cached_at}, delete it to measure again)")
            return seg, {**record, **asdict(route), "cached": str(cached_at), "table": doc["table"]}
    segs = {r: build(r, device, load_torch, channels_last, cache=shared) for r in candidates}
    ref_route = reference_route(weights)
    reference = next((s for r, s in segs.items() if r == ref_route), None) or build(
        ref_route, device, load_torch, False, cache=shared)
    any_seg = next(iter(segs.values()))
    frames = sample(any_seg.height, any_seg.width)
    log(f"auto: timing {len(candidates)} paths on {len(frames)} frame(s) at {any_seg.height}x{any_seg.width}, "
        f"batch 1; agreement: argmax against {ref_route.label()}")
    table = measure(segs, reference, frames, min_agreement)
    chosen = pick(table)
    for line in format_table(table, chosen):
        log("  " + line)
    write_cached(cached_at, key, chosen, table)
    route = Route(chosen["backend"], chosen["precision"], chosen["weights"], chosen["int8"])
    seg = segs.pop(route)
    # the runtimes not chosen are let go here, in the main thread: freed later by the garbage collector
    # in whatever thread it runs (a live source's reader), OpenVINO's compiled models crash the process
    del segs, reference, any_seg
    gc.collect()
    return seg, {**record, **asdict(route), "table": table}
