"""One training epoch and one evaluation pass, shared by both trainers and both demos.

A `Task` says what the network sees and which loss it learns from:
- `TeacherTask`: CENet on RGB + thermal, CE + auto-weighted edge BCE.
- `DistillTask`: EKNet on thermal, the four CEKD terms against a frozen CENet.
- `SupervisedTask`: EKNet on thermal, plain CE on ground truth (the no-distillation baseline).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .distributed import all_reduce_sum
from .losses import check_finite, student_loss, supervised_student_loss, teacher_loss
from .metrics import ConfusionMatrix
from .visualize import colorize, edge_to_rgb, make_panel, tb_image, thermal_to_rgb


def model_inputs(image: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The channels a network reads from a 4-channel RGB-T batch: all four, or thermal only."""
    return image if in_channels == 4 else image[:, 3:]


class Task:
    name = "task"

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[dict, Any]:
        """(loss terms with "total", network output) for a batch prepared by `to_device`."""
        raise NotImplementedError


class TeacherTask(Task):
    name = "teacher"

    def __init__(self, edge_mode: str = "release"):
        self.edge_mode = edge_mode

    def loss(self, model, batch):
        out = model(batch["inputs"])
        return teacher_loss(out.logits, batch["label"], out.edge, out.edge_logit, batch.get("edge"),
                            self.edge_mode), out


class DistillTask(Task):
    name = "student"

    def __init__(self, teacher: nn.Module, weights=(1.0, 1.0, 1.0, 1.0), tau: float = 6.0):
        self.teacher, self.weights, self.tau = teacher.eval().requires_grad_(False), tuple(weights), tau

    def loss(self, model, batch):
        with torch.no_grad():
            out_t = self.teacher(batch["image_full"])
        out = model(batch["inputs"])
        return student_loss(out, out_t, self.weights, self.tau), out


class SupervisedTask(Task):
    name = "student-gt"

    def loss(self, model, batch):
        out = model(batch["inputs"])
        return supervised_student_loss(out, batch["label"]), out


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for --amp bf16/fp16, a no-op for --amp none."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse an --amp setting the device cannot run (fp16 autocast here needs CUDA)."""
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")


def to_device(batch: Mapping[str, Any], device: torch.device, in_channels: int,
              channels_last: bool = False) -> dict:
    """Move a loader batch to `device`; add `inputs` (what the network reads) and `image_full`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    out["image_full"] = full = out["image"].contiguous(memory_format=fmt)
    out["inputs"] = full if in_channels == 4 else model_inputs(out["image"], in_channels).contiguous(memory_format=fmt)
    return out


def _picture(batch: Mapping[str, Any], out: Any) -> np.ndarray:
    """Thermal | RGB | ground truth | prediction (| edge target | edge prediction) of sample 0."""
    image = batch["image"][0].detach().float().cpu()
    pred = out.logits[0].detach().argmax(0).cpu()
    h, w = pred.shape
    tiles = [thermal_to_rgb(image[3]), np.round(image[:3].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
             colorize(batch["label"][0].cpu()), colorize(pred)]
    if getattr(out, "edge", None) is not None:
        for e in (batch.get("edge"), out.edge):
            if e is not None:
                e = F.interpolate(e[:1].detach().float().cpu(), size=(h, w), mode="nearest")[0, 0]
                tiles.append(edge_to_rgb(e))
    return make_panel(tiles)


def train_step(model: nn.Module, task: Task, batch: Mapping[str, Any], optimizer: torch.optim.Optimizer,
               device: torch.device, amp: str = "none", scaler: Optional[torch.amp.GradScaler] = None,
               where: str = "") -> tuple[dict, Any]:
    """Forward, loss (checked for NaN/inf before any update), backward and one optimiser step."""
    with autocast(device, amp):
        losses, out = task.loss(model, batch)
    check_finite(losses, where)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses["total"].backward()
        optimizer.step()
    return losses, out


def train_one_epoch(model: nn.Module, task: Task, loader, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, in_channels: int, *, amp: str = "none",
                    scaler: Optional[torch.amp.GradScaler] = None, channels_last: bool = False,
                    writer=None, image_every: int = 0, global_step: int = 0, show: bool = True,
                    max_steps: int = 0) -> tuple[dict[str, float], int, float]:
    """Train for one pass over `loader`; return (mean of each loss term, global step, images/s)."""
    model.train()
    sums: dict[str, torch.Tensor] = {}
    n_batches, n_images, t0 = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch} train", disable=not show, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        if max_steps and i >= max_steps:
            break
        batch = to_device(batch, device, in_channels, channels_last)
        losses, out = train_step(model, task, batch, optimizer, device, amp, scaler,
                                 where=f"epoch {epoch} step {global_step}")
        global_step += 1
        n_batches += 1
        n_images += batch["image"].shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        ips = n_images / (time.perf_counter() - t0)
        if show:
            bar.set_postfix(loss=f"{losses['total'].item():.4f}", img_s=f"{ips:.1f}")
        if writer is not None:
            for k, v in losses.items():
                writer.add_scalar(f"train/{k}", v.item(), global_step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
            if image_every and global_step % image_every == 0:
                writer.add_image("train/thermal_rgb_gt_pred_edges", tb_image(_picture(batch, out)), global_step)
    count = torch.tensor(float(max(n_batches, 1)), device=device)
    means = {}
    for k, v in sums.items():  # averaged over every process's batches
        means[k] = (all_reduce_sum(v.clone()) / all_reduce_sum(count.clone())).item()
    return means, global_step, n_images / max(time.perf_counter() - t0, 1e-9)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device: torch.device, in_channels: int, n_class: int, *,
             amp: str = "none", channels_last: bool = False, show: bool = True,
             desc: str = "eval") -> tuple[ConfusionMatrix, float]:
    """Confusion matrix (accumulated on the device, summed over processes) and mean CE on ground truth."""
    model.eval()
    cm = ConfusionMatrix(n_class, device)
    loss_sum = torch.zeros((), device=device)
    pixels = torch.zeros((), device=device)
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True):
        batch = to_device(batch, device, in_channels, channels_last)
        with autocast(device, amp):
            logits = model(batch["inputs"]).logits
        label = batch["label"]
        loss_sum += F.cross_entropy(logits.float(), label, reduction="sum")
        pixels += label.numel()
        cm.update(logits.argmax(1), label)
    cm.reduce_from_all_processes()
    all_reduce_sum(loss_sum)
    all_reduce_sum(pixels)
    return cm, (loss_sum / pixels.clamp(min=1)).item()
