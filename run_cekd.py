"""The whole CEKD pipeline in one command (what `make demo` runs):

synthetic data (generated when absent) -> CENet teacher -> EKNet student distilled from it
-> for contrast, the same EKNet trained on ground truth alone -> one comparison table.

    python run_cekd.py               # synthetic data, about ten minutes on a 2-core CPU
    python run_cekd.py --help        # the paper's settings: see README.md

Each network is trained by the `main` of trainTeacher.py / trainStudent.py with a config
built here, and tested on its best validation epoch; everything lands in one new folder
under runs/.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Optional

import trainStudent
import trainTeacher
from util.data.mfnet import TEST_SPLITS
from util.engine import StudentConfig, TeacherConfig, run_cli
from util.engine.cli import resolve
from util.engine.config import COMMON_SPECS as SPEC, ConfigError, given_options
from util.engine.folders import BEST, new_run_dir, write_json
from util.files import atomic_write
from util.options import ArgumentParser, integer

STAGES = (("teacher", "CENet teacher (RGB + thermal)"),
          ("student", "EKNet student, CEKD distillation (thermal)"),
          ("student-unlabeled", "EKNet student, CEKD + unlabeled pool (thermal)"),
          ("student-gt", "EKNet student, ground truth only (thermal)"))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="run_cekd.py",
                       description="Run the CEKD pipeline end to end (defaults: a few minutes on a CPU).")
    p.add_argument("--data-dir", default="dataset/synthetic", help="MFNet-format folder (synthetic one made if absent)")
    p.add_argument("--frames", type=integer(8), default=240, help="frames of the synthetic set, when it is generated")
    p.add_argument("--depth", type=SPEC["depth"], default=18, help="ResNet depth of every network (18, 34, 50, 101, 152)")
    p.add_argument("--teacher-depth", type=SPEC["depth"], default=None, help="the teacher's (default --depth)")
    p.add_argument("--student-depth", type=SPEC["depth"], default=None,
                   help="both students' (default --depth); another family than the teacher's uses a hint adapter")
    p.add_argument("--height", type=SPEC["height"], default=96)
    p.add_argument("--width", type=SPEC["width"], default=128)
    p.add_argument("--epochs", type=SPEC["epochs"], default=20, help="epochs of each of the three trainings")
    p.add_argument("--batch-size", type=SPEC["batch_size"], default=4)
    p.add_argument("--lr", type=SPEC["lr"], default=0.05, help="higher than the release's 0.01: no ImageNet weights here")
    p.add_argument("--pretrained", action="store_true", help="ImageNet backbones (needs them cached or online)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=SPEC["workers"], default=1)
    p.add_argument("--seed", type=SPEC["seed"], default=0)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name", type=SPEC["run_name"], default=None, help="folder under --runs-dir (default: cekd and time)")
    p.add_argument("--skip-baseline", action="store_true", help="do not train the ground-truth-only student")
    p.add_argument("--unlabeled-frames", type=integer(0), default=0, metavar="N",
                   help="also distil a student on the labelled frames plus N unlabeled synthetic frames of the same "
                        "scene model (label-free distillation; the pool is made beside --data-dir, in "
                        "DATA-unlabeled-N, when absent; synthetic data only; default 0: no such row)")
    p.add_argument("--unlabeled-per-batch", type=integer(0), default=0, metavar="K",
                   help="that row's mix: K unlabeled frames in each batch, an epoch one pass over the labelled "
                        "frames (default 0: every frame once per epoch)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further trainer options for all three trainings (e.g. --amp bf16); "
                        "each training takes those its trainer knows")
    return p.parse_args(argv)


def unlabeled_pool(args: argparse.Namespace) -> Path:
    """Where --unlabeled-frames N keeps its synthetic pool: beside the data folder."""
    data = Path(args.data_dir)
    return data.with_name(f"{data.name}-unlabeled-{args.unlabeled_frames}")


def stage_configs(args: argparse.Namespace, out: Path) -> dict[str, TeacherConfig | StudentConfig]:
    """The teacher's, the distilled student's, (with --unlabeled-frames) the student distilled on the
    unlabeled pool too, and the ground-truth student's configs."""
    common = dict(data_dir=args.data_dir, height=args.height, width=args.width,
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
                  workers=args.workers, seed=args.seed, runs_dir=str(out), image_every=50,
                  pretrained=args.pretrained, progress=args.progress)
    extra = args.extra
    t_depth, s_depth = args.teacher_depth or args.depth, args.student_depth or args.depth
    stages = {"teacher": _apply(TeacherConfig(run_name="teacher", depth=t_depth, **common), extra),
              "student": _apply(StudentConfig(run_name="student", depth=s_depth,
                                              teacher=str(out / "teacher" / BEST), **common), extra)}
    if args.unlabeled_frames:
        stages["student-unlabeled"] = _apply(StudentConfig(run_name="student-unlabeled", depth=s_depth,
                                                           teacher=str(out / "teacher" / BEST),
                                                           unlabeled=(str(unlabeled_pool(args)),),
                                                           unlabeled_per_batch=args.unlabeled_per_batch, **common),
                                                    extra)
    if not args.skip_baseline:
        stages["student-gt"] = _apply(StudentConfig(run_name="student-gt", depth=s_depth, distill=False, **common),
                                      extra)
    return stages


# Trainer options that make one training what it is in the comparison; --extra may not set them.
STAGE_OPTIONS = {"teacher": "--teacher", "distill": "--no-distill", "unlabeled": "--unlabeled",
                 "unlabeled_only": "--unlabeled-only", "unlabeled_per_batch": "--unlabeled-per-batch"}


