"""Does distilling on unlabeled frames help when labels are few? One measured experiment on the synthetic data.

The synthetic set is generated with an unlabeled pool drawn from the same scene model
(util.synthetic --unlabeled-frames). Only --labelled frames of its train split keep their labels
(a seeded choice; val and test stay whole). A CENet teacher is trained on those labelled frames
(one for every seed, or one per seed with --teacher-per-seed); then, per seed, ResNet-18 EKNet students:

    (a) labels only             trainStudent.py --no-distill
    (b) CEKD, labelled frames   trainStudent.py (today's recipe)
    (c) CEKD, labelled + N unlabeled frames                  --unlabeled POOL_N
    (d) (c) with the ground-truth term on the labelled frames --unlabeled POOL_N --gt-weight 1

for every N of --unlabeled-counts ((c) at N = 0 is (b); (d) at N = 0 is (b) with --gt-weight 1).
Every student has the same number of epochs, an epoch being one pass over the labelled frames: (c)
and (d) take --mix K unlabeled frames into every batch (trainStudent.py --unlabeled-per-batch K; the
pool's frames taken in turn, so a larger pool means more distinct frames, not more steps), so they
make batch/(batch-K) times the steps of (a) and (b). --mix 0 instead shows every frame once per epoch
(then a larger pool also means more steps). The JSON records each run's frames per epoch and seconds.
Test mIoU (best validation epoch) is reported as the
mean and the sample standard deviation over the seeds; a row "beats (a)" when its mean exceeds (a)'s
by more than the two standard deviations together.

    python benchmarks/experiment_unlabeled.py --out runs/unlabeled      # defaults: about 35 min on 2 CPU cores

Each run is skipped when its results exist in --out, so an interrupted experiment continues.
Writes --out/unlabeled.json (every run, the summary, timings) and --out/unlabeled.md (the table).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np

import common
from util.data.info import write_unlabeled_info
from util.data.layout import IMAGE_DIR, read_split, write_split
from util.data.owned import Owner, write_owned
from util.data.synthetic import META_FILE, UNLABELED_DIR, generate_dataset
from util.engine import StudentConfig, TeacherConfig, resolve
from util.engine.folders import BEST, write_json
from util.files import atomic_write
from util.options import ArgumentParser, integer, multiple_of, number

ROWS = {"a": "(a) labels only", "b": "(b) CEKD, labelled frames", "c": "(c) CEKD, labelled + unlabeled",
        "d": "(d) (c) + --gt-weight 1"}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="benchmarks/experiment_unlabeled.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/unlabeled")
    p.add_argument("--frames", type=integer(8), default=240, help="labelled synthetic frames (half of them train)")
    p.add_argument("--labelled", type=integer(1), default=40, help="train frames that keep their labels")
    p.add_argument("--unlabeled-counts", type=integer(0), nargs="+", default=[0, 100, 400], metavar="N")
    p.add_argument("--seeds", type=integer(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--height", type=multiple_of(32, 64), default=64)
    p.add_argument("--width", type=multiple_of(32, 64), default=96)
    p.add_argument("--epochs", type=integer(1), default=25, help="epochs of every student")
    p.add_argument("--teacher-epochs", type=integer(1), default=60, help="epochs of the teacher (few frames)")
    p.add_argument("--batch-size", type=integer(1), default=4)
    p.add_argument("--lr", type=number(above=0), default=0.05)
    p.add_argument("--mix", type=integer(0), default=2, metavar="K",
                   help="unlabeled frames in each batch of (c) and (d) (trainStudent.py --unlabeled-per-batch; "
                        "0: every frame once per epoch, shuffled together)")
    p.add_argument("--teacher-per-seed", action="store_true",
                   help="train a teacher for every seed (the spread then includes the teacher's)")
    p.add_argument("--workers", type=integer(0), default=1)
    p.add_argument("--max-steps-per-epoch", type=integer(0), default=0, help="(for a smoke test) cap on steps")
    args = p.parse_args(argv)
    if args.labelled >= args.frames // 2:
        p.error(f"--labelled {args.labelled}: must be below the train split's {args.frames // 2} frames")
    if args.mix and args.mix >= args.batch_size:
        p.error(f"--mix {args.mix}: must be below --batch-size {args.batch_size}")
    return args


EXPERIMENT = Owner("benchmarks.experiment_unlabeled", "experiment.json")  # the folders it derives


def prepare_data(args: argparse.Namespace, root: Path) -> tuple[Path, dict[int, Path]]:
    """(the few-label data folder, {N: unlabeled pool of N frames}); made once, reused afterwards."""
    full, few = root / "synthetic", root / f"labelled-{args.labelled}"
    n_pool = max(args.unlabeled_counts)
    if not full.is_dir():
        generate_dataset(full, args.frames, args.height, args.width, seed=0, unlabeled_frames=max(n_pool, 1))
    meta = json.loads((full / META_FILE).read_text())
    made = {"n_frames": meta["n_frames"], "height": meta["height"], "width": meta["width"],
            "unlabeled_frames": meta.get("unlabeled_frames", 0)}
    want = {"n_frames": args.frames, "height": args.height, "width": args.width}
    if any(made[k] != v for k, v in want.items()) or made["unlabeled_frames"] < n_pool:
        raise SystemExit(f"error: {full} was generated with {made}; this experiment needs {want} and a pool of "
                         f"{n_pool}: choose another --out")
    if not few.is_dir():  # the full set with train.txt cut to a seeded choice of --labelled frames
        train = read_split(full, "train")
        keep = sorted(train[i] for i in np.random.default_rng(0).permutation(len(train))[:args.labelled])

        def fill_few(work: Path) -> dict:
            shutil.copytree(full, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(UNLABELED_DIR, META_FILE))
            write_split(work, "train", keep)
            return {"from": str(full), "labelled": args.labelled}

        write_owned(few, EXPERIMENT, False, fill_few)
    pools = {}
    names = read_split(full / UNLABELED_DIR, "train")
    for n in (n for n in args.unlabeled_counts if n > 0):
        pool = root / f"pool-{n}"
        if not pool.is_dir():
            def fill_pool(work: Path, n: int = n) -> dict:
                (work / IMAGE_DIR).mkdir()
                for name in names[:n]:  # the pools are nested: pool-100 is the first 100 frames of pool-400
                    shutil.copy2(full / UNLABELED_DIR / IMAGE_DIR / f"{name}.png", work / IMAGE_DIR)
                write_split(work, "train", names[:n])
                write_unlabeled_info(work, f"synthetic unlabeled pool of {n}")
                return {"from": str(full / UNLABELED_DIR), "unlabeled_frames": n}

            write_owned(pool, EXPERIMENT, False, fill_pool)
        pools[n] = pool
    return few, pools


def stage_configs(args: argparse.Namespace, data: Path, pools: dict[int, Path], out: Path,
                  seed: int) -> dict[str, TeacherConfig | StudentConfig]:
    """Every run of one seed, by name: teacher, a, b, then c-N and d-N for each N."""
    shared = dict(data_dir=str(data), height=args.height, width=args.width, batch_size=args.batch_size, lr=args.lr,
                  workers=args.workers, seed=seed, runs_dir=str(out), pretrained=False, progress=False,
                  image_every=0, eval_splits=("test",), depth=18, max_steps_per_epoch=args.max_steps_per_epoch)
    t_name = f"teacher-s{seed}" if args.teacher_per_seed else f"teacher-s{args.seeds[0]}"
    teacher = str(out / t_name / BEST)
    t_shared = {**shared, "seed": int(t_name.rsplit("-s", 1)[1])}
    runs: dict[str, TeacherConfig | StudentConfig] = {
        t_name: TeacherConfig(run_name=t_name, epochs=args.teacher_epochs, **t_shared),
        f"a-s{seed}": StudentConfig(run_name=f"a-s{seed}", epochs=args.epochs, distill=False, **shared),
        f"b-s{seed}": StudentConfig(run_name=f"b-s{seed}", epochs=args.epochs, teacher=teacher, **shared)}
    for n in args.unlabeled_counts:
        extra = dict(unlabeled=(str(pools[n]),), unlabeled_per_batch=args.mix) if n else {}
        if n:
            runs[f"c{n}-s{seed}"] = StudentConfig(run_name=f"c{n}-s{seed}", epochs=args.epochs, teacher=teacher,
                                                  **extra, **shared)
        runs[f"d{n}-s{seed}"] = StudentConfig(run_name=f"d{n}-s{seed}", epochs=args.epochs, teacher=teacher,
                                              gt_weight=1.0, **extra, **shared)
    return {name: resolve(cfg) for name, cfg in runs.items()}


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) of test mIoU in percent."""
    pct = [100 * v for v in values]
    return {"mean": statistics.fmean(pct), "std": statistics.stdev(pct) if len(pct) > 1 else 0.0, "n": len(pct),
            "values": pct}


