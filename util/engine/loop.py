"""The training step, one training epoch and the one evaluation loop (trainers and demos).

A *task* says what the network sees and what it learns from: any object with
`loss(model, batch) -> (loss terms with "total", network output)`. The trainers define theirs
(trainTeacher.py: CE + edge BCE; trainStudent.py: the four CEKD distillation terms).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.losses import check_finite, has_valid_pixel

from .checkpoint import unwrap
from .distributed import all_agree, all_reduce_sum
from .metrics import ConfusionMatrix
from .tta import TTA

EMPTY_BATCHES = "batches_without_labels"  # the epoch's count of batches whose every pixel is ignored


class Task(Protocol):
    ignore_index: Optional[int]  # the dataset's ignored label id, left out of the losses (None: none)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[dict, Any]:
        """(loss terms with "total", network output) for a batch prepared by `to_device`."""


def model_inputs(image: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The channels a network reads from a 4-channel RGB-T batch: all four, or thermal only."""
    return image if in_channels == 4 else image[:, 3:]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for --amp bf16/fp16, a no-op for --amp none."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(batch: Mapping[str, Any], device: torch.device, in_channels: int,
              channels_last: bool = False) -> dict:
    """Move a loader batch to `device`; add `inputs` (what the network reads) and `image_full`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    out["image_full"] = full = out["image"].contiguous(memory_format=fmt)
    out["inputs"] = full if in_channels == 4 else model_inputs(out["image"], in_channels).contiguous(memory_format=fmt)
    return out


def train_step(model: nn.Module, task: Task, batch: Mapping[str, Any], optimizer: torch.optim.Optimizer,
               device: torch.device, amp: str = "none", scaler: Optional[torch.amp.GradScaler] = None,
               where: str = "", check: bool = True) -> tuple[dict, Any]:
    """Forward, loss, backward and one optimiser step.

    The loss is checked for NaN/inf before any update, and every process agrees on the
    verdict first, so that all of them stop together (FloatingPointError) rather than
    some waiting forever in the gradient all-reduce. `check=False` leaves the check to the
    caller (DeferredCheck: the host then does not wait for the device at every step).
    """
    with autocast(device, amp):
        losses, out = task.loss(model, batch)
    if check:
        check_finite(losses, where, agree=lambda ok: all_agree(ok, device))
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses["total"].backward()
        optimizer.step()
    return losses, out


class DeferredCheck:
    """The finite-loss check of `every` steps at once (--sync-every): non-finite terms are counted on the
    device and read every `every` steps and at the end of the epoch, before any checkpoint. A step past
    a NaN has already updated the weights, so the run stops there with its last checkpoint intact (which
    end_epoch's finite-weights check guards too); the error names the steps the NaN came from."""

    def __init__(self, every: int, device: torch.device):
        self.every, self.device = every, device
        self.bad: dict[str, torch.Tensor] = {}
        self.first_step: Optional[int] = None

    def add(self, losses: Mapping[str, torch.Tensor], step: int) -> None:
        if self.first_step is None:
            self.first_step = step
        for k, v in losses.items():
            nonfinite = (~torch.isfinite(v.detach())).sum()
            self.bad[k] = self.bad[k] + nonfinite if k in self.bad else nonfinite

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def check(self, last_step: int, epoch: int) -> None:
        if self.first_step is None:
            return
        counts = {k: int(v.item()) for k, v in self.bad.items()}
        bad = [k for k, n in counts.items() if n]
        where = (f"epoch {epoch} step {self.first_step}" if last_step == self.first_step
                 else f"epoch {epoch}, one of steps {self.first_step}..{last_step} (--sync-every {self.every})")
        check_finite({k: float("nan") for k in bad}, where, agree=lambda ok: all_agree(ok, self.device))
        self.bad, self.first_step = {}, None


class StepLog(Protocol):
    """Where train_one_epoch reports: a global step counter and per-step logging."""
    step: int

    def after_step(self, losses: Mapping[str, torch.Tensor], lr: float, batch: Mapping[str, Any], out: Any) -> None:
        ...


def train_one_epoch(model: nn.Module, task: Task, loader, optimizer: torch.optim.Optimizer,
                    scaler: Optional[torch.amp.GradScaler], device: torch.device, cfg, epoch: int,
                    log: StepLog) -> tuple[dict[str, float], float]:
    """One pass over `loader` (at most cfg.max_steps_per_epoch steps); return the mean of each
    loss term over every process's batches, and images per second.

    With a task that ignores a label (`task.ignore_index`), the means also hold EMPTY_BATCHES: how
    many batches (all processes) had no pixel of another class, so no label loss and no gradient
    from the labels."""
    model.train()
    in_channels = unwrap(model).in_channels
    ignore_index = task.ignore_index
    sums: dict[str, torch.Tensor] = {}
    n_batches, n_images, n_empty, t0 = 0, 0, 0, time.perf_counter()
    show = cfg.progress and log is not None and getattr(log, "is_main", True)
    deferred = DeferredCheck(cfg.sync_every, device) if cfg.sync_every > 1 else None
    bar = tqdm(loader, desc=f"epoch {epoch} train", disable=not show, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        if cfg.max_steps_per_epoch and i >= cfg.max_steps_per_epoch:
            break
        batch = to_device(batch, device, in_channels, cfg.channels_last)
        n_empty += not has_valid_pixel(batch["label"], ignore_index)
        step = log.step
        losses, out = train_step(model, task, batch, optimizer, device, cfg.amp, scaler,
                                 where=f"epoch {epoch} step {step}", check=deferred is None)
        if deferred is not None:
            deferred.add(losses, step)
            if deferred.due(step):
                deferred.check(step, epoch)
        log.step += 1
        n_batches += 1
        n_images += batch["image"].shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        if show and (deferred is None or deferred.due(step)):
            bar.set_postfix(loss=f"{losses['total'].item():.4f}", img_s=f"{n_images / (time.perf_counter() - t0):.1f}")
        log.after_step(losses, optimizer.param_groups[0]["lr"], batch, out)
    if deferred is not None:
        deferred.check(log.step - 1, epoch)
    count = torch.tensor(float(max(n_batches, 1)), device=device)
    means = {k: (all_reduce_sum(v.clone()) / all_reduce_sum(count.clone())).item() for k, v in sums.items()}
    if ignore_index is not None:
        means[EMPTY_BATCHES] = int(all_reduce_sum(torch.tensor(float(n_empty), device=device)).item())
    return means, n_images / max(time.perf_counter() - t0, 1e-9)


class Evaluation(NamedTuple):
    confusion: ConfusionMatrix  # summed over every process
    loss: float                 # mean CE against ground truth over every pixel
    seconds: list[float]        # forward time of each batch (only when timed)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device: torch.device, n_class: int, *, amp: str = "none",
             channels_last: bool = False, show: bool = True, desc: str = "eval", timed: bool = False,
             ignore_index: Optional[int] = None,
             on_batch: Optional[Callable[[int, Mapping[str, Any], torch.Tensor], None]] = None,
             tta: Optional[TTA] = None) -> Evaluation:
    """The evaluation loop of the trainers (val, test splits) and the demos.

    Metrics are taken at the labels' resolution: logits of another size are resized to it
    (bilinear) before the argmax. Pixels of `ignore_index` are not scored. The confusion
    matrix is accumulated on the device. `timed` measures each forward pass (synchronising
    CUDA); `on_batch(index, batch, prediction)` sees every batch, e.g. to save pictures.
    `tta` (tta.py) scores the mean probabilities of several views instead (timed together).
    """
    model.eval()
    in_channels = unwrap(model).in_channels
    cm = ConfusionMatrix(n_class, device, ignore_index)
    loss_sum = torch.zeros((), device=device)
    pixels = torch.zeros((), device=device)
    seconds = []
    for i, batch in enumerate(tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True)):
        batch = to_device(batch, device, in_channels, channels_last)
        if timed:
            _sync(device)
            t0 = time.perf_counter()
        label = batch["label"]
        if tta is None:
            logits = _logits(model, batch["inputs"], device, amp)
        else:
            logits = tta.log_probs(lambda x: _logits(model, x, device, amp), batch["inputs"], label.shape[-2:])
        if timed:
            _sync(device)
            seconds.append(time.perf_counter() - t0)
        if logits.shape[-2:] != label.shape[-2:]:
            logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        if ignore_index is None:
            loss_sum += F.cross_entropy(logits.float(), label, reduction="sum")
            pixels += label.numel()
        else:
            loss_sum += F.cross_entropy(logits.float(), label, reduction="sum", ignore_index=ignore_index)
            pixels += (label != ignore_index).sum()
        pred = logits.argmax(1)
        cm.update(pred, label)
        if on_batch is not None:
            on_batch(i, batch, pred)
    cm.reduce_from_all_processes()
    all_reduce_sum(loss_sum)
    all_reduce_sum(pixels)
    return Evaluation(cm, (loss_sum / pixels.clamp(min=1)).item(), seconds)


def _logits(model: nn.Module, x: torch.Tensor, device: torch.device, amp: str) -> torch.Tensor:
    with autocast(device, amp):
        return model(x).logits


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
