"""How much accuracy does each step down in student cost lose? One measured experiment on the synthetic data.

A ResNet-50 CENet teacher is trained; EKNet students of depth 18, 34 and 50 are distilled from it
(18 and 34 through the hint adapter), plus one student with the optional ground-truth term. Every
student is tested on the test split in PyTorch, and exported to ONNX fp32 and int8 (calibrated on
the train split) whose test mIoU is measured too, so the table shows what quantisation costs.
Speed per 480x640 frame comes from benchmarks/bench_deploy.py (the architectures, not the weights,
set it); pass its JSON with --speed to join the two.

    python benchmarks/experiment_compact.py --epochs 12 --out runs/compact [--speed runs/deploy.json]

Each stage is skipped when its results exist in --out, so an interrupted experiment continues.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch

import common
from util.data.info import load_dataset_info
from util.data.synthetic import ensure_synthetic
from util.deploy.backends import OnnxSegmenter
from util.deploy.export import calibration_frames, export_onnx, quantize_int8
from util.engine import StudentConfig, TeacherConfig, build_from_weights
from util.engine.folders import BEST, write_json
from util.engine.loaders import split_loader
from util.engine.metrics import ConfusionMatrix
from util.files import atomic_write

STUDENTS = (("student-18", 18, 0.0), ("student-34", 34, 0.0), ("student-50", 50, 0.0), ("student-18-gt", 18, 1.0))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="dataset/synthetic")
    p.add_argument("--out", default="runs/compact")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--calib-frames", type=int, default=16)
    p.add_argument("--speed", default=None, help="bench_deploy.py JSON: ms/frame at 480x640 per depth and backend")
    return p.parse_args(argv)


def train_all(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    shared = dict(data_dir=args.data_dir, height=args.height, width=args.width, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, workers=args.workers, runs_dir=str(out),
                  pretrained=False, progress=False, image_every=0)
    results, seconds = {}, {}
    stages = [("teacher", TeacherConfig(run_name="teacher", depth=50, **shared))]
    stages += [(name, StudentConfig(run_name=name, depth=depth, gt_weight=gt, teacher=str(out / "teacher" / BEST),
                                    **shared)) for name, depth, gt in STUDENTS]
    for name, cfg in stages:
        results[name] = common.run_stage(name, cfg, out, seconds)
    return results


@torch.inference_mode()
def onnx_miou(path: Path, data_dir: str, n_class: int, ignore_index) -> float:
    seg = OnnxSegmenter(path)
    loader = split_loader(data_dir, "test", seg.height, seg.width, n_class)
    cm = ConfusionMatrix(n_class, ignore_index=ignore_index)
    for batch in loader:
        logits = torch.from_numpy(seg(batch["image"][:, 3:].numpy()))
        if logits.shape[-2:] != batch["label"].shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=batch["label"].shape[-2:], mode="bilinear")
        cm.update(logits.argmax(1), batch["label"])
    return cm.compute()["miou"]


def deploy_all(args: argparse.Namespace, out: Path, results: dict) -> dict[str, dict]:
    info = load_dataset_info(args.data_dir)
    calib, _, _ = calibration_frames(args.data_dir, args.height, args.width, args.calib_frames, 1)
    rows = {}
    for name, depth, gt in STUDENTS:
        fp32, int8 = out / name / "student.onnx", out / name / "student.int8.onnx"
        if not fp32.is_file():
            model, model_info = build_from_weights(out / name / BEST, expect="EKNet")
            export_onnx(model, fp32, model_info)
        if not int8.is_file():
            quantize_int8(fp32, int8, calib)
        rows[name] = {"depth": depth, "gt_weight": gt, "pytorch": results[name]["splits"]["test"]["miou"],
                      "onnx_fp32": onnx_miou(fp32, args.data_dir, info.n_class, info.ignore_index),
                      "onnx_int8": onnx_miou(int8, args.data_dir, info.n_class, info.ignore_index)}
    return rows


def speed_of(speed: Optional[dict], depth: int, backend: str) -> Optional[float]:
    for row in (speed or {}).get("rows", []):
        if row.get("depth") == depth and row.get("backend") == backend:
            return row.get("ms")
    return None


def table(results: dict, rows: dict, speed: Optional[dict]) -> str:
    head = (f"{'network':<28}{'test mIoU %':>12}{'ONNX fp32 %':>12}{'ONNX int8 %':>12}"
            f"{'fp32 ms*':>10}{'int8 ms*':>10}")
    lines = [head, "-" * len(head),
             f"{'CENet-50 teacher (RGB-T)':<28}{100 * results['teacher']['splits']['test']['miou']:>12.2f}"]
    for name, r in rows.items():
        label = f"EKNet-{r['depth']} student" + (" + GT term" if r["gt_weight"] else "")
        fp32, int8 = speed_of(speed, r["depth"], "ort-fp32"), speed_of(speed, r["depth"], "ort-int8")
        lines.append(f"{label:<28}{100 * r['pytorch']:>12.2f}{100 * r['onnx_fp32']:>12.2f}{100 * r['onnx_int8']:>12.2f}"
                     f"{fp32 if fp32 is not None else float('nan'):>10.1f}{int8 if int8 is not None else float('nan'):>10.1f}")
    lines.append("* ms per 480x640 frame, onnxruntime on this CPU (bench_deploy.py); mIoU on the synthetic test split")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    if args.data_dir == "dataset/synthetic":
        ensure_synthetic(args.data_dir)
    t = time.perf_counter()
    results = train_all(args, out)
    rows = deploy_all(args, out, results)
    speed = json.loads(Path(args.speed).read_text()) if args.speed else None
    text = table(results, rows, speed)
    summary = {"epochs": args.epochs, "size": [args.height, args.width], "rows": rows, "table": text,
               "teacher_test_miou": results["teacher"]["splits"]["test"]["miou"],
               "cpu": common.cpu_name(), "seconds": time.perf_counter() - t}
    write_json(summary, out / "compact.json")
    atomic_write(out / "compact.txt", lambda f: f.write(text + "\n"))
    print(text, flush=True)
    return summary


if __name__ == "__main__":
    main()
