"""Time the on-device confusion matrix against the release's per-frame host loop.

The release copied each frame's prediction and label to the host and called scikit-learn's
confusion_matrix; here the host side is util.engine.metrics.confusion_matrix_numpy_per_frame
(np.add.at, the same counting scikit-learn does without its input checks).

    python benchmarks/bench_confusion.py --frames 100 --device cpu
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import common
from util.data.mfnet import N_CLASS
from util.engine.metrics import ConfusionMatrix, confusion_matrix_numpy_per_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=393)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = common.resolve_device(args.device)

    g = torch.Generator(device=device).manual_seed(args.seed)
    shape = (args.frames, args.height, args.width)
    # int64 like argmax output and the release's labels
    preds = torch.randint(0, N_CLASS, shape, generator=g, device=device)
    targets = torch.randint(0, N_CLASS, shape, generator=g, device=device)
    common.sync(device)

    cm = ConfusionMatrix(N_CLASS, device=device)
    cm.update(preds[0], targets[0])  # warm-up (CUDA context, kernels)
    cm.reset()
    common.sync(device)
    t0 = time.perf_counter()
    for i in range(args.frames):
        cm.update(preds[i], targets[i])
    ours_metrics = cm.compute()  # copies the matrix to the host: synchronises
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = confusion_matrix_numpy_per_frame((preds[i] for i in range(args.frames)),
                                           (targets[i] for i in range(args.frames)), N_CLASS)
    t_ref = time.perf_counter() - t0

    ours = cm.mat.cpu().numpy()
    if not np.array_equal(ours, ref):
        raise SystemExit("MISMATCH: the two confusion matrices differ")
    print(f"device {device} ({common.device_name(device)}), torch threads {torch.get_num_threads()}, "
          f"{args.frames} frames of {args.height}x{args.width}, {int(ours.sum())} pixels, matrices equal")
    print(f"ours (bincount on {device.type}): {t_ours:.3f} s  ({1000 * t_ours / args.frames:.2f} ms/frame)")
    print(f"per-frame host loop (np.add.at):  {t_ref:.3f} s  ({1000 * t_ref / args.frames:.2f} ms/frame)")
    print(f"speed-up {t_ref / t_ours:.1f}x   (mIoU of random data {100 * ours_metrics['miou']:.2f} %)")


if __name__ == "__main__":
    main()
