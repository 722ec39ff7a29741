"""The whole CEKD pipeline in one call (what `make demo` runs):

synthetic data (generated when absent) -> CENet teacher -> EKNet student distilled from it
-> for contrast, the same EKNet trained on ground truth alone -> one comparison table.

Each network is trained by the same `fit` as trainTeacher.py / trainStudent.py and tested
on its best validation epoch; everything lands in one new folder under runs/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from .mfnet import TEST_SPLITS
from .runs import new_run_dir, write_json
from .training import add_train_args, fit

STAGES = (("teacher", "CENet teacher (RGB + thermal)"),
          ("student", "EKNet student, CEKD distillation (thermal)"),
          ("student-gt", "EKNet student, ground truth only (thermal)"))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the CEKD pipeline end to end (defaults: a few minutes on a CPU).")
    p.add_argument("--data-dir", default="dataset/synthetic", help="MFNet-format folder (synthetic one made if absent)")
    p.add_argument("--frames", type=int, default=240, help="frames of the synthetic set, when it is generated")
    p.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101, 152))
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20, help="epochs of each of the three trainings")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.05, help="higher than the release's 0.01: no ImageNet weights here")
    p.add_argument("--pretrained", action="store_true", help="ImageNet backbones (needs them cached or online)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name", default=None, help="folder under --runs-dir (default: cekd and time)")
    p.add_argument("--skip-baseline", action="store_true", help="do not train the ground-truth-only student")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further trainer options passed to all three trainings (e.g. --amp bf16)")
    return p.parse_args(argv)


def _trainer_args(role: str, args: argparse.Namespace, out: Path, name: str, extra: list[str]) -> argparse.Namespace:
    argv = ["--data-dir", args.data_dir, "--depth", str(args.depth), "--height", str(args.height),
            "--width", str(args.width), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--device", args.device, "--workers", str(args.workers), "--seed", str(args.seed),
            "--runs-dir", str(out), "--run-name", name, "--image-every", "50", *extra]
    if not args.pretrained:
        argv.append("--no-pretrained")
    if args.no_progress:
        argv.append("--no-progress")
    return add_train_args(argparse.ArgumentParser(), role).parse_args(argv)


def comparison_table(results: dict[str, dict]) -> str:
    """One row per network, mIoU and mAcc (percent) per test split."""
    splits = [s for s in TEST_SPLITS if any(s in r["splits"] for r in results.values())]
    head = f"{'network':<46}" + "".join(f"{s + ' mIoU':>17}{s + ' mAcc':>17}" for s in splits)
    lines = [head, "-" * len(head)]
    labels = dict(STAGES)
    for key, r in results.items():
        cells = ""
        for s in splits:
            m = r["splits"].get(s)
            cells += f"{100 * m['miou']:>17.2f}{100 * m['macc']:>17.2f}" if m else f"{'-':>17}{'-':>17}"
        lines.append(f"{labels.get(key, key):<46}{cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    data = Path(args.data_dir)
    if not data.exists():
        from .synthetic import ensure_synthetic
        print(f"[1/4] generating synthetic MFNet-format data ({args.frames} frames of "
              f"{args.height}x{args.width}) in {data}", flush=True)
        ensure_synthetic(data, n_frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    else:
        print(f"[1/4] using the data in {data}", flush=True)
    out = new_run_dir(args.runs_dir, args.run_name, "cekd")

    results, timings = {}, {}
    t = time.perf_counter()
    print(f"[2/4] training the CENet teacher ({args.epochs} epochs) -> {out / 'teacher'}", flush=True)
    results["teacher"] = fit(_trainer_args("teacher", args, out, "teacher", args.extra), "teacher")
    timings["teacher"] = time.perf_counter() - t

    t = time.perf_counter()
    print(f"[3/4] distilling the EKNet student from the teacher -> {out / 'student'}", flush=True)
    sargs = _trainer_args("student", args, out, "student", args.extra)
    sargs.teacher = str(out / "teacher" / "best.pth")
    results["student"] = fit(sargs, "student")
    timings["student"] = time.perf_counter() - t

    if not args.skip_baseline:
        t = time.perf_counter()
        print(f"[4/4] for contrast, the EKNet student on ground truth alone -> {out / 'student-gt'}", flush=True)
        gargs = _trainer_args("student", args, out, "student-gt", args.extra)
        gargs.no_distill = True
        results["student-gt"] = fit(gargs, "student")
        timings["student-gt"] = time.perf_counter() - t

    table = comparison_table(results)
    total = time.perf_counter() - t_start
    summary = {"table": table, "seconds": {**timings, "total": total},
               "settings": {k: v for k, v in vars(args).items()},
               "results": {k: {"run_dir": r["run_dir"], "best_epoch": r["best_epoch"], "best_val_miou": r["best_val_miou"],
                               "splits": {s: {"miou": m["miou"], "macc": m["macc"], "images": m["images"]}
                                          for s, m in r["splits"].items()}} for k, r in results.items()}}
    write_json(summary, out / "comparison.json")
    (out / "comparison.txt").write_text(table + "\n")
    print(f"\nCEKD on {data} (ResNet-{args.depth}, {args.height}x{args.width}, {args.epochs} epochs each, "
          f"{total / 60:.1f} min):\n{table}\n\nall outputs in {out}", flush=True)
    summary["out_dir"] = str(out)
    return summary


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    try:
        return run(args)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