def _apply(cfg, extra: list[str]):
    """`cfg` with the trainer options in `extra` (e.g. ["--amp", "bf16"]) that its trainer knows."""
    parser = (trainTeacher if isinstance(cfg, TeacherConfig) else trainStudent).get_args_parser()
    args, _ = parser.parse_known_args(extra)
    given = given_options(parser, extra, known_only=True)
    ours = [f for k, f in STAGE_OPTIONS.items() if k in given]
    if ours:
        raise ConfigError(f"--extra {' '.join(ours)}: run_cekd.py sets this for each training "
                          f"itself (the unlabeled row: --unlabeled-frames N [--unlabeled-per-batch K]); run "
                          f"trainStudent.py for other students")
    return resolve(dataclasses.replace(cfg, **{k: getattr(args, k) for k in given}))


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


def ensure_pool(args: argparse.Namespace) -> Path:
    """The synthetic unlabeled pool of --unlabeled-frames, generated (same scene model, size and seed as the
    synthetic data folder) when absent; one made earlier is used only when it was made for that data."""
    import json

    from util.data.synthetic import META_FILE, generate_unlabeled_pool

    pool, meta_path = unlabeled_pool(args), Path(args.data_dir) / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"--unlabeled-frames {args.unlabeled_frames}: {args.data_dir} is not synthetic data "
                         f"(no {META_FILE}); give your own unlabeled frames to trainStudent.py --unlabeled DIR")
    meta = json.loads(meta_path.read_text())
    want = {"unlabeled_frames": args.unlabeled_frames, "height": meta["height"], "width": meta["width"],
            "seed": meta["seed"], "day_fraction": meta["day_fraction"]}
    if pool.exists():
        try:
            made = json.loads((pool / META_FILE).read_text())
        except (OSError, ValueError):
            made = None
        if not isinstance(made, dict):
            raise ValueError(f"--unlabeled-frames {args.unlabeled_frames}: {pool} holds no readable {META_FILE} "
                             f"(made by an earlier version, or not by run_cekd.py); remove it and run again to "
                             f"make the pool")
        differ = [f"{k} {made.get(k)!r} (needed {v!r})" for k, v in want.items() if made.get(k) != v]
        if differ:
            raise ValueError(f"--unlabeled-frames {args.unlabeled_frames}: {pool} was not made for {args.data_dir}: "
                             f"{'; '.join(differ)}; remove it and run again to make the pool")
        print(f"      using the unlabeled pool in {pool}", flush=True)
        return pool
    print(f"      generating {args.unlabeled_frames} unlabeled synthetic frames in {pool}", flush=True)
    return generate_unlabeled_pool(pool, args.unlabeled_frames, meta["height"], meta["width"], meta["seed"],
                                   meta["day_fraction"])


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    data = Path(args.data_dir)
    stage_configs(args, Path(args.runs_dir))  # every option checked before anything is written
    if not data.exists():
        from util.data.synthetic import ensure_synthetic
        print(f"[1/4] generating synthetic MFNet-format data ({args.frames} frames of "
              f"{args.height}x{args.width}) in {data}", flush=True)
        ensure_synthetic(data, n_frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    else:
        print(f"[1/4] using the data in {data}", flush=True)
    if args.unlabeled_frames:
        ensure_pool(args)
    out = new_run_dir(args.runs_dir, args.run_name, "cekd")

    configs = stage_configs(args, out)
    steps = {"teacher": f"[2/4] training the CENet teacher ({args.epochs} epochs)",
             "student": "[3/4] distilling the EKNet student from the teacher",
             "student-gt": "[4/4] for contrast, the EKNet student on ground truth alone"}
    if args.unlabeled_frames:
        steps["student-unlabeled"] = (f"[3b/4] distilling an EKNet student on the labelled frames and "
                                      f"{args.unlabeled_frames} unlabeled ones ({unlabeled_pool(args)})")
    results, timings = {}, {}
    for stage, cfg in configs.items():
        t = time.perf_counter()
        print(f"{steps[stage]} -> {out / stage}", flush=True)
        trainer = trainTeacher if stage == "teacher" else trainStudent
        results[stage] = trainer.main(cfg)
        timings[stage] = time.perf_counter() - t
        if "stopped_at_epoch" in results[stage]:
            print(f"{stage} stopped after epoch {results[stage]['stopped_at_epoch']} (--stop-after-epochs); "
                  f"no comparison. Continue it with its trainer's --resume {out / stage}", flush=True)
            return {"out_dir": str(out), "stopped": stage}

    table = comparison_table(results)
    total = time.perf_counter() - t_start
    summary = {"table": table, "seconds": {**timings, "total": total},
               "settings": {k: v for k, v in vars(args).items()},
               "results": {k: {"run_dir": r["run_dir"], "best_epoch": r["best_epoch"], "best_val_miou": r["best_val_miou"],
                               "splits": {s: {"miou": m["miou"], "macc": m["macc"], "images": m["images"]}
                                          for s, m in r["splits"].items()}} for k, r in results.items()}}
    write_json(summary, out / "comparison.json")
    atomic_write(out / "comparison.txt", lambda f: f.write(table + "\n"))
    depths = {c.depth for c in configs.values()}
    print(f"\nCEKD on {data} (ResNet-{'/'.join(map(str, sorted(depths)))}, {args.height}x{args.width}, {args.epochs} epochs each, "
          f"{total / 60:.1f} min):\n{table}\n\nall outputs in {out}", flush=True)
    summary["out_dir"] = str(out)
    return summary


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
