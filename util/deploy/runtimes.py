"""The inference runtimes, imported so that they write nothing under the home folder.

Left alone, `import onnxruntime` writes a device id and a telemetry database to
~/.cache/Microsoft/DeveloperTools/.onnxruntime (ORT_DISABLE_TELEMETRY=1 stops it), and `import
openvino` imports its model-conversion tool, whose import starts OpenVINO's telemetry (a client id
and usage statistics under ~/intel). We read ONNX files with `Core.read_model` and never convert,
so the tool is not imported at all; OpenVINO's model cache stays off (no CACHE_DIR is set).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from types import ModuleType
from typing import Iterator, Optional


def import_onnxruntime() -> ModuleType:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read once, when the library loads
    import onnxruntime

    return onnxruntime


def import_openvino() -> ModuleType:
    """openvino without its conversion tool (and so without its telemetry); ImportError when absent."""
    if "openvino" not in sys.modules:
        # openvino/__init__.py does `try: from openvino.tools.ovc import convert_model except ImportError`
        blocked = "openvino.tools.ovc" not in sys.modules
        if blocked:
            sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # makes that import fail
        try:
            import openvino  # noqa: F401
        finally:
            if blocked:
                del sys.modules["openvino.tools.ovc"]
    return sys.modules["openvino"]


def openvino_available() -> bool:
    try:
        import_openvino()
    except ImportError:
        return False
    return True


def openvino_config(precision: str, threads: int | None = None) -> dict:
    """compile_model settings: INFERENCE_PRECISION_HINT for what runs in floating point (fp32 or bf16),
    latency-oriented (batch 1 on a robot), optionally a thread count."""
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _sigaltstack(new: Optional[_StackT]) -> Optional[_StackT]:
    """sigaltstack(2) of this thread: set `new` (unless None) and return the previous one; None where
    it is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = _StackT()
        if libc.sigaltstack(ctypes.byref(new) if new is not None else None, ctypes.byref(old)) != 0:
            return None
        return old
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Put this thread's alternate signal stack back as it was after the block.

    OpenVINO's compile_model installs a signal stack of its own on the calling thread and, when the
    compiled model is freed, puts back the one it replaced. With several compiled models freed in
    another order than made, the thread is left with a freed stack; CPython runs its signal handlers
    (Ctrl-C) on the alternate stack once faulthandler has set one, and the process then crashes."""
    saved = _sigaltstack(None)
    try:
        yield
    finally:
        if saved is not None:
            _sigaltstack(saved)

