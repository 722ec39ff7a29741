"""benchmarks/common.py, the helpers every benchmark script shares, and the rule that the scripts share
through it only (none imports another; constants are imported from their one home)."""
import ast
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_deploy  # noqa: E402
import common  # noqa: E402
from model.encoder import RESNET_DEPTHS  # noqa: E402


def test_time_calls_times_only_the_passes_after_the_warmup():
    now, calls = [0.0], []

    def fn():  # the n-th call takes n / 2 seconds of the fake clock
        calls.append(now[0])
        now[0] += 0.5 * len(calls)

    times = common.time_calls(fn, 2, 3, lambda f: common.call_ms(f, clock=lambda: now[0]))
    assert len(calls) == 5 and times == [1500.0, 2000.0, 2500.0]
    assert common.time_calls(fn, 1, 0) == [] and len(calls) == 6


def test_text_table_aligns_columns_between_rules():
    text = common.text_table(["head line"], ["name", "ms", "note"], [["a", "1.5", ""], ["bb", "10.25", "x"]],
                             left=(0, 2))
    assert text.splitlines() == ["-" * 17, "head line", "-" * 17, "name     ms  note",
                                 "a       1.5", "bb    10.25  x", "-" * 17]


def test_common_imports_no_torch():
    """bench_deploy's row subprocesses import common; an onnxruntime row must load no torch. Importing it puts
    the repository root on sys.path."""
    code = f"import common, sys; print('torch' in sys.modules, {str(ROOT)!r} in sys.path)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          cwd=ROOT / "benchmarks")
    assert proc.stdout.split() == ["False", "True"]


def test_benchmarks_import_no_other_benchmark():
    scripts = {p.stem: p for p in (ROOT / "benchmarks").glob("*.py")}
    for name, path in scripts.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert imported & set(scripts) <= ({"common"} if name != "common" else set()), name


def test_deploy_depths_are_resnet_depths():
    assert set(bench_deploy.DEPTHS) <= set(RESNET_DEPTHS)
