"""What does --temporal-smoothing ALPHA buy on a moving thermal video? One measured experiment.

A synthetic moving video: wide synthetic scenes (util.data.scene.render, twice the frame width) seen
through a window that pans across them (width // frames pixels per frame, at least 1), with fresh
sensor noise on the thermal channel in every frame (Gaussian, --noise of the 0..1 range), so an
unsmoothed student's labels flicker.
A student segments it frame by frame (batch 1, as on a robot) for each ALPHA; reported:
- flicker: the share of static pixels (ground-truth label equal in the frame and the one before)
  whose predicted label changes between the two frames;
- mIoU against the ground truth over all frames (smoothing lags at moving edges, noise hurts);
- ms/frame of the whole predict step (median), and the added ms against ALPHA 0 (plain argmax).

The student: --weights (a trained EKNet .pth, e.g. a run's best.pth), or, by default, an EKNet-18
trained here with cross-entropy on --train-steps batches of fresh synthetic frames (a few minutes;
seeded). Results go to --out (JSON) and are printed as a Markdown table.

    python benchmarks/experiment_smoothing.py --out runs/smoothing.json
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

import common  # noqa: F401 - puts the repository root on sys.path
from model import EKNet
from util.data.info import info_for_classes
from util.data.mfnet import N_CLASS
from util.data.scene import render
from util.deploy.backends import TorchSegmenter
from util.deploy.predictor import ProbabilityPredictor, predict_batch
from util.engine.checkpoint import build_from_weights
from util.engine.folders import write_json
from util.engine.metrics import ConfusionMatrix

ALPHAS = (0.0, 0.3, 0.5, 0.7, 0.85)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="a trained EKNet .pth (default: train a small one here)")
    p.add_argument("--out", default="runs/smoothing.json")
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=48, help="frames per video")
    p.add_argument("--noise", type=float, default=0.03, help="thermal noise sigma per frame (0..1 scale)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train_student(args: argparse.Namespace) -> EKNet:
    """An EKNet-18 trained with cross-entropy on fresh synthetic frames (thermal only)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1000)
    model = EKNet(n_class=N_CLASS, depth=18, height=args.height, width=args.width).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    start = time.perf_counter()
    for step in range(args.train_steps):
        frames = [render(rng, args.height, args.width, bool(rng.random() < 0.5),
                          int(rng.integers(1, N_CLASS)))
                  for _ in range(args.batch_size)]
        x = torch.from_numpy(np.stack([f[0][:, :, 3] for f in frames]).astype(np.float32) / 255)[:, None]
        y = torch.from_numpy(np.stack([f[1] for f in frames]).astype(np.int64))
        loss = F.cross_entropy(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.train_steps - 1:
            print(f"train step {step + 1}/{args.train_steps}: loss {loss.item():.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval()


def moving_videos(args: argparse.Namespace) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(thermal frames float32 in [0, 1], label frames) per video: a pan over a scene twice as wide."""
    rng = np.random.default_rng(args.seed)
    videos = []
    for v in range(args.videos):
        image, label = render(rng, args.height, 2 * args.width, v % 2 == 0, int(rng.integers(1, N_CLASS)))
        thermal = image[:, :, 3].astype(np.float32) / 255
        step = max(1, args.width // max(1, args.frames))
        frames, labels = [], []
        for t in range(args.frames):
            x0 = min(t * step, args.width)
            noisy = thermal[:, x0:x0 + args.width] + rng.normal(0, args.noise, (args.height, args.width))
            frames.append(np.clip(noisy, 0, 1).astype(np.float32))
            labels.append(label[:, x0:x0 + args.width])
        videos.append((frames, labels))
    return videos


def measure(seg: TorchSegmenter, videos: list, alpha: float) -> dict:
    """Flicker on static pixels, mIoU and ms/frame for one ALPHA (0: the default argmax path)."""
    conf = ConfusionMatrix(seg.n_class)
    changed = static = 0
    times = []
    for frames, labels in videos:
        predict = ProbabilityPredictor(seg, alpha) if alpha > 0 else (lambda t: predict_batch(seg, t))
        prev_pred = prev_label = None
        for thermal, label in zip(frames, labels):
            t0 = time.perf_counter()
            pred = predict([thermal])[0]
            times.append(time.perf_counter() - t0)
            conf.update(torch.from_numpy(pred), torch.from_numpy(label))
            if prev_pred is not None:
                still = label == prev_label
                static += int(still.sum())
                changed += int((still & (pred != prev_pred)).sum())
            prev_pred, prev_label = pred, label
    return {"alpha": alpha, "flicker": changed / static if static else float("nan"),
            "miou": conf.compute()["miou"], "ms_per_frame": 1000 * statistics.median(times), "frames": len(times)}


def markdown(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| ALPHA | label flicker on static pixels | mIoU | ms/frame (median) | added ms/frame |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['alpha']:g} | {100 * r['flicker']:.2f}% | {100 * r['miou']:.1f} | "
                     f"{r['ms_per_frame']:.2f} | {r['ms_per_frame'] - base['ms_per_frame']:+.2f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    if any(not 0 <= a < 1 for a in args.alphas):
        raise SystemExit("error: --alphas: expected numbers in [0, 1)")
    alphas = sorted(set([0.0] + list(args.alphas)))
    model, info = (build_from_weights(args.weights, expect="EKNet") if args.weights
                   else (train_student(args), info_for_classes(N_CLASS)))  # the synthetic data: MFNet's classes
    seg = TorchSegmenter(model.eval(), info, "cpu", channels_last=True)
    videos = moving_videos(args)
    measure(seg, [(videos[0][0][:2], videos[0][1][:2])], 0.0)  # warm-up
    rows = [measure(seg, videos, a) for a in alphas]
    result = {"config": {k: v for k, v in vars(args).items()}, "threads": torch.get_num_threads(),
              "rows": rows, "table": markdown(rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(result["table"])
    print(f"results in {out}")
    return result


if __name__ == "__main__":
    main()
