"""The inference runtimes, imported so that they write nothing under the home folder.

Left alone, `import onnxruntime` writes a device id and a telemetry database to
~/.cache/Microsoft/DeveloperTools/.onnxruntime (ORT_DISABLE_TELEMETRY=1 stops it), and `import
openvino` imports its model-conversion tool, whose import starts OpenVINO's telemetry (a client id
and usage statistics under ~/intel). We read ONNX files with `Core.read_model` and never convert,
so the tool is not imported at all; OpenVINO's model cache stays off (no CACHE_DIR is set).
"""
from __future__ import annotations

import os
import sys
from types import ModuleType


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