def summarise(args: argparse.Namespace, results: dict[str, dict]) -> dict[str, dict]:
    """Row key ("teacher", "a", "b", "c100", "d0", ...) -> spread over the seeds."""
    counts = args.unlabeled_counts
    keys = ["teacher", "a", "b"] + [f"c{n}" for n in counts if n] + [f"d{n}" for n in counts]
    seeds = {k: args.seeds for k in keys}
    if not args.teacher_per_seed:
        seeds["teacher"] = args.seeds[:1]
    return {k: spread([results[f"{k}-s{s}"]["splits"]["test"]["miou"] for s in seeds[k]]) for k in keys}


def _cell(s: dict) -> str:
    return f"{s['mean']:.2f}" if s["n"] == 1 else f"{s['mean']:.2f} ± {s['std']:.2f}"


def _beats(row: dict, base: dict) -> str:
    gap = row["mean"] - base["mean"]
    if min(row["n"], base["n"]) < 2:
        return "one seed: no spread to judge by"
    return "yes" if gap > row["std"] + base["std"] else ("no (within spread)" if gap > 0 else "no")


def _mix(args: argparse.Namespace) -> str:
    if args.mix:
        return f"{args.mix} unlabeled frames in each batch of {args.batch_size}"
    return "every frame once per epoch"


