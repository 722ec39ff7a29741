"""Inference paths of the student: CPU facts, PyTorch bf16, OpenVINO, and `--backend auto` with its cached choice."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run_demo_student
import util.deploy.choose as choose
from model import EKNet
from util.data.info import MFNET
from util.deploy.agreement import compare, random_thermal
from util.deploy.backends import OnnxSegmenter, OpenVinoSegmenter, TorchSegmenter
from util.deploy.choose import Route, pick, routes
from util.deploy.cpu import CpuInfo, _mkldnn_bf16, parse_cpuinfo
from util.deploy.export import export_onnx
from util.deploy.quantize import quantize_int8
from util.engine.checkpoint import save_atomic

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
CPU = torch.device("cpu")
SAPPHIRE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx2 avx512f avx512_vnni "
            "avx512_bf16 amx_bf16 amx_tile amx_int8\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
OLD_XEON = "model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz\nflags\t\t: fpu avx2\n"


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """An EKNet-18 at 64x64 as PyTorch weights, fp32 ONNX and the int8 copy beside it, and a few frames."""
    root = tmp_path_factory.mktemp("choose")
    torch.manual_seed(0)
    model = EKNet(depth=18, height=SIZE, width=SIZE).eval()
    pth = save_atomic({"format": "cekd-pytorch", "network": "EKNet", "model": model.state_dict()}, root / "s.pth")
    onnx_path = export_onnx(model, root / "s.onnx", MFNET)
    quantize_int8(onnx_path, root / "s.int8.onnx", random_thermal(2, SIZE, SIZE))
    frames = root / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), (random_thermal(1, 48, 80, seed=i)[0, 0] * 255).astype(np.uint8))
    return model, pth, onnx_path, frames


def test_cpu_facts_from_cpuinfo():
    model, flags = parse_cpuinfo(SAPPHIRE)
    spr = CpuInfo(model, flags, 2)
    assert (spr.model, spr.vnni, spr.amx) == ("Intel(R) Xeon(R) Platinum 8488C", True, True)
    # the flags, then torch's oneDNN on this host must agree (it says no on a host without AVX512-BF16 or AMX)
    assert spr.native_bf16 == _mkldnn_bf16()
    assert spr.describe() == "Intel(R) Xeon(R) Platinum 8488C, 2 cores; avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile"
    old = CpuInfo(*parse_cpuinfo(OLD_XEON), 4)
    assert (old.native_bf16, old.vnni, old.amx) == (False, False, False)
    assert old.describe().endswith("4 cores; no AVX-512/VNNI/AMX flags") and old.key() != spr.key()


def test_routes_offered(student, monkeypatch):
    _, pth, onnx_path, _ = student
    monkeypatch.setattr(choose, "native_bf16", lambda device: True)
    assert routes(pth, CPU) == [Route("torch", "fp32", str(pth)), Route("torch", "bf16", str(pth))]
    assert routes(pth, CPU, "torch") == [Route("torch", "bf16", str(pth))]  # explicit backend: bf16 where native
    int8 = str(onnx_path.with_name("s.int8.onnx"))
    assert [(r.backend, r.precision, r.weights, r.int8) for r in routes(onnx_path, CPU)] == [
        ("onnxruntime", "fp32", str(onnx_path), False), ("openvino", "fp32", str(onnx_path), False),
        ("openvino", "bf16", str(onnx_path), False), ("onnxruntime", "fp32", int8, True),
        ("openvino", "fp32", int8, True), ("openvino", "bf16", int8, True)]
    monkeypatch.setattr(choose, "native_bf16", lambda device: False)  # emulated bf16: never offered by auto
    assert routes(pth, CPU) == [Route("torch", "fp32", str(pth))]
    assert [r.precision for r in routes(onnx_path, CPU, "openvino")] == ["fp32"]
    assert routes(pth, CPU, "auto", "bf16") == [Route("torch", "bf16", str(pth))]  # asked for: given
    cases = [((onnx_path, CPU, "torch"), f"--backend torch: {onnx_path} is an ONNX file"),
             ((pth, CPU, "openvino"), f"--backend openvino: {pth} holds PyTorch weights; export them first"),
             ((onnx_path, CPU, "onnxruntime", "bf16"), "--precision bf16: onnxruntime runs the file as it is"),
             ((onnx_path, torch.device("cuda"), "openvino"), "--backend openvino: runs on the CPU here")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            routes(*args)


def test_routes_on_cuda(student, monkeypatch):
    """On a CUDA device, auto also offers the network replayed as CUDA graphs in fp32, bf16 and fp16; the
    routes are worked out without a GPU (nothing is built)."""
    _, pth, onnx_path, _ = student
    cuda = torch.device("cuda")
    monkeypatch.setattr(choose, "native_bf16", lambda device: True)
    assert [(r.backend, r.precision) for r in routes(pth, cuda)] == [
        ("torch", "fp32"), ("torch", "bf16"), ("cudagraph", "fp32"), ("cudagraph", "bf16"), ("cudagraph", "fp16")]
    assert routes(pth, cuda, "cudagraph") == [Route("cudagraph", "bf16", str(pth))]
    assert routes(pth, cuda, "cudagraph", "fp16") == [Route("cudagraph", "fp16", str(pth))]
    assert routes(pth, cuda, "torch", "fp16") == [Route("torch", "fp16", str(pth))]
    monkeypatch.setattr(choose, "native_bf16", lambda device: False)
    assert [(r.backend, r.precision) for r in routes(pth, cuda)] == [
        ("torch", "fp32"), ("cudagraph", "fp32"), ("cudagraph", "fp16")]
    assert Route("cudagraph", "fp16", "w.pth").label() == "PyTorch CUDA graphs, fp16"
    for args, message in [((onnx_path, cuda, "cudagraph"), "--backend cudagraph: .* is an ONNX file"),
                          ((onnx_path, cuda, "auto", "fp16"), "--precision fp16: runs PyTorch weights on a CUDA"),
                          ((pth, CPU, "cudagraph"), "--backend cudagraph: CUDA graphs need a CUDA device"),
                          ((pth, CPU, "tensorrt"), "--backend tensorrt: expected one of auto, torch, cudagraph"),
                          ((pth, CPU, "auto", "fp64"), "--precision fp64: expected one of auto, fp32, bf16, fp16")]:
        with pytest.raises(ValueError, match=message):
            routes(*args)


def test_pick_fastest_that_agrees():
    rows = [{"ms_per_frame": 10.0, "ok": True}, {"ms_per_frame": 4.0, "ok": False}, {"ms_per_frame": 6.0, "ok": True}]
    assert pick(rows) is rows[2]
    rows[2]["ok"] = False
    rows[0]["ok"] = False
    assert pick(rows) is rows[0]  # none agrees: the fp32 path


def test_bf16_and_openvino_match_fp32(student):
    model, _, onnx_path, _ = student
    x = random_thermal(3, SIZE, SIZE, seed=5)
    fp32 = OnnxSegmenter(onnx_path)
    bf16 = TorchSegmenter(model, MFNET, "cpu", channels_last=False, precision="bf16")
    assert bf16.name == "PyTorch cpu, bf16 autocast, channels-last" and bf16(x[:1]).dtype == np.float32
    assert compare(fp32, bf16, x)["agreement"] >= 0.98
    ov = OpenVinoSegmenter(onnx_path)
    for batch in (1, 3):  # compiled per batch size
        r = compare(fp32, ov, x, batch)
        assert r["relative_diff"] <= 1e-4 and r["agreement"] >= 0.999
    assert (ov.height, ov.width, ov.n_class, ov.name) == (64, 64, 9, "OpenVINO CPU, fp32")
    ov8 = OpenVinoSegmenter(onnx_path.with_name("s.int8.onnx"), "bf16")
    assert ov8.name == "OpenVINO CPU, int8 file, bf16 hint" and compare(fp32, ov8, x)["agreement"] >= 0.9
    assert set(model.state_dict()) and model.training is False


def _run(weights, frames, out, name, *extra):
    return run_demo_student.main(["--weights", str(weights), "--input", str(frames), "--runs-dir", str(out),
                                  "--run-name", name, "--no-progress", "--device", "cpu", *extra])


def test_auto_measures_chooses_and_caches(student, tmp_path, capsys, monkeypatch):
    _, _, onnx_path, frames = student
    monkeypatch.setenv("CEKD_CACHE_DIR", str(tmp_path / "cache"))
    first = _run(onnx_path, frames, tmp_path, "a")
    printed = capsys.readouterr().out
    inf = first["inference"]
    table = inf["table"]
    assert inf["chosen_by"] == "auto" and "cached" not in inf and len(table) == len(routes(onnx_path, CPU))
    ok = [r for r in table if r["agreement"] >= r["min_agreement"]]
    chosen = min(ok, key=lambda r: r["ms_per_frame"])
    assert (inf["backend"], inf["precision"], inf["weights"]) == (chosen["backend"], chosen["precision"], chosen["weights"])
    assert [r["min_agreement"] for r in table] == [0.97 if r["int8"] else 0.99 for r in table]
    assert "auto: timing" in printed and f"{chosen['path']}" in printed and "<- chosen" in printed
    assert inf["path"] == first["backend"] and inf["ms_per_frame"] == pytest.approx(1000 / first["model_frames_per_second"])
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())["inference"]
    assert saved["backend"] == inf["backend"] and saved["ms_per_frame"] == pytest.approx(inf["ms_per_frame"])
    [cache] = list((tmp_path / "cache").iterdir())
    second = _run(onnx_path, frames, tmp_path, "b")
    printed = capsys.readouterr().out
    assert "auto: timing" not in printed and str(cache) in printed  # the cached choice, no timing
    assert second["inference"]["cached"] == str(cache) and second["inference"]["weights"] == inf["weights"]
    os.utime(onnx_path, ns=(onnx_path.stat().st_atime_ns, onnx_path.stat().st_mtime_ns + 10**9))  # new weights
    third = _run(onnx_path, frames, tmp_path, "c", "--min-agreement", "100")
    assert "cached" not in third["inference"] and len(list((tmp_path / "cache").iterdir())) == 2
    assert all(r["min_agreement"] == 1.0 for r in third["inference"]["table"])


def test_explicit_paths_and_refusals(student, tmp_path, capsys):
    _, pth, onnx_path, frames = student
    s = _run(pth, frames, tmp_path, "t", "--backend", "torch", "--precision", "bf16")
    assert (s["inference"]["chosen_by"], s["backend"]) == ("options", "PyTorch cpu, bf16 autocast, channels-last")
    s = _run(onnx_path, frames, tmp_path, "o", "--backend", "onnxruntime")
    assert s["backend"] == "onnxruntime CPU, fp32" and "table" not in s["inference"]
    s = _run(onnx_path, frames, tmp_path, "v", "--backend", "openvino", "--precision", "fp32")
    assert s["backend"] == "OpenVINO CPU, fp32" and len(s["segmented"]) == 3  # same outputs as the others
    for i in range(3):
        ov, ort = (cv2.imread(str(tmp_path / run / f"f{i}_label.png"), cv2.IMREAD_UNCHANGED) for run in ("v", "o"))
        assert ov.shape == (48, 80) and (ov == ort).mean() >= 0.999
    for args, message in [(["--backend", "openvino"], "holds PyTorch weights; export them first"),
                          (["--precision", "fp64"], "argument --precision: must be one of auto, fp32, bf16, fp16, got 'fp64'"),
                          (["--precision", "fp16"], "--precision fp16: runs PyTorch weights on a CUDA device only"),
                          (["--backend", "cudagraph"], "--backend cudagraph: CUDA graphs need a CUDA device"),
                          (["--min-agreement", "0"], "must be a finite number greater than 0 and at most 100, got '0'")]:
        with pytest.raises(SystemExit):
            _run(pth, frames, tmp_path, "x", *args)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_openvino_writes_nothing_under_home(student, tmp_path):
    """A whole --backend auto run (onnxruntime and OpenVINO paths built and timed) in a fresh process with
    an empty home folder: it stays empty (OpenVINO's telemetry and onnxruntime's device id are kept off)."""
    _, _, onnx_path, frames = student
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", "CEKD_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("XDG_CACHE_HOME", None)
    code = "import sys, run_demo_student; run_demo_student.main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, "--weights", str(onnx_path), "--input", str(frames),
                           "--runs-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-progress", "--device", "cpu"],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert {r["backend"] for r in summary["inference"]["table"]} == {"onnxruntime", "openvino"}


def test_openvino_leaves_the_signal_stack_as_it_was(student):
    """Compiled models freed in the order they were made must not leave the thread on a freed signal stack
    (CPython runs its Ctrl-C handler there once faulthandler is on: the process would crash)."""
    import faulthandler
    import gc

    from util.deploy.runtimes import _sigaltstack

    _, _, onnx_path, _ = student
    faulthandler.enable()  # as pytest and python -X faulthandler do: an alternate stack is set
    before = _sigaltstack(None)
    if before is None:
        pytest.skip("sigaltstack is not available here")
    first, second = OpenVinoSegmenter(onnx_path), OpenVinoSegmenter(onnx_path, "bf16")
    x = random_thermal(1, SIZE, SIZE)
    first(x), second(x)  # compiled here
    del first
    gc.collect()
    del second
    gc.collect()
    after = _sigaltstack(None)
    assert (after.ss_sp, after.ss_size, after.ss_flags) == (before.ss_sp, before.ss_size, before.ss_flags)


@pytest.mark.parametrize("case", ["unknown backend", "torch for onnx", "fp64", "other student", "text file",
                                  "another version", "another key"])
def test_a_cache_entry_that_does_not_fit_the_run_is_ignored(student, tmp_path, case):
    """The cache is a hint: an entry is taken only when it names one of the paths these weights and options
    offer now (a backend that exists, a precision it takes, this very file by place and content)."""
    _, _, onnx_path, _ = student
    other = tmp_path / "other.onnx"  # another student, the same size and classes
    other.write_bytes(onnx_path.read_bytes())
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    candidates = routes(onnx_path, CPU)
    key = choose.cache_key(onnx_path, CPU, "auto", "auto", None)
    good = {"backend": "onnxruntime", "precision": "fp32", "weights": str(onnx_path), "int8": False,
            "path": "onnxruntime CPU, fp32", "ms_per_frame": 1.0, "agreement": 1.0}
    at = tmp_path / "entry.json"
    choose.write_cached(at, key, good, [good])
    route, doc = choose.read_cached(at, key, candidates)
    assert route == candidates[0] and doc["chosen"] == good  # the untouched entry is taken
    changed = {"unknown backend": {"backend": "tensorrt"}, "torch for onnx": {"backend": "torch"},
               "fp64": {"backend": "openvino", "precision": "fp64"}, "other student": {"weights": str(other)},
               "text file": {"weights": str(text)}}.get(case, {})
    choose.write_cached(at, {**key, "threads": -1} if case == "another key" else key, {**good, **changed}, [good])
    if case == "another version":
        at.write_text(at.read_text().replace(f'"version": {choose.CACHE_VERSION}', '"version": 1'))
    assert choose.read_cached(at, key, candidates) is None


def test_a_cached_choice_that_does_not_load_is_timed_again(student, tmp_path, monkeypatch):
    """A valid entry whose path fails to build here is dropped with one line, the paths are timed again and
    the entry replaced; a good entry is then taken without timing."""
    from util.engine.checkpoint import Loaded

    model = student[0]
    monkeypatch.setattr(choose, "native_bf16", lambda device: True)  # two PyTorch paths: a choice to cache
    monkeypatch.setenv("CEKD_CACHE_DIR", str(tmp_path / "cache"))
    lines = []

    def open_():
        return choose.open_segmenter(str(student[1]), CPU, "auto", "auto", None, lambda: Loaded(model, MFNET),
                                     lambda h, w: random_thermal(2, h, w), log=lines.append)
    _, first = open_()
    assert "cached" not in first and any("auto: timing" in line for line in lines)
    real, failed = choose.build, []

    def build(route, *a, **k):  # the cached route fails once, when the cached entry is tried
        if not failed:
            failed.append(route)
            raise RuntimeError("device lost")
        return real(route, *a, **k)
    monkeypatch.setattr(choose, "build", build)
    lines.clear()
    _, second = open_()
    assert failed == [Route(first["backend"], first["precision"], first["weights"], first["int8"])]
    assert "cached" not in second and lines[0].endswith("does not load here (device lost); timing again")
    assert any("auto: timing" in line for line in lines)
    lines.clear()
    _, third = open_()
    assert "cached" in third and not any("auto: timing" in line for line in lines)


def test_cache_keyed_by_content(student, tmp_path, monkeypatch):
    """Weights of the same name, size and modification time but other content: another cache entry."""
    _, _, onnx_path, _ = student
    monkeypatch.setenv("CEKD_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "s.onnx"
    copy.write_bytes(onnx_path.read_bytes())
    key = choose.cache_key(copy, CPU, "auto", "auto", None)
    stat = copy.stat()
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert copy.stat().st_size == stat.st_size and copy.stat().st_mtime_ns == stat.st_mtime_ns
    other = choose.cache_key(copy, CPU, "auto", "auto", None)
    assert other != key and choose.cache_file(other) != choose.cache_file(key)
    assert key["files"][0][1] == choose.sha256_file(onnx_path)
