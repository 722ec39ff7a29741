"""The pieces of a training run besides the data: seeds, the network on its device (channels-last,
SyncBatchNorm, DistributedDataParallel), and the release's optimiser and schedule."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from .distributed import Session

COMPILE_BACKEND = "inductor"  # --compile's; the CPU test uses dynamo's "eager" (same tracing, no kernels built)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_model(model: nn.Module, cfg, session: Session) -> nn.Module:
    """`model` on the run's device, in channels-last memory when asked, wrapped for DDP under torchrun."""
    model = model.to(session.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if session.info.enabled:
        if cfg.sync_bn and session.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn:
            session.log("note: --sync-bn needs CUDA (torch's SyncBatchNorm is GPU-only); ignored on the CPU")
        ids = [session.device.index] if session.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:  # after DDP, as torch recommends; checkpoints hold the bare network (checkpoint.unwrap)
        model = torch.compile(model, backend=COMPILE_BACKEND)
    return model


def make_optimizer(model: nn.Module, cfg, extra_params=()) -> tuple[torch.optim.Optimizer,
                                                                    torch.optim.lr_scheduler.LRScheduler,
                                                                    torch.amp.GradScaler | None]:
    """SGD with momentum and weight decay (--fused-sgd: one fused kernel), ExponentialLR per epoch, and a
    gradient scaler for fp16."""
    params = list(model.parameters()) + list(extra_params)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                **({"fused": True} if cfg.fused_sgd else {}))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    return optimizer, scheduler, scaler