def markdown(args: argparse.Namespace, summary: dict[str, dict], minutes: float) -> str:
    counts = args.unlabeled_counts
    head = "| student | " + " | ".join(f"{n} unlabeled" for n in counts) + " |"
    title = (f"Test mIoU % (mean ± std over seeds {', '.join(map(str, args.seeds))}), synthetic data, "
             f"{args.labelled} labelled train frames, {args.height}x{args.width}, ResNet-18, {args.epochs} student "
             f"epochs, teacher {args.teacher_epochs} epochs, (c)/(d) with {_mix(args)}; {minutes:.0f} min on "
             f"{common.cpu_name()}")
    lines = [title, "",
             f"Teacher (CENet, RGB + thermal, labelled frames): {_cell(summary['teacher'])}", "", head,
             "|---|" + "---|" * len(counts)]
    for key in "abcd":
        cells = []
        for i, n in enumerate(counts):
            k = {"a": "a", "b": "b", "c": f"c{n}" if n else "b", "d": f"d{n}"}[key]
            cells.append(_cell(summary[k]) if k in summary and (key in "cd" or i == 0) else "")
        lines.append(f"| {ROWS[key]} | " + " | ".join(cells) + " |")
    lines += ["", "Beats (a) beyond the seeds' spread (mean gap > the two standard deviations together):", ""]
    for k, s in summary.items():
        if k[0] in "cd":
            gap = s["mean"] - summary["a"]["mean"]
            lines.append(f"- {k}: {gap:+.2f} points, {s['beats_a']}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    t = time.perf_counter()
    data, pools = prepare_data(args, out / "data")
    results, seconds = {}, {}
    for seed in args.seeds:
        for name, cfg in stage_configs(args, data, pools, out, seed).items():
            results[name] = common.run_stage(name, cfg, out, seconds)
    minutes = (time.perf_counter() - t) / 60
    summary = summarise(args, results)
    for k, row in summary.items():
        if k[0] in "cd":
            row["beats_a"] = _beats(row, summary["a"])
    text = markdown(args, summary, minutes)
    runs = {name: {"test_miou": r["splits"]["test"]["miou"], "best_epoch": r["best_epoch"],
                   "frames_per_epoch": (r["history"][-1].get("frames") if r.get("history") else None),
                   "seconds": seconds.get(name)} for name, r in results.items()}
    doc = {"settings": vars(args), "summary": summary, "runs": runs, "table": text, "cpu": common.cpu_name(),
           "minutes": minutes}
    write_json(doc, out / "unlabeled.json")
    atomic_write(out / "unlabeled.md", lambda f: f.write(text))
    print(text, flush=True)
    return doc


if __name__ == "__main__":
    main()
