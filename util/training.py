"""The training driver shared by trainTeacher.py and trainStudent.py.

`add_train_args` declares every option (release defaults); `fit(args, role)` runs:
set-up (devices, processes, run folder), then per epoch train -> validate -> checkpoint,
then the best checkpoint on the test splits, results JSON and a release-format export.
Modelled on torchvision's references/segmentation/train.py.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from model import CENet, EKNet
from model.encoder import resnet_widths

from .checkpoint import FORMAT, build_from_weights, export_release, load_state, model_config, save_atomic, unwrap
from .data import MFDataset, verify_dataset
from .distributed import DistInfo, barrier, broadcast_object, cleanup_distributed, init_distributed
from .engine import DistillTask, SupervisedTask, TeacherTask, check_amp, evaluate, train_one_epoch
from .metrics import format_report
from .mfnet import CLASS_NAMES, N_CLASS, TEST_SPLITS
from .runs import new_run_dir, write_json

DEFAULT_DATA_DIR = "dataset/synthetic"
DEFAULT_TEACHER = "weights_backup/Teacher_model/final.pth"
# Options that may change when a run is resumed; every other option comes from the checkpoint.
RUNTIME_OPTIONS = ("device", "workers", "no_progress", "stop_after_epochs", "resume", "runs_dir")


class ShardSampler(Sampler):
    """Every `world_size`-th index from `rank`, unshuffled, no padding (exact distributed metrics)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def add_train_args(parser: argparse.ArgumentParser, role: str) -> argparse.ArgumentParser:
    """Options of both trainers; defaults are the release's (SPEC.md section 6)."""
    p = parser
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"MFNet-format folder (default {DEFAULT_DATA_DIR}, generated when absent)")
    p.add_argument("--n-class", type=int, default=N_CLASS)
    p.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152), help="ResNet depth")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-gamma", type=float, default=0.95, help="ExponentialLR decay per epoch")
    p.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet weights")
    p.add_argument("--no-augment", action="store_true", help="no flip/crop (as the release's loader)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name", default=None, help="folder under --runs-dir (default: role and time)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="continue a run from its last.pth (a run folder or a checkpoint file)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs (torchrun)")
    p.add_argument("--image-every", type=int, default=200, help="TensorBoard pictures every N steps (0: never)")
    p.add_argument("--eval-splits", nargs="*", default=list(TEST_SPLITS),
                   help="splits the best checkpoint is tested on at the end (absent ones are skipped)")
    p.add_argument("--stop-after-epochs", type=int, default=0,
                   help="stop this invocation after N epochs (continue later with --resume)")
    p.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap on training steps per epoch (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if role == "teacher":
        p.add_argument("--edge-loss", default="release", choices=("release", "logit"),
                       help="release: BCE on the sigmoid output (as released); logit: on the pre-sigmoid logit")
    else:
        p.add_argument("--teacher", default=DEFAULT_TEACHER,
                       help="CENet weights: our checkpoint or the released final.pth")
        p.add_argument("--loss-weights", type=float, nargs=4, default=[1.0, 1.0, 1.0, 1.0],
                       metavar=("SIM", "KDCE", "HINT", "SEG"))
        p.add_argument("--tau", type=float, default=6.0, help="KD temperature")
        p.add_argument("--no-distill", action="store_true",
                       help="train the student on ground truth alone (baseline without a teacher)")
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(info: DistInfo, msg: str) -> None:
    if info.is_main:
        print(msg, flush=True)


def resolve_resume(resume: str) -> Path:
    """The last.pth to resume from, given a run folder or a checkpoint file."""
    path = Path(resume)
    ckpt = path / "last.pth" if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint at {ckpt}")
    return ckpt


def build_network(role: str, args: argparse.Namespace) -> nn.Module:
    cls = CENet if role == "teacher" else EKNet
    return cls(n_class=args.n_class, depth=args.depth, height=args.height, width=args.width,
               pretrained=not args.no_pretrained)


def load_teacher(path: str, student_args: argparse.Namespace, device: torch.device) -> nn.Module:
    """A frozen CENet from our checkpoint or a released final.pth, checked against the student."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--teacher {path}: file not found; train one with trainTeacher.py or put the released "
            f"Teacher_model/final.pth there (or use --no-distill for a student without teacher)")
    teacher = build_from_weights(path, expect="CENet")
    problems = []
    if (teacher.height, teacher.width) != (student_args.height, student_args.width):
        problems.append(f"input size {teacher.height}x{teacher.width} vs {student_args.height}x{student_args.width}")
    if teacher.n_class != student_args.n_class:
        problems.append(f"{teacher.n_class} classes vs {student_args.n_class}")
    if resnet_widths(teacher.depth) != resnet_widths(student_args.depth):
        problems.append(f"ResNet-{teacher.depth} features vs ResNet-{student_args.depth} (hint widths differ)")
    if problems:
        raise ValueError(f"--teacher {path} does not fit this student: " + "; ".join(problems))
    return teacher.to(device).eval().requires_grad_(False)


def make_loaders(args: argparse.Namespace, role: str, info: DistInfo, device: torch.device):
    common = dict(height=args.height, width=args.width, n_class=args.n_class, seed=args.seed)
    edges = "auto" if role == "teacher" else False
    train_set = MFDataset(args.data_dir, "train", augment=not args.no_augment, edges=edges, **common)
    # val and the final test splits are checked now, in one pass, so a broken test split
    # fails the run before training rather than after the last epoch
    verify_dataset(args.data_dir, ["val", *present_splits(args)], args.n_class, decode_images=False)
    val_set = MFDataset(args.data_dir, "val", edges=False, check=False, **common)
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=args.seed, drop_last=False)
    kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, drop_last=False, **kw)
    val_loader = DataLoader(val_set, args.batch_size, sampler=ShardSampler(len(val_set), info.rank, info.world_size), **kw)
    return train_set, sampler, train_loader, val_loader


def present_splits(args: argparse.Namespace) -> list[str]:
    """The --eval-splits that exist in the data folder."""
    return [s for s in args.eval_splits if (Path(args.data_dir) / f"{s}.txt").is_file()]


def test_loader(args: argparse.Namespace, split: str, info: DistInfo) -> DataLoader:
    """Batch-1 loader of a test split (checked with val in make_loaders)."""
    ds = MFDataset(args.data_dir, split, height=args.height, width=args.width, n_class=args.n_class,
                   edges=False, check=False)
    return DataLoader(ds, 1, sampler=ShardSampler(len(ds), info.rank, info.world_size), num_workers=args.workers)


def fit(args: argparse.Namespace, role: str) -> dict:
    """Train one network end to end; return the results written to results.json."""
    info, device = init_distributed(args.device)
    try:
        return _fit(args, role, info, device)
    finally:
        cleanup_distributed()


def _fit(args: argparse.Namespace, role: str, info: DistInfo, device: torch.device) -> dict:
    ckpt = None
    if args.resume:
        ckpt_path = resolve_resume(args.resume)
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = dict(ckpt["args"])
        saved.update({k: getattr(args, k) for k in RUNTIME_OPTIONS if hasattr(args, k)})
        args = argparse.Namespace(**saved)
        run_dir = ckpt_path.parent
    else:
        if info.is_main and args.data_dir == DEFAULT_DATA_DIR and not Path(args.data_dir).exists():
            from .synthetic import ensure_synthetic
            _log(info, f"generating the synthetic MFNet-format data in {args.data_dir}")
            ensure_synthetic(args.data_dir)
        barrier()
    check_amp(args.amp, device)
    seed_everything(args.seed)
    task_name = role if role == "teacher" else ("student-gt" if args.no_distill else "student")
    # data and teacher are checked before the run folder exists: a bad input leaves nothing behind
    train_set, sampler, train_loader, val_loader = make_loaders(args, role, info, device)
    if role == "teacher":
        task = TeacherTask(args.edge_loss)
    elif args.no_distill:
        task = SupervisedTask()
    else:
        task = DistillTask(load_teacher(args.teacher, args, device), args.loss_weights, args.tau)
    if ckpt is None:
        if info.is_main:
            run_dir = new_run_dir(args.runs_dir, args.run_name, role, " or continue it with --resume {path}")
        run_dir = Path(broadcast_object(str(run_dir) if info.is_main else None))
    _log(info, f"[{task_name}] run folder {run_dir}  device {device}  processes {info.world_size}")
    if role == "teacher" and not train_set.has_edges:
        _log(info, f"note: {args.data_dir} has no edge_4x maps; training without the edge loss "
                   f"(make them with: python -m util.edges --data-dir {args.data_dir})")
    seed_everything(args.seed)  # same initial weights with or without a teacher loaded before
    model = build_network(role, args).to(device)
    in_channels = unwrap(model).in_channels
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.enabled:
        if args.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif args.sync_bn:
            _log(info, "note: --sync-bn needs CUDA (torch's SyncBatchNorm is GPU-only); ignored on the CPU")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
    start_epoch, step, best, history = 0, 0, {"miou": -1.0, "epoch": 0}, []
    if ckpt is not None:
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, best, history = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["history"]
        _log(info, f"resumed from {run_dir / 'last.pth'} after epoch {start_epoch}")

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tb"))
    show = info.is_main and not args.no_progress
    saved_args = dict(vars(args))
    done_this_call = 0
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            t0 = time.perf_counter()
            losses, step, ips = train_one_epoch(
                model, task, train_loader, optimizer, device, epoch, in_channels, amp=args.amp, scaler=scaler,
                channels_last=args.channels_last, writer=writer, image_every=args.image_every,
                global_step=step, show=show, max_steps=args.max_steps_per_epoch)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            cm, val_loss = evaluate(model, val_loader, device, in_channels, args.n_class, amp=args.amp,
                                    channels_last=args.channels_last, show=show, desc=f"epoch {epoch} val")
            val = cm.compute()
            record = {"epoch": epoch, "lr": lr, "train": losses, "val_loss": val_loss,
                      "val_miou": val["miou"], "val_macc": val["macc"], "images_per_s": ips,
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            is_best = val["miou"] > best["miou"]
            if is_best:
                best = {"miou": val["miou"], "epoch": epoch}
            if info.is_main:
                _log_epoch(writer, record, val, epoch)
                state = {"format": FORMAT, "network": type(unwrap(model)).__name__, "config": model_config(model),
                         "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "lr_scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                         "epoch": epoch, "step": step, "best": best, "history": history, "args": saved_args}
                if is_best:  # best first: a kill between the two writes never leaves last ahead of best
                    save_atomic({k: state[k] for k in ("format", "network", "config", "model", "epoch", "args")},
                                run_dir / "best.pth")
                save_atomic(state, run_dir / "last.pth")
                print(f"[{task_name}] epoch {epoch}/{args.epochs}  loss {losses.get('total', float('nan')):.4f}  "
                      f"val mIoU {100 * val['miou']:.2f}  mAcc {100 * val['macc']:.2f}  "
                      f"{ips:.1f} img/s  {record['seconds']:.0f}s" + ("  (best)" if is_best else ""), flush=True)
            done_this_call += 1
            if args.stop_after_epochs and done_this_call >= args.stop_after_epochs and epoch < args.epochs:
                _log(info, f"stopped after {done_this_call} epoch(s); continue with --resume {run_dir}")
                return {"run_dir": str(run_dir), "stopped_at_epoch": epoch}
    except FloatingPointError as exc:
        raise SystemExit(f"error: {exc}; training stopped, the last good checkpoint is {run_dir / 'last.pth'}")
    finally:
        if writer is not None:
            writer.flush()

    results = final_evaluation(args, role, task_name, model, run_dir, best, history, info, device, in_channels)
    if writer is not None:
        writer.close()
    return results


def _log_epoch(writer, record: dict, val: dict, epoch: int) -> None:
    writer.add_scalar("val/loss", record["val_loss"], epoch)
    writer.add_scalar("val/mIoU", val["miou"], epoch)
    writer.add_scalar("val/mAcc", val["macc"], epoch)
    writer.add_scalar("train/images_per_s", record["images_per_s"], epoch)
    writer.add_scalar("train/epoch_lr", record["lr"], epoch)
    for name, iou in zip(CLASS_NAMES, val["iou"]):
        if not np.isnan(iou):
            writer.add_scalar(f"val_iou/{name}", iou, epoch)


def final_evaluation(args, role, task_name, model, run_dir: Path, best: dict, history: list,
                     info: DistInfo, device, in_channels: int) -> dict:
    """Best checkpoint on the test splits; results.json and final.pth (release format)."""
    barrier()  # rank 0 has written best.pth
    load_state(model, run_dir / "best.pth")
    results = {"role": task_name, "run_dir": str(run_dir), "best_epoch": best["epoch"],
               "best_val_miou": best["miou"], "config": model_config(model), "splits": {}, "history": history}
    for split in present_splits(args):
        loader = test_loader(args, split, info)
        cm, _ = evaluate(model, loader, device, in_channels, args.n_class, amp=args.amp,
                         channels_last=args.channels_last, show=info.is_main and not args.no_progress, desc=split)
        metrics = cm.compute()
        results["splits"][split] = {"images": len(loader.dataset), **metrics}
        _log(info, format_report(metrics, title=f"[{task_name}] {split}: {len(loader.dataset)} images, "
                                                f"best epoch {best['epoch']}"))
    if info.is_main:
        export_release(model, run_dir / "final.pth")
        write_json(results, run_dir / "results.json")
        print(f"[{task_name}] results in {run_dir / 'results.json'}; release-format weights {run_dir / 'final.pth'}")
    return results


def main_for(role: str, argv: Optional[list[str]] = None) -> dict:
    """Parse the command line of a trainer script and run it, with one-line errors."""
    parser = add_train_args(argparse.ArgumentParser(description=f"Train the CEKD {role}."), role)
    args = parser.parse_args(argv)
    try:
        return fit(args, role)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
